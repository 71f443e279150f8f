"""The speed suite's own arithmetic: FLOPs of the patch-convolution step, the local-SGD average
spread over its round, and the freeze-state ratios."""

import os

import pytest

from benchmarks import run

# LeNet-5 on 32×32×3: forward multiply-adds ×2 per layer, by hand.
CONV1 = 28 * 28 * 64 * (5 * 5 * 3) * 2
CONV2 = 10 * 10 * 64 * (5 * 5 * 64) * 2
DENSE = (1600 * 384 + 384 * 192 + 192 * 100) * 2
# Training: forward, weight gradients (as many again) and input gradients for all but conv1.
LENET_TRAIN_FLOPS = 3 * (CONV1 + CONV2 + DENSE) - CONV1


def test_local_sgd_workload_counts_flops_and_spreads_the_average():
  r = run.time_workload('local/j8', small=True, steps=2, warmup=1)
  assert r['copies'] == 8 and r['num_devices'] == 8  # one worker per simulated device
  assert r['sync_every'] == 8
  assert r['average_per_step_s'] == pytest.approx(r['average_s'] / 8)
  assert r['step_time_s'] == pytest.approx(r['step_time_median_s'] + r['average_per_step_s'])
  assert r['img_s'] == pytest.approx(16 * 8 / r['step_time_s'])
  # Counted on the library-convolution twin: the patch loop alone would count one chunk.
  assert r['gflop_per_image'] * 1e9 == pytest.approx(LENET_TRAIN_FLOPS, rel=0.03)


def test_freeze_report_divides_held_by_live_step_times():
  row = lambda name, t: {'workload': f'peft/{name}', 'step_time_s': t, 'batch': 8}
  rows = [row('hybrid_parallel', 2.0), row('hybrid_parallel@lora', 1.0),
          row('hybrid_parallel@norm', 1.5), row('norm', 0.5),
          {'workload': 'peft/lora', 'error': 'boom'}]
  table = run.freeze_report(rows)
  assert '| hybrid_parallel | 2.0000 (8) | 0.73 | 0.500 | 0.750 | 0.625 |' in table
  assert '| norm | 0.5000 (8) | 0.50 | – | – | – |' in table
  assert '| lora |' not in table  # errors are left out


def test_largest_batch_doubles_until_out_of_memory_and_reports_other_errors():
  tried = []

  def fake(limit, error='RESOURCE_EXHAUSTED: Out of memory while trying to allocate'):
    def run_(batch):
      tried.append(batch)
      return {'batch': batch} if batch <= limit else {'error': error}
    return run_

  assert run.largest_batch(128, fake(1000))['batch'] == 512
  assert tried == [256, 512, 1024]
  assert run.largest_batch(128, fake(10**6), cap=2048)['batch'] == 2048  # stops at the cap
  assert 'did not fit' in run.largest_batch(128, fake(100))['error']
  broken = run.largest_batch(128, fake(300, error='exit status 1: ValueError: bad config'))
  assert broken['batch_tried'] == 512 and 'ValueError' in broken['error']  # not read as a limit


