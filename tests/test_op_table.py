"""benchmarks/op_table.py: every op of LeNet-5's step placed in a bucket, the table of both sides."""

import json
import os
import subprocess
import sys

import pytest
import xla_flags  # tests/xla_flags.py

from benchmarks import op_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ops_are_placed_by_their_name_scope_and_shapes():
  # Name scopes as XLA keeps them in the compiled step's metadata.
  assert op_table.jax_bucket('jit(run)/jvp(LeNet5)/conv1/while/body/closed_call/dot_general') \
      == 'conv1 forward'
  assert op_table.jax_bucket('jit(run)/transpose(jvp(LeNet5))/conv2/while/body/concatenate') \
      == 'conv2 backward'
  assert op_table.jax_bucket('jit(run)/jvp(LeNet5)/LeNet5.dense/fc1/dot_general') \
      == 'dense layers (fc1, fc2, head)'
  assert op_table.jax_bucket('jit(run)/jvp(LeNet5)/jit(relu)/max') == 'ReLU + pool forward'
  assert op_table.jax_bucket('jit(run)/transpose(jvp())/log_softmax') == 'loss'
  assert op_table.jax_bucket('jit(run)/vmap()/div') == 'augmentation + random numbers'
  assert op_table.jax_bucket('jit(run)/add') == 'optimizer + other'
  # PyTorch: NCHW input shapes tell the two convolutions apart.
  assert op_table.torch_bucket('aten::mkldnn_convolution', [[64, 3, 32, 32]]) == 'conv1 forward'
  assert op_table.torch_bucket('aten::mkldnn_convolution', [[64, 64, 14, 14]]) == 'conv2 forward'
  assert op_table.torch_bucket('aten::convolution_backward', [[64, 64, 28, 28]]) \
      == 'conv1 backward'
  assert op_table.torch_bucket('aten::convolution_backward', [[64, 64, 10, 10]]) \
      == 'conv2 backward'
  assert op_table.torch_bucket('aten::fill_', [[64, 64, 28, 28]]) == 'ReLU + pool backward'
  assert op_table.torch_bucket('aten::_fused_sgd_', [[]]) == 'optimizer + other'


def test_hlo_ops_reads_names_opcodes_and_scopes():
  text = ('  %ynn_fusion.4 = f32[1600,64]{1,0} fusion(%a, %b), kind=kCustom, '
          'metadata={op_name="jit(run)/transpose(jvp(LeNet5))/conv2/dot_general" x=1}\n'
          '  %while.3 = (s32[], f32[2]{0}) while(%t), condition=%c, body=%b\n')
  assert op_table.hlo_ops(text) == {
      'ynn_fusion.4': ('fusion', 'jit(run)/transpose(jvp(LeNet5))/conv2/dot_general'),
      'while.3': ('while', '')}


def test_the_jax_side_traces_every_bucket_of_a_real_step(tmp_path):
  out = tmp_path / 'ops.json'
  r = subprocess.run([sys.executable, '-m', 'benchmarks.op_table', '--batch=4', '--steps=2',
                      '--warmup=1', f'--json={out}'], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=xla_flags.for_command()),
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  record = json.loads(out.read_text())
  ours = record['jaxlab']
  assert record['pytorch'] is None and '| conv2 backward |' in record['table']
  for bucket in ('conv1 forward', 'conv1 backward', 'conv2 forward', 'conv2 backward',
                 'ReLU + pool forward', 'dense layers (fc1, fc2, head)'):
    assert ours['ms'][bucket] > 0, bucket
    assert ours['top_ops'][bucket], bucket
  # The ops found account for the step: neither a fraction of it nor counted twice (a loop's
  # own event spans its body's ops, which are counted instead).
  assert 0.5 * ours['wall_ms'] < sum(ours['ms'].values()) < 2.0 * ours['wall_ms']


def test_the_pytorch_side_places_the_layers_ops():
  pytest.importorskip('torch')
  theirs = op_table.time_torch(batch=4, steps=1, warmup=1)
  for bucket in ('conv1 forward', 'conv1 backward', 'conv2 forward', 'conv2 backward',
                 'ReLU + pool forward', 'ReLU + pool backward', 'dense layers (fc1, fc2, head)'):
    assert theirs['ms'][bucket] > 0, bucket
  assert 0.5 * theirs['wall_ms'] < sum(theirs['ms'].values()) < 2.0 * theirs['wall_ms']
