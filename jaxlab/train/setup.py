"""What a run trains, built once from a config and a Task: the layout, the optimizer, the first
train state and the compiled-step factory. `fit` drives it; benchmarks time it."""

import dataclasses
import functools
from typing import Any, Callable

import jax

from jaxlab.data.augment import make_train_augment
from jaxlab.optim import averaging
from jaxlab.optim.optimizers import make_optimizer
from jaxlab.parallel.local import worker_state
from jaxlab.parallel.mesh import DATA, check_divisible, replicate, shard_leading
from jaxlab.peft.partition import label_tree, split, subtree_labels
from jaxlab.train.state import TrainState
from jaxlab.train.step import diagnostics_step, make_diagnostics, make_train_chunk, train_step


def run_keys(seed):
  """(init, data, step) keys of a run, all derived from `seed`."""
  root = jax.random.PRNGKey(seed)
  return tuple(jax.random.fold_in(root, i) for i in range(3))


def layout_of(task):
  """'workers' (local SGD), 'replicas' (seeds under vmap) or 'data' (one model)."""
  return 'workers' if task.workers is not None else 'replicas' if task.seeds is not None else 'data'


@dataclasses.dataclass
class Setup:
  """layout, copies (models trained together: seeds or workers, else 1), tx, trainable_labels,
  averager (or None), the initial state (not yet on the mesh), `place` (puts a state on the mesh),
  `chunk_fn(hold)` (the jitted multi-step) and `diagnostics_fn(hold)` (the jitted diagnostics of
  one step, outside the training step; None when the task asks for none)."""
  layout: str
  copies: int
  tx: Any
  trainable_labels: Any
  averager: Any
  state: Any
  place: Callable
  chunk_fn: Callable
  diagnostics_fn: Callable | None = None


def build(config, task, mesh, total_steps, steps_per_epoch):
  """The Setup of `task` trained as `config` says for `total_steps` steps on `mesh`."""
  layout = layout_of(task)
  if layout == 'workers':  # the batch size is each worker's own
    check_divisible(task.workers.workers, mesh, 'the number of local workers')
  else:
    check_divisible(config.train.batch_size, mesh)
  seeds = task.seeds if layout == 'replicas' else (config.seed,)
  copies = task.workers.workers if layout == 'workers' else len(seeds)
  step_keys = [run_keys(s)[2] for s in seeds]
  labels = label_tree(task.params, task.rules)
  trainable, frozen = split(task.params, labels)
  if not jax.tree.leaves(trainable):
    raise ValueError(f'the partition rules {list(task.rules)} freeze every parameter; '
                     'nothing would train.')
  trainable_labels = subtree_labels(trainable, labels)
  tx = make_optimizer(config.optim, trainable_labels, total_steps, steps_per_epoch)
  averager = averaging.from_config(config.get('averaging'), total_steps)
  if averager is not None and layout != 'data':
    raise ValueError('checkpoint averaging (averaging.every_steps > 0) supports single-model '
                     f'runs only, not the {layout} layout; set --config.averaging.every_steps=0')
  extra = task.initial_extra()
  if averager is not None:
    extra['average'] = averager.init(trainable)
  create = lambda p, f, r, e: TrainState.create(p, f, tx, r, e)
  if layout == 'replicas':
    state = jax.vmap(create)(trainable, frozen, jax.numpy.stack(step_keys), extra)
  elif layout == 'workers':
    extra = {**extra, **task.workers.init_extra(trainable)}
    state = worker_state(create(trainable, frozen, step_keys[0], extra), task.workers.workers)
  else:
    state = create(trainable, frozen, step_keys[0], extra)
  # Workers are spread over the devices; everything else is on every device.
  if layout == 'workers':
    place = lambda tree: shard_leading(tree, mesh)
  else:
    place = lambda tree: replicate(tree, mesh)

  augment = make_train_augment(config.augment)

  axis_name = None if layout == 'workers' else DATA
  # An LR controller (lr_parity) reads the groups' gradient norms of every step.
  grad_norms = tuple(getattr(task.controller, 'groups', ())) if task.controller else ()

  @functools.cache
  def chunk_fn(hold):
    return make_train_chunk(functools.partial(
        train_step, task=task, tx=tx, augment=augment, labels=trainable_labels, hold=hold,
        grad_norms=grad_norms, axis_name=axis_name), mesh, layout)

  if task.diagnostics and layout != 'data':
    raise ValueError(f'gradient diagnostics support single-model runs only, not the {layout} '
                     'layout')

  @functools.cache
  def diagnostics_fn(hold):
    return make_diagnostics(functools.partial(
        diagnostics_step, task=task, tx=tx, augment=augment, labels=trainable_labels,
        hold=hold, groups=tuple(task.diagnostics), axis_name=axis_name), mesh)

  return Setup(layout, copies, tx, trainable_labels, averager, state, place, chunk_fn,
               diagnostics_fn if task.diagnostics else None)
