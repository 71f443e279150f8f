"""What only an NVIDIA GPU can show, run where there is one:

  JAXLAB_TEST_PLATFORM=gpu python -m pytest -q tests/test_gpu.py tests/test_fast_path.py \
      tests/test_attention.py

(tests/conftest.py then starts JAX on CUDA). cuDNN's fused attention actually runs, through the
ViT's own `attend`, and is as close to float32 attention as XLA's bfloat16 attention is, forward
and backward; a bfloat16 ViT trains through the launcher with it and summary.json says so; the
device reports its memory, which the data budget and the peak-memory records read. On a machine
without a GPU (CI) every test here is skipped."""

import glob
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xla_flags
from jaxlab.models.vit import attend, device_platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    jax.default_backend() != 'gpu' or device_platform() != 'cuda',
    reason='needs an NVIDIA GPU: JAXLAB_TEST_PLATFORM=gpu on a machine with one')

# [batch, tokens, heads, head_dim]: an odd sequence padded for cuDNN (17: a 32 px image in 8 px
# patches + the class token), the ViT-Ti/4 of the residual-stream family (65), and ViT-S/16's
# shapes (197 tokens, 6 heads of 64).
SHAPES = [(4, 17, 2, 64), (8, 65, 3, 64), (8, 197, 6, 64)]


def _qkv(shape, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))


def _loss(implementation, dtype, weights):
  """A scalar of the attention's output that weighs every element differently."""
  def loss(q, k, v):
    out = attend(q.astype(dtype), k.astype(dtype), v.astype(dtype), implementation)
    return jnp.sum(out.astype(jnp.float32) * weights)
  return loss


def _max_err(a, b):
  return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: f'tokens{s[1]}')
def test_cudnn_attention_runs_fused_and_is_as_close_to_float32_as_xlas(shape):
  q, k, v = _qkv(shape)
  weights = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
  bf16 = jnp.bfloat16
  value_and_grad = lambda impl, dtype: jax.jit(
      jax.value_and_grad(_loss(impl, dtype, weights), argnums=(0, 1, 2)))
  fused = value_and_grad('cudnn', bf16)
  text = fused.lower(q, k, v).as_text()
  assert '__cudnn$fmhaSoftmax' in text and '__cudnn$fmhaSoftmaxBackward' in text
  out = {impl: jax.jit(lambda q, k, v, impl=impl: attend(q.astype(bf16), k.astype(bf16),
                                                         v.astype(bf16), impl))(q, k, v)
         for impl in ('cudnn', 'xla')}
  exact = attend(q, k, v, 'xla')  # float32
  grads = {impl: value_and_grad(impl, bf16)(q, k, v)[1] for impl in ('cudnn', 'xla')}
  exact_grads = value_and_grad('xla', jnp.float32)(q, k, v)[1]
  # bfloat16 keeps 8 bits: both bf16 attentions are off float32 by rounding; cuDNN's may not be
  # more than twice as far as XLA's (nor than 0.02 on outputs of order 1).
  err = {impl: _max_err(out[impl], exact) for impl in out}
  assert err['cudnn'] <= max(2 * err['xla'], 0.02), err
  gerr = {impl: _max_err(grads[impl], exact_grads) for impl in grads}
  scale = max(float(jnp.max(jnp.abs(g))) for g in exact_grads)
  assert gerr['cudnn'] <= max(2 * gerr['xla'], 0.02 * scale), (gerr, scale)


def test_float32_products_are_tf32_by_default():
  """The speed suite divides float32 rows by the device's TF32 peak (benchmarks/run.py,
  PEAK_FLOPS): JAX's default float32 matrix product on an NVIDIA GPU from Ampere on rounds its
  inputs to TF32 (10 bits of mantissa), so it is off the full float32 product by about 1e-3 of
  the result's scale, not 1e-7."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((512, 512)), jnp.float32) for _ in range(2))
  default = jax.jit(lambda a, b: a @ b)(a, b)
  full = jax.jit(lambda a, b: jnp.matmul(a, b, precision='highest'))(a, b)
  rel = float(jnp.max(jnp.abs(default - full)) / jnp.max(jnp.abs(full)))
  assert 1e-5 < rel < 1e-2, rel


def test_the_device_reports_its_memory():
  """The data budget (data/stream.py) and the peak-memory records read the GPU's own numbers,
  never the host's RAM or a fallback."""
  from jaxlab.data.stream import device_memory_bytes
  from jaxlab.metrics.system import peak_memory
  stats = jax.devices()[0].memory_stats()
  assert stats and stats.get('bytes_limit', 0) > 2**30
  assert device_memory_bytes() == int(stats['bytes_limit'])
  jnp.ones((1024, 1024)).block_until_ready()
  peak, source = peak_memory()
  assert source == 'device_memory_stats' and peak >= 4 * 2**20


def test_a_bf16_vit_trains_through_the_launcher_with_cudnn_attention(tmp_path):
  """The residual-stream family's quick ViT (heads of 8) in bfloat16 with model.attention=cudnn,
  three epochs of the plain arm: it trains (a finite loss, test accuracy above chance) and
  summary.json records the attention it ran with."""
  env = dict(os.environ, XLA_FLAGS=xla_flags.for_command(), JAX_PLATFORMS='cuda,cpu',
             XLA_PYTHON_CLIENT_MEM_FRACTION='0.3')
  cmd = [sys.executable, 'launch.py', '--config=configs/mhc.py:regular,quick',
         f'--workdir={tmp_path}', '--config.model.dtype=bfloat16',
         '--config.model.attention=cudnn', '--config.train.epochs=3']
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summaries = [json.load(open(p)) for p in glob.glob(f'{tmp_path}/**/summary.json', recursive=True)]
  runs = [s for s in summaries if 'attention' in s]
  assert runs, summaries
  for s in runs:
    assert s['attention'] == 'cudnn' and s['status'] == 'finished'
    assert math.isfinite(s['nll']) and s['acc1'] > 0.15, s  # 10 classes: chance is 0.1