def test_torch_refs_vit_tiny_and_torch_compile_mode():
  torch = pytest.importorskip('torch')
  from benchmarks import torch_refs
  eager = torch_refs.time_vit_tiny(batch=4, steps=1, warmup=1, small=True, num_threads=1)
  assert eager['workload'] == 'vit_tiny' and eager['pos'] == 'learned'
  assert eager['torch_compile'] is False and eager['compile_s'] is None
  assert eager['trainable_params'] == eager['total_params']  # from scratch: all of it trains

  # A failing torch.compile gives an error record, never an eager run.
  def broken(model, **kw):
    def call(*a, **k):
      raise RuntimeError('boom\nsecond line')
    return call
  real = torch.compile
  torch.compile = broken
  try:
    r = torch_refs.time_lenet5(batch=2, steps=1, warmup=1, compile=True, num_threads=1)
  finally:
    torch.compile = real
  assert r['error'] == 'torch.compile failed: RuntimeError: boom' and r['torch_compile'] is True

  # The ladder's compile-mode probes give the hooks' scaled gradients.
  x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
  grads = []
  for probes in (False, True):
    torch.manual_seed(0)
    m = torch_refs._resmlp(torch, 3072, 10, 16, 3, (1, 2))
    if probes:
      m.use_probes(4, torch.float32, 'cpu')
    torch.nn.functional.cross_entropy(m(x), y).backward()
    m.scale_block_grads()
    grads.append([p.grad for p in m.parameters()])
  for a, b in zip(*grads):
    assert (a is None) == (b is None) and (a is None or torch.allclose(a, b))

  r = torch_refs.time_vit_tiny(batch=4, steps=2, warmup=1, small=True, compile=True)
  if 'error' in r:  # no working compiler toolchain here: say so rather than pass
    assert r['error'].startswith('torch.compile failed: ')
    pytest.skip(r['error'])
  assert r['torch_compile'] is True and r['compile_s'] > 0 and r['warmup_steps'] >= 2
  assert r['compiles_in_timed_steps'] == 0 and r['compiled_graphs'] >= 1


@pytest.mark.parametrize('kind, dtype, peak', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12),  # SXM
    ('NVIDIA H100 80GB HBM3', 'float32', 494.7e12),  # TF32: JAX's default float32 product
    ('NVIDIA H100 PCIe', 'bfloat16', 756e12),
    ('NVIDIA H200', 'float32', 494.7e12),
    ('NVIDIA L40S', 'bfloat16', 362e12),
    ('NVIDIA L40', 'bfloat16', 181e12),  # not an L4, not an L40S
    ('NVIDIA L4', 'bfloat16', 121e12),
    ('NVIDIA A100-SXM4-80GB', 'float32', 156e12),
    ('NVIDIA A10G', 'bfloat16', None),  # not an A10: unknown
    ('Tesla V100-SXM2-16GB', 'bfloat16', None),  # no bfloat16 tensor cores
    ('TPU v5 lite', 'bfloat16', 197e12),
    ('cpu', 'float32', None),
])
def test_peak_matches_the_device_name_and_the_rows_dtype(kind, dtype, peak):
  assert run.peak_flops(kind, dtype) == peak


