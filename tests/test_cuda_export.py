"""The GPU path as built, not run: each family's training step (the trainer's own compiled
chunk, state donated) lowered and exported for CUDA on this CPU (`jax.export`, platforms=
['cuda']), with 8 simulated devices where the family runs data-parallel. What a GPU gets:

- the state's buffers donated (aliased to the outputs: the step updates them in place);
- no loop in the step but the seeds' (where seeds train together): the CPU-only workaround of
  vit.materialize_grad (a 1-trip while loop that keeps XLA:CPU from recomputing the residual
  gradient) is absent on CUDA, present on CPU;
- the collectives the layout promises: each ordered sum an all_to_all + all_gather pair (no
  all_reduce), a plain psum an all_reduce, local-SGD workers none inside the step;
- cuDNN's fused attention where model.attention picks it (tests/test_attention.py).
"""

import re

import jax
import numpy as np
import pytest

from configs import distributed as distributed_config
from configs import hybrid, ladder as ladder_config, mhc as mhc_config
from jaxlab.experiments import distributed, ladder, mhc, peft
from jaxlab.parallel.mesh import make_mesh, replicate, shard_leading
from jaxlab.train.setup import build_setup
from jaxlab.train.task import Task, flax_apply

SHAPE = (32, 32, 3)
# LeNet-5's conv_impl='auto' is decided by the backend of the process that traces the step
# (models.conv: the patch form on a CPU, XLA's convolution elsewhere); a GPU host traces 'xla'.
_GPU_CONV = 'xla'


def _export(config, task, devices, batch, platform='cuda', ordered=True):
  """The MLIR text of the trainer's one-step chunk for `task`, exported for `platform`; its
  `state_leaves` attribute: how many arrays the training state holds."""
  mesh = make_mesh(jax.devices()[:devices])
  with config.unlocked():
    config.distributed.ordered_sums = ordered
  setup = build_setup(config, task, mesh, total_steps=100, steps_per_epoch=10)
  state = setup.place(setup.state)
  n = 4 * batch
  data = replicate({'image': np.zeros((n, *SHAPE), np.uint8), 'label': np.zeros(n, np.int32)},
                   mesh)
  if setup.layout.name == 'replicas':
    idx = np.arange(len(task.seeds) * batch, dtype=np.int32).reshape(1, len(task.seeds), batch)
    idx = shard_leading(idx, mesh, 2)
  elif setup.layout.name == 'workers':
    idx = shard_leading(np.arange(batch, dtype=np.int32).reshape(1, -1, batch // devices), mesh, 1)
  else:
    idx = shard_leading(np.arange(batch, dtype=np.int32)[None], mesh, 1)
  chunk = setup.chunk_fn(frozenset())
  text = _Text(jax.export.export(chunk, platforms=[platform])(state, data, idx).mlir_module())
  text.state_leaves = len(jax.tree.leaves(state))
  return text


class _Text(str):
  state_leaves = 0


def _ops(text):
  return {op: len(re.findall(rf'stablehlo\.{op}\b', text))
          for op in ('while', 'all_to_all', 'all_gather', 'all_reduce', 'custom_call')}


def _donated(text):
  """How many of main's arguments are donated (aliased to an output, or buffer donors)."""
  main = text[text.index('func.func public @main'):]
  main = main[:main.index('{\n')]
  return len(re.findall(r'tf\.aliasing_output|jax\.buffer_donor', main))


def _peft_task():
  c = hybrid.get_config('quick')
  c.progress, c.seeds = False, ()
  c.pretrained.source = 'none'
  c.sweep.runs = ()
  c.model.update(image_size=32, patch=8, width=32, depth=2, heads=2, mlp_dim=64)
  c.peft.update(method='hybrid_parallel', rank=2, diagnostics=False)
  peft.apply_recipe(c)
  return c, peft.make_task(c, 10)


def _mhc_task(arm):
  c = mhc.arm_config(mhc_config.get_config('quick'), arm)
  c.seeds = ()
  c.model.update(image_size=32, patch=8, width=32, depth=2, heads=2, mlp_dim=64)
  model, params = mhc.model_and_params(c, 10)
  return c, Task(params=params, apply=flax_apply(model), rules=(('.*', 'all'),))


@pytest.fixture(scope='module')
def vit_exports():
  out = {}
  for name, make in (('peft', _peft_task), ('regular', lambda: _mhc_task('regular')),
                     ('mhc_dynamic', lambda: _mhc_task('mhc_dynamic'))):
    c, task = make()
    out[name] = {p: _export(c, task, 1, 4, platform=p) for p in ('cuda', 'cpu')}
  return out


@pytest.mark.parametrize('family', ['peft', 'regular', 'mhc_dynamic'])
def test_vit_step_for_cuda_is_donated_and_loop_free(family, vit_exports):
  """No CPU-only loop on CUDA (the mHC arm keeps its Sinkhorn iterations' loops)."""
  cuda, cpu = vit_exports[family]['cuda'], vit_exports[family]['cpu']
  if family == 'mhc_dynamic':
    assert 0 < _ops(cuda)['while'] < _ops(cpu)['while']
  else:
    assert _ops(cuda)['while'] == 0, 'a loop in the CUDA step'
    assert _ops(cpu)['while'] >= 1  # the CPU's materialize_grad loop: the contrast
  assert _donated(cuda) == cuda.state_leaves  # every array of the state, and nothing else
  assert not re.search(r'custom_call @__cudnn', cuda)  # 'auto' resolved on this CPU: XLA's


def test_ladder_step_for_cuda():
  c = ladder_config.get_config('quick')
  c.model.update(width=16, depth=2)
  c.seeds = (1, 2)
  task = ladder.make_task(c, 'dfa', 1, (1, 2), SHAPE, 10)
  text = _export(c, task, 1, 8)
  # One loop: the seeds' (Task.seed_loop 'map', each seed bit for bit its run alone); no other.
  assert _ops(text)['while'] == 1 and _donated(text) == text.state_leaves


@pytest.mark.parametrize('ordered', [True, False])
def test_data_parallel_lenet_on_8_devices_sums_as_promised(ordered):
  c = distributed_config.get_config(None)
  c.seeds = ()
  c.model.conv_impl = _GPU_CONV
  task = distributed.make_task(c, 100, SHAPE)
  text = _export(c, task, 8, 16, ordered=ordered)
  ops = _ops(text)
  assert _donated(text) == text.state_leaves
  if ordered:  # each sum a reduce-scatter written out: an all_to_all and an all_gather
    assert ops['all_to_all'] >= 1 and ops['all_gather'] == ops['all_to_all']
    assert ops['all_reduce'] == 0
  else:
    assert ops['all_to_all'] == 0 and ops['all_reduce'] >= 1
  assert ops['while'] == 0


def test_local_sgd_workers_step_without_collectives():
  c = distributed_config.get_config('local_sgd')
  c.seeds = ()
  c.local.update(method='local_sgd', workers=8, sync_every=4)
  c.model.conv_impl = _GPU_CONV
  c.train.batch_size = 16
  task = distributed.make_task(c, 100, SHAPE, distributed.local_spec(c, steps_per_epoch=10))
  ops = _ops(_export(c, task, 8, 16 * 8))
  assert ops['all_to_all'] == ops['all_gather'] == ops['all_reduce'] == 0
