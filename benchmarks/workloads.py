"""The speed suite's workloads and what its harnesses share: each workload's (config, task,
source image shape, held groups), the batch indices a timed step draws, random data sets and
the results' file names. benchmarks/run.py, loop.py, ladder_time.py and placement.py import it.
"""

import datetime
import os
import re
import subprocess
import sys

import numpy as np

PEFT_CELLS = ('norm', 'lora', 'hybrid_parallel', 'hybrid_parallel@lora', 'hybrid_parallel@norm',
              'hybrid_layerwise/deep_lora', 'hybrid_layerwise/deep_lora@lora',
              'hybrid_layerwise/deep_lora@norm')
PEFT_METHODS = tuple(c for c in PEFT_CELLS if '@' not in c)
RESIDUALS = ('plain', 'mhc_static', 'mhc_dynamic', 'race')
LOCAL_ARMS = ('sync', 'j1', 'j8', 'j32')
LADDER_VARIANTS = ('d256_L4', 'd512_L2')
# Seeds trained together: LeNet-5 at batch 64 and the ladder cell, with 1 and with 3 seeds
# vmapped in one step (the seeds' cost: 3 seeds' step time over 1 seed's).
SEEDS_WORKLOADS = tuple(f'seeds/{w}/{n}' for w in ('lenet', 'ladder') for n in (1, 3))
WORKLOADS = (tuple(f'peft/{c}' for c in PEFT_CELLS) + ('ladder',)
             + tuple(f'vit_tiny/{r}' for r in RESIDUALS)
             + ('lenet/64', 'lenet/1024', 'lenet/8192')
             + tuple(f'local/{arm}' for arm in LOCAL_ARMS) + SEEDS_WORKLOADS
             + tuple(f'loop/{w}' for w in ('ladder',) + tuple(f'peft/{m}' for m in PEFT_METHODS))
             + tuple(f'ladder_time/{v}' for v in LADDER_VARIANTS))


def default_workloads(sizes):
  """The suite's rows at `sizes` ('gpu', 'cpu': real models, small batches, or 'small')."""
  peft = PEFT_CELLS if sizes == 'gpu' else PEFT_METHODS if sizes == 'cpu' else PEFT_CELLS
  lenet = ('lenet/64', 'lenet/8192') if sizes == 'gpu' else ('lenet/64', 'lenet/1024')
  loops = () if sizes == 'gpu' else tuple(w for w in WORKLOADS if w.startswith('loop/'))
  return (tuple(f'peft/{c}' for c in peft) + ('ladder',)
          + tuple(f'vit_tiny/{r}' for r in RESIDUALS) + lenet
          + tuple(f'local/{arm}' for arm in LOCAL_ARMS) + SEEDS_WORKLOADS + loops
          + tuple(f'ladder_time/{v}' for v in LADDER_VARIANTS))


SIZES = ('gpu', 'cpu', 'small')


def sizes_of(small):
  """'small' (--small), else 'cpu' or 'gpu' by the default backend: a CPU runs the real models
  at small batches (PEFT 8, ViT-Ti/4 64 in fp32). JAXLAB_BENCH_SIZES names them instead (a CPU
  counting the FLOPs of a GPU's rows: python -m benchmarks --recount_flops)."""
  forced = os.environ.get('JAXLAB_BENCH_SIZES', '')
  if forced:
    if forced not in SIZES:
      raise ValueError(f'JAXLAB_BENCH_SIZES={forced!r}: choose one of {", ".join(SIZES)}')
    return forced
  if small:
    return 'small'
  return 'cpu' if default_backend() == 'cpu' else 'gpu'