def test_the_parent_never_opens_the_accelerator_and_children_set_their_memory(monkeypatch):
  """The suite's parent learns the backend from a child (without preallocation) and opens
  none itself; every child gets an explicit memory fraction, a caller's own kept."""
  import subprocess
  import sys
  code = ('from benchmarks.workloads import sizes_of; import jax._src.xla_bridge as xb; '
          'print(sizes_of(False), len(xb._backends))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=run.__file__.rsplit('/benchmarks/', 1)[0])
  assert out.stdout.split() == ['cpu', '0'], out.stdout + out.stderr
  monkeypatch.delenv('XLA_PYTHON_CLIENT_MEM_FRACTION', raising=False)
  assert run.child_env()['XLA_PYTHON_CLIENT_MEM_FRACTION'] == run.CHILD_MEM_FRACTION
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.5')
  assert run.child_env()['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.5'


def test_recount_flops_fills_a_gpu_rows_columns_from_the_step_lowered_here(tmp_path):
  """A GPU row whose FLOPs were not counted there (jax 0.11.2's lowered GPU programs gave
  none): LeNet-5 at the GPU's batch of 8192, lowered on this CPU, gives the hand count, and the
  fraction of peak uses the row's own device and dtype (an H200's TF32 peak for float32)."""
  import json
  path = tmp_path / 'suite.json'
  row = {'workload': 'lenet/8192', 'held': [], 'batch': 8192, 'copies': 1, 'step_time_s': 0.01,
         'dtype': 'float32', 'device_kind': 'NVIDIA H200', 'flops_per_step': None}
  path.write_text(json.dumps({'sizes': 'gpu', 'small': False,
                              'rows': [row, {'workload': 'ladder', 'error': 'timed out'}]}))
  out = run.recount_flops(str(path))
  r = out['rows'][0]
  assert r['gflop_per_image'] * 1e9 == pytest.approx(LENET_TRAIN_FLOPS, rel=0.03)
  assert r['flops_per_step'] == pytest.approx(r['gflop_per_image'] * 1e9 * 8192)
  assert r['fraction_of_peak'] == pytest.approx(r['flops_per_step'] / 0.01 / 494.7e12)
  assert out['rows'][1] == {'workload': 'ladder', 'error': 'timed out'}
  assert json.loads(path.read_text()) == out
  assert 'JAXLAB_BENCH_SIZES' not in os.environ


def test_bench_sizes_override_names_the_choices(monkeypatch):
  from benchmarks.workloads import sizes_of
  monkeypatch.setenv('JAXLAB_BENCH_SIZES', 'gpu')
  assert sizes_of(True) == 'gpu'
  monkeypatch.setenv('JAXLAB_BENCH_SIZES', 'tpu')
  with pytest.raises(ValueError, match='choose one of gpu, cpu, small'):
    sizes_of(False)


# What a Python with torch and the standard library (and numpy) has not: the race's PyTorch
# children import these benchmark modules there.
JAX_STACK = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'chex', 'ml_collections', 'absl',
             'tensorflow', 'tensorflow_datasets')


def test_the_pytorch_side_imports_without_the_jax_stack():
  # Blocks the jax stack's imports in a child, then imports every module the PyTorch children
  # load (`-m benchmarks.run`, `-m benchmarks.op_table`, `-m benchmarks.seed_axis`): a top-level
  # import of jaxlab's config layer once made every PyTorch column '–' ("No module named
  # 'ml_collections'" in the row's error), with no test failing.
  import subprocess
  import sys
  import textwrap
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = textwrap.dedent(f"""
      import importlib.abc, sys
      class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
          if name.split('.')[0] in {JAX_STACK!r}:
            raise ImportError('blocked: ' + name)
      sys.meta_path.insert(0, Block())
      import benchmarks.run, benchmarks.op_table, benchmarks.seed_axis, benchmarks.torch_refs
      benchmarks.torch_refs.available()
      print('imported')
  """)
  proc = subprocess.run([sys.executable, '-c', script], cwd=root, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip() == 'imported', proc.stderr[-2000:]


def test_a_pytorch_child_leaves_malloc_alone_under_jaxlab_malloc_keep(monkeypatch, capsys):
  # JAXLAB_MALLOC is jaxlab's setting: the race's PyTorch side runs with malloc as PyTorch's
  # users have it, and its record says so.
  import json

  from jaxlab import host

  def refuse():
    raise AssertionError('a PyTorch child set malloc')
  monkeypatch.setenv('JAXLAB_MALLOC', 'keep')
  monkeypatch.setattr(host, 'keep_freed_memory', refuse)
  run.main(['--torch_workload', 'lenet/64', '--batch', '8', '--steps', '1', '--warmup', '0'])
  line = [l for l in capsys.readouterr().out.splitlines() if l.startswith(run.RESULT_PREFIX)]
  assert json.loads(line[0][len(run.RESULT_PREFIX):])['malloc'] == 'system'


def test_three_seeds_count_three_times_one_seeds_flops():
  # The seeds train in a loop (Task.seed_loop 'map'), whose lowered count sees one trip: the
  # 3-seed rows once reported a third of their FLOPs (0.027 GFLOP an image for LeNet-5 against
  # its 0.081). Counted vmapped, LeNet-5's 3 seeds at batch 64 are 3 × the hand count.
  one = run.step_flops('seeds/lenet/1', small=False, held=frozenset())
  three = run.step_flops('seeds/lenet/3', small=False, held=frozenset())
  assert one == pytest.approx(64 * LENET_TRAIN_FLOPS, rel=0.03)
  assert three == pytest.approx(3 * one, rel=1e-3)
