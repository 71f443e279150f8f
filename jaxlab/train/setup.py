"""What a run trains, built once from a config and a Task: the layout, the optimizer, the first
train state and the compiled-step factory. `fit` drives it; benchmarks time it."""

import dataclasses
import functools
from typing import Any, Callable

import jax

from jaxlab.data.augment import make_train_augment, mixing
from jaxlab.optim import averaging
from jaxlab.optim.optimizers import optimizer_from_config
from jaxlab.parallel.local import worker_state
from jaxlab.parallel.mesh import DATA
from jaxlab.params import label_tree, run_keys, shared_copy, split, subtree_labels
from jaxlab.train import layouts
from jaxlab.train.layouts import ordered_sums
from jaxlab.train.state import TrainState
from jaxlab.train.step import diagnostics_step, make_diagnostics, make_train_chunk, train_step
from jaxlab.train.task import with_label_smoothing


@dataclasses.dataclass
class Setup:
  """layout (a jaxlab.train.layouts.Layout: how the models sit on the devices), copies (models
  trained together: seeds or workers, else 1), tx, trainable_labels, averager (or None), the
  initial state (not yet on the mesh), `place` (puts a state on the mesh),
  `chunk_fn(hold)` (the jitted multi-step) and `diagnostics_fn(hold)` (the jitted diagnostics of
  one step, outside the training step; None when the task asks for none)."""
  layout: Any
  copies: int
  tx: Any
  trainable_labels: Any
  averager: Any
  state: Any
  place: Callable
  chunk_fn: Callable
  diagnostics_fn: Callable | None = None


def build_setup(config, task, mesh, total_steps, steps_per_epoch, layout=None):
  """The Setup of `task` trained as `config` says for `total_steps` steps on `mesh`
  (`layout`: the one `layouts.choose` picks, when not given)."""
  layout = layout or layouts.choose(config, task, mesh)
  kind = layout.name
  step_keys = [run_keys(s)[2] for s in layout.seeds]
  labels = label_tree(task.params, task.rules)
  trainable, frozen = split(task.params, labels)
  if not jax.tree.leaves(trainable):
    raise ValueError(f'the partition rules {list(task.rules)} freeze every parameter; '
                     'nothing would train.')
  trainable_labels = subtree_labels(trainable, labels)
  tx = optimizer_from_config(config.optim, trainable_labels, total_steps, steps_per_epoch)
  averager = averaging.from_config(config.get('averaging'), total_steps)
  if averager is not None and kind == 'workers':
    raise ValueError('checkpoint averaging (averaging.every_steps > 0) supports one model or '
                     'seeds trained together, not local-SGD workers; set '
                     '--config.averaging.every_steps=0')
  extra = task.initial_extra()
  if averager is not None:
    extra['average'] = averager.init(trainable, seeds=kind == 'replicas')
  ema_decay = float(config.train.get('ema_decay', 0.0))
  if ema_decay and kind == 'workers':
    raise ValueError('a parameter EMA (train.ema_decay > 0) follows one model or seeds trained '
                     'together, not local-SGD workers; set --config.train.ema_decay=0')
  if ema_decay:  # starts at the initial parameters, as timm's ModelEmaV2
    extra['ema'] = jax.tree.map(lambda x: x.astype(jax.numpy.float32), trainable)
  create = lambda p, f, r, e: TrainState.create(p, f, tx, r, e)
  if kind == 'replicas':
    shared = shared_copy(frozen) if jax.tree.leaves(frozen) else None
    if shared is not None:  # PEFT's pretrained backbone: one copy for every seed
      frozen, layout.frozen_axis = shared, None
    state = jax.vmap(create, in_axes=(0, layout.frozen_axis, 0, 0), out_axes=layout.state_axes)(
        trainable, frozen, jax.numpy.stack(step_keys), extra)
  elif kind == 'workers':
    extra = {**extra, **task.workers.init_extra(trainable)}
    state = worker_state(create(trainable, frozen, step_keys[0], extra), task.workers.workers)
  else:
    state = create(trainable, frozen, step_keys[0], extra)
  augment = make_train_augment(config.augment)
  mix = mixing(config.augment)
  if mix is not None and task.grad_fn is not None:
    raise ValueError('mixup / CutMix mix the loss of two labels, and this task computes its own '
                     'gradient (a credit-assignment rule): set augment.mixup_alpha and '
                     'augment.cutmix_alpha to 0')
  task = with_label_smoothing(task, config.train.get('label_smoothing', 0.0))
  accumulate = int(config.train.get('grad_accumulation', 1))

  axis_name = None if kind == 'workers' else DATA
  ordered = ordered_sums(config)
  # An LR controller (lr_parity) reads the groups' gradient norms of every step.
  grad_norms = tuple(getattr(task.controller, 'groups', ())) if task.controller else ()

  @functools.cache
  def chunk_fn(hold):
    return make_train_chunk(functools.partial(
        train_step, task=task, tx=tx, augment=augment, labels=trainable_labels, hold=hold,
        grad_norms=grad_norms, axis_name=axis_name, ordered=ordered, accumulate=accumulate,
        ema_decay=ema_decay, mix=mix),
        mesh, kind, getattr(layout, 'state_axes', 0), task.seed_loop)

  if task.diagnostics and kind != 'data':
    raise ValueError(f'gradient diagnostics support single-model runs only, not the {kind} '
                     'layout')

  @functools.cache
  def diagnostics_fn(hold):
    return make_diagnostics(functools.partial(
        diagnostics_step, task=task, tx=tx, augment=augment, labels=trainable_labels,
        hold=hold, groups=tuple(task.diagnostics), axis_name=axis_name, accumulate=accumulate,
        mix=mix),
        mesh)

  return Setup(layout, layout.copies, tx, trainable_labels, averager, state, layout.place, chunk_fn,
               diagnostics_fn if task.diagnostics else None)