def default_backend():
  """JAX's default backend, asked of a child process without preallocation, so that the
  calling process (the suite's parent) never opens the accelerator and holds none of its
  memory while the workloads run."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
  proc = subprocess.run([sys.executable, '-c', 'import jax; print(jax.default_backend())'],
                        env=env, capture_output=True, text=True, timeout=600, check=False)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode or not lines:
    raise RuntimeError(f'could not ask JAX for its backend: {proc.stderr.strip()[-500:]}')
  return lines[-1].strip()


LOCAL_WORKERS = 4


# ----------------------------------------------------------------------------- workloads


def _peft(spec, small):
  from configs.hybrid import get_config
  from jaxlab.experiments.peft import apply_recipe, make_task
  method, _, held = spec.partition('@')
  c = get_config('quick' if small else None)
  name, _, policy = method.partition('/')
  with c.unlocked():
    c.pretrained.source = 'none'
    c.sweep.runs = ()
    c.peft.update(dict(method=name, diagnostics=False))
    if policy:
      c.peft.policy = policy
    c.train.batch_size = 8 if small or sizes_of(small) == 'cpu' else 128
    c.augment.rrc_scale = (0.0, 0.0)  # quick's random zoom: not in the PyTorch reference
  apply_recipe(c)
  return c, make_task(c, 100), (32, 32, 3), frozenset([held] if held else [])


def _ladder(small, seeds=None):
  from configs.ladder import get_config
  from jaxlab.experiments.ladder import make_task
  c = get_config('quick' if small else None)
  if seeds is not None:
    c.seeds = seeds
  shape = (32, 32, 3)
  return c, make_task(c, 'bp', c.model.depth, tuple(c.seeds), shape, 10), shape, frozenset()


def _vit_tiny(residual, small):
  from configs.mhc import get_config
  from jaxlab.experiments.mhc import arm_config, model_and_params
  from jaxlab.train.task import Task, flax_apply
  arm = {'plain': 'regular', 'race': 'regular'}.get(residual, residual)
  c = arm_config(get_config('quick' if small else None), arm)
  with c.unlocked():
    if sizes_of(small) != 'gpu':
      c.train.batch_size = 64
      c.model.dtype = 'float32'
    if residual == 'race':  # as benchmarks/torch_refs.py:time_vit_tiny has it
      c.model.pos = 'learned'
      c.augment.update(randaugment_ops=0, erasing_p=0.0, rotation=0.0, perspective=0.0,
                       color_jitter=(0.0, 0.0, 0.0, 0.0), crop_padding=0, rrc_scale=(0.0, 0.0),
                       flip=not small)
  model, params = model_and_params(c, 10)
  return c, Task(params=params, apply=flax_apply(model), rules=(('.*', 'all'),)), (32, 32, 3), \
      frozenset()


def _lenet(batch, small, conv_impl, seeds=()):
  from configs.distributed import get_config
  from jaxlab.experiments.distributed import make_task
  c = get_config(None)
  with c.unlocked():
    c.seeds = seeds  # (): one model, the step users time
    c.train.batch_size = min(batch, 1024) if small else batch
    c.model.conv_impl = conv_impl
  return c, make_task(c, 100, (32, 32, 3)), (32, 32, 3), frozenset()


def _seeds(spec, small, conv_impl):
  """seeds/<lenet|ladder>/<n>: LeNet-5 at batch 64 or the ladder cell with n seeds trained
  together (n = 1: one model)."""
  base, _, n = spec.partition('/')
  seeds = tuple(range(int(n))) if int(n) > 1 else ()
  if base == 'lenet':
    return _lenet(64, small, conv_impl, seeds)
  return _ladder(small, seeds or (0,))  # the ladder always stacks its seeds


def _local(arm, small, conv_impl):
  import jax

  from configs.distributed import get_config
  from jaxlab.experiments.distributed import local_spec, make_task
  c = get_config(None)
  c.seeds = ()  # one model: the step users time
  per_worker = 16 if small else 64
  devices = jax.device_count()
  workers = -(-LOCAL_WORKERS // devices) * devices  # 4, or a multiple of a larger device count
  with c.unlocked():
    c.model.conv_impl = conv_impl
    if arm == 'sync':
      c.train.batch_size = per_worker * workers
    else:
      c.local.update(method='local_sgd', workers=workers, sync_every=int(arm[1:]))
      c.train.batch_size = per_worker
  task = make_task(c, 100, (32, 32, 3), local_spec(c, steps_per_epoch=100))
  return c, task, (32, 32, 3), frozenset()


def make_workload(name, small, conv_impl='auto'):
  """(config, task, source image shape, held groups) of a workload name; `conv_impl` for the
  LeNet-5 workloads (see jaxlab.models.conv)."""
  family, _, rest = name.partition('/')
  if family == 'peft':
    return _peft(rest, small)
  if name == 'ladder':
    return _ladder(small)
  if family == 'vit_tiny':
    return _vit_tiny(rest, small)
  if family == 'lenet':
    return _lenet(int(rest), small, conv_impl)
  if family == 'local' and name in WORKLOADS:
    return _local(rest, small, conv_impl)
  if family == 'seeds' and name in WORKLOADS:
    return _seeds(rest, small, conv_impl)
  raise ValueError(f'unknown workload {name!r}; choose from {", ".join(WORKLOADS)}')


def index_drawer(rng, pool, batch, setup, mesh):
  """A function drawing one step's random batch indices into a pool of `pool` examples, placed
  as the step reads them: [1, B] for one model, or [1, copies, B] for seeds (even one: the
  ladder's) and workers (seeds share the batch's sharding, workers are themselves sharded over
  the devices)."""
  import numpy as np

  from jaxlab.parallel.mesh import shard_leading
  stacked = setup.copies > 1 or setup.layout.name == 'replicas'  # one seed keeps its axis
  size = (1, setup.copies, batch) if stacked else (1, batch)
  return lambda: shard_leading(rng.integers(0, pool, size).astype(np.int32), mesh,
                               axis=setup.layout.batch_axis)


def placed_step(name, small, batch=0, seed=0, seeds=None):
  """A workload's step as the suite times it, as a namespace: config, task, held, mesh, setup,
  the placed state, data (a device pool of random uint8 images and labels), indices (a drawer of
  one step's random batch indices), the compiled chunk function and its compile seconds.
  `batch` > 0 replaces the workload's batch size (per worker for local SGD); `seeds` (a tuple)
  replaces the random seeds trained together (one, to time one model's step)."""
  import time
  import types

  from jaxlab.parallel.mesh import make_mesh, replicate
  from jaxlab.train.setup import build_setup
  config, task, shape, held = make_workload(name, small)
  with config.unlocked():
    if batch:
      config.train.batch_size = batch
    if seeds is not None:
      config.seeds = tuple(seeds)
  batch = config.train.batch_size
  mesh = make_mesh()
  setup = build_setup(config, task, mesh, total_steps=10_000, steps_per_epoch=100)
  state = setup.place(setup.state)
  rng = np.random.default_rng(seed)
  pool = max(4 * batch, 512)
  data = replicate({'image': rng.integers(0, 256, (pool, *shape), dtype=np.uint8),
                    'label': rng.integers(0, 10, (pool,), dtype=np.int32)}, mesh)
  indices = index_drawer(rng, pool, batch, setup, mesh)
  t0 = time.perf_counter()
  compiled = setup.chunk_fn(held).lower(state, data, indices()).compile()
  return types.SimpleNamespace(config=config, task=task, held=held, mesh=mesh, setup=setup,
                               state=state, data=data, indices=indices, compiled=compiled,
                               compile_s=time.perf_counter() - t0)


def random_dataset(shape, examples, classes, test=64, seed=0):
  """A Dataset of random uint8 images and labels: `examples` to train on, `test` to evaluate."""
  from jaxlab.data.datasets import Dataset
  from jaxlab.data.pipeline import Split
  rng = np.random.default_rng(seed)
  split = lambda n: Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                          rng.integers(0, classes, (n,), dtype=np.int32))
  return Dataset(name='random', train=split(examples), test=split(test), num_classes=classes,
                 eval_split='test')


def default_out(benchmark, device_kind, small):
  """benchmarks/results/<benchmark>_<device>_<date>[_small].json"""
  device = re.sub(r'[^A-Za-z0-9]+', '-', device_kind or '').strip('-').lower() or 'unknown'
  suffix = '_small' if small else ''
  root = os.path.dirname(os.path.abspath(__file__))
  return os.path.join(root, 'results',
                      f'{benchmark}_{device}_{datetime.date.today().isoformat()}{suffix}.json')
