"""Optimizers by name, one per parameter group, joined with `optax.partition`.

`make_optimizer(labels, name='adamw', lr=..., groups={...})` is a plain
`optax.GradientTransformation`: `update(grads, state, params)` follows the
schedule at the optimizer's own step count, kept in its state. The trainer
passes the run's global step instead (`update(..., global_step=step)`), so that
the learning rate of every group follows the global step, not the group's own
update count: a group held still for a while resumes at the schedule's current
value, as a PyTorch scheduler stepping globally would have it, while its
optimizer statistics (Adam's moments and bias-correction count) stay where they
were. `optimizer_from_config` builds the same from an `optim` ConfigDict.

`OPTIMIZER_READS` says which optim fields each optimizer reads besides `COMMON_READS` (and
`FIELDS` the values each may take); validation, the "this override would have no effect"
errors (jaxlab/experiments/preflight.py) and tests/test_reads.py, which records what
`optimizer_from_config` reads, all start from it.
"""

import inspect
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.checks import at_least, one_of, positive, rule, within
from jaxlab.optim import schedules
from jaxlab.optim.schedules import EPOCH_SCHEDULES, SCHEDULES
from jaxlab.params import FROZEN

# LARS and LAMB as the original code wrote them ('original'), or in their textbook form
# ('textbook', optax.lars / optax.lamb): see _around_lr.
LARGE_BATCH_FORMS = ('original', 'textbook')
# The optim fields every optimizer reads (record_last_grads: set by the run, not by a user).
COMMON_READS = ('name', 'lr', 'weight_decay', 'groups', 'schedule', 'clip_grad_norm',
                'record_last_grads')
# The optim fields each optimizer reads besides those (_around_lr; lars reads nesterov in its
# textbook form only).
OPTIMIZER_READS = {
    'sgd': (),
    'sgdm': ('momentum', 'nesterov'),
    'adamw': ('b1', 'b2', 'eps'),
    'lars': ('large_batch_form', 'momentum', 'nesterov', 'trust_coefficient'),
    'lamb': ('large_batch_form', 'b1', 'b2', 'eps'),
}
OPTIMIZERS = tuple(OPTIMIZER_READS)
# The values of the fields the optimizers read (None: any value of the field's type).
FIELDS = {
    'lr': rule(positive),
    'clip_grad_norm': rule(at_least, 0, ' (0 turns clipping off)'),
    'weight_decay': rule(at_least, 0),
    'momentum': rule(within, 0, 1, high_open=True),
    'nesterov': None,
    'b1': rule(within, 0, 1, high_open=True),
    'b2': rule(within, 0, 1, high_open=True),
    'eps': rule(positive),
    'trust_coefficient': rule(positive),
    'large_batch_form': rule(one_of, LARGE_BATCH_FORMS),
}


class ScheduleState(NamedTuple):
  """The number of updates a group has made: its schedule's step when no global step is given."""
  count: jax.Array


def scale_by_global_schedule(schedule, label):
  """Multiply updates by -schedule(step) · lr_scales[label] (default scale 1).

  step is the `global_step` extra argument when given, else the transform's own
  update count (0 at the first update, as optax's schedules count).
  """

  def init(params):
    del params
    return ScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, global_step=None, lr_scales=None, **extra):
    del params, extra
    lr = schedule(state.count if global_step is None else global_step)
    if lr_scales is not None and label in lr_scales:
      lr = lr * lr_scales[label]
    updates = jax.tree.map(lambda u: -lr * u, updates)
    return updates, ScheduleState(count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformationExtraArgs(init, update)


class LastGrads(NamedTuple):
  """The gradients of the last update (record_last_grads): what the original dynamic local
  SGD reads from each worker's param.grad after a round (jaxlab.parallel.local)."""
  grads: optax.Updates


def record_last_grads():
  """Pass the updates through unchanged, keeping a copy of them in the state."""

  def init(params):
    return LastGrads(grads=jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params, state
    return updates, LastGrads(grads=updates)

  return optax.GradientTransformation(init, update)


def clip_by_global_norm_first(inner, max_norm):
  """`inner` applied to the gradients scaled down to a global L2 norm of at most `max_norm`,
  as PyTorch's clip_grad_norm_ (timm's --clip-grad) scales them: by
  min(1, max_norm / (norm + 1e-6)), the norm over every leaf of the updates (the trained
  parameters: held groups' zeros add nothing). The state is `inner`'s own, unchanged in
  structure."""

  def init(params):
    return inner.init(params)

  def update(updates, state, params=None, **extra):
    norm = optax.tree.norm(updates)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    updates = jax.tree.map(lambda g: g * scale.astype(g.dtype), updates)
    return inner.update(updates, state, params, **extra)

  return optax.GradientTransformationExtraArgs(init, update)


def matrices_only(params):
  """True for weight matrices and kernels, False for biases and norm scales (ndim ≤ 1)."""
  return jax.tree.map(lambda x: x.ndim > 1, params)


class OriginalLarsState(NamedTuple):
  """The original LARS's momentum buffers and its update count (0 before the first update)."""
  count: jax.Array
  momentum: optax.Updates


def original_lars(momentum, weight_decay, trust_coefficient):
  """LARS as the original code has it (lucavgn/AML_Project5, class `LARS` in
  Centr_Training_TestModel_LargeBatch.ipynb and the Results/LargeBatch notebooks), per tensor,
  biases included:
    d = g + wd·w;  d ← d · tc·‖w‖/(‖d‖ + 1e-8)  (only when ‖w‖ > 0 and ‖d‖ > 0)
    buf ← m·buf + d, the buffer starting as the raw gradient g (PyTorch SGD's first step);
  the step is then −lr·buf (the lr scaling follows this transform)."""

  def init(params):
    return OriginalLarsState(count=jnp.zeros([], jnp.int32),
                             momentum=jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('LARS needs the parameters: update(grads, state, params)')

    def one(g, w, buf):
      d = g + weight_decay * w if weight_decay else g
      w_norm, d_norm = jnp.linalg.norm(w), jnp.linalg.norm(d)
      local = trust_coefficient * w_norm / (d_norm + 1e-8)
      d = jnp.where((w_norm > 0) & (d_norm > 0), d * local, d)
      buf = jnp.where(state.count == 0, g, buf)
      return momentum * buf + d

    new = jax.tree.map(one, updates, params, state.momentum)
    return new, OriginalLarsState(count=optax.safe_int32_increment(state.count), momentum=new)

  return optax.GradientTransformation(init, update)


def _around_lr(name, weight_decay, hp):
  """(before, after): the optimizer's transforms before and after the learning-rate scaling.

  hp: a mapping of the hyper-parameters momentum, nesterov, b1, b2, eps, trust_coefficient and
  large_batch_form (LARGE_BATCH_FORMS); each optimizer looks up only its own (OPTIMIZER_READS)."""
  if name in ('lars', 'lamb'):
    form = hp['large_batch_form']
    if form not in LARGE_BATCH_FORMS:
      raise ValueError(f'unknown large_batch_form {form!r}; choose one of '
                       f'{", ".join(LARGE_BATCH_FORMS)}')
  if name == 'sgd':
    return optax.add_decayed_weights(weight_decay), optax.identity()
  if name == 'sgdm':
    # PyTorch SGD: decay added to the gradient, then momentum (buf = m·buf + g).
    return (optax.chain(optax.add_decayed_weights(weight_decay),
                        optax.trace(hp['momentum'], nesterov=hp['nesterov'])), optax.identity())
  if name == 'adamw':
    # AdamW: Adam direction plus decoupled decay, both scaled by the lr.
    return (optax.chain(optax.scale_by_adam(hp['b1'], hp['b2'], hp['eps']),
                        optax.add_decayed_weights(weight_decay)), optax.identity())
  if name == 'lars' and form == 'original':
    return original_lars(hp['momentum'], weight_decay, hp['trust_coefficient']), optax.identity()
  if name == 'lamb' and form == 'original':
    # The original LAMB (lucavgn/AML_Project5, class `LAMB` in the large-batch notebooks):
    # u = m̂/(√v̂ + eps) + wd·w and the step −lr·(‖w‖/‖u‖)·u (ratio 1 when either norm is 0,
    # no clamp) on every tensor, biases included.
    return (optax.chain(optax.scale_by_adam(hp['b1'], hp['b2'], hp['eps']),
                        optax.add_decayed_weights(weight_decay),
                        optax.scale_by_trust_ratio()), optax.identity())
  if name == 'lars':
    # Textbook (optax.lars): decay and trust ratio skip biases and norms; the momentum buffer
    # starts at 0 and follows the lr scaling.
    return (optax.chain(optax.add_decayed_weights(weight_decay, mask=matrices_only),
                        optax.masked(optax.scale_by_trust_ratio(
                            trust_coefficient=hp['trust_coefficient']), matrices_only)),
            optax.trace(hp['momentum'], nesterov=hp['nesterov']))
  if name == 'lamb':
    # Textbook (optax.lamb): Adam direction + decay (matrices), then the trust ratio ‖w‖/‖u‖.
    return (optax.chain(optax.scale_by_adam(hp['b1'], hp['b2'], hp['eps']),
                        optax.add_decayed_weights(weight_decay, mask=matrices_only),
                        optax.masked(optax.scale_by_trust_ratio(), matrices_only)), optax.identity())
  raise ValueError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')


GROUP_FIELDS = ('lr', 'weight_decay')


def group_settings(groups, label, lr, weight_decay):
  """(lr, weight_decay) of a parameter group: its entry in `groups`, else the defaults."""
  group = (groups or {}).get(label, None)
  if group is None:
    return lr, weight_decay
  unknown = sorted(set(group.keys()) - set(GROUP_FIELDS))
  if unknown:
    raise ValueError(f'optimizer group {label!r} sets {unknown}; a group sets only '
                     f'{", ".join(GROUP_FIELDS)}')
  return (group['lr'] if 'lr' in group else lr,
          group['weight_decay'] if 'weight_decay' in group else weight_decay)


def make_optimizer(labels, name='adamw', lr=1e-3, weight_decay=0.0, schedule='constant',
                   total_steps=None, *, groups=None, warmup_steps=0, lr_floor=0.0,
                   decay_start=None, decay_shape='1-sqrt', momentum=0.9, nesterov=False,
                   b1=0.9, b2=0.999, eps=1e-8, trust_coefficient=0.001,
                   large_batch_form='textbook', steps_per_epoch=None, epochs=None,
                   record_grads=False, clip_grad_norm=0.0):
  """An `optax.GradientTransformationExtraArgs`: `optax.partition` over the labels of `labels`.

  labels: a label tree shaped like the params it will update (e.g.
    `jaxlab.params.label_tree(params, rules)`, or the labels of `vit_with_peft`).
    Every distinct label is a group trained by `name` (sgd | sgdm | adamw | lars | lamb)
    at its peak lr along `schedule`; the label 'frozen' gets zero updates
    (`optax.set_to_zero`; better still, leave frozen leaves out of the differentiated tree
    with `jaxlab.params.split`).
  lr, weight_decay: each group's defaults; groups={label: {'lr': ..., 'weight_decay': ...}}
    overrides them per group (labels absent from `labels` are ignored).
  schedule: constant | cosine | warmup_cosine | whd over `total_steps` (needed by all but
    constant), with warmup_steps, lr_floor (floor = lr_floor · lr), and for whd decay_start
    (default 80% of the steps) and decay_shape; see jaxlab.optim.schedules.make_schedule;
    or cosine_epoch | warmup_linear_epoch, stepped per epoch (schedules.epoch_schedule).
  momentum, nesterov (sgdm, lars), b1, b2, eps (adamw, lamb), trust_coefficient (lars).
  large_batch_form: 'textbook' (optax.lars / optax.lamb: decay and trust ratio on matrices only,
    LARS's momentum buffer from 0) or 'original' (the original code's LARS and LAMB: every
    tensor, LARS's buffer starting as the raw gradient); see `original_lars`.
  steps_per_epoch: needed by the per-epoch schedules (schedules.EPOCH_SCHEDULES), which hold
    the lr constant within an epoch, as a PyTorch scheduler stepped after each epoch.
  record_grads: keep each group's last gradients in its state (`LastGrads`).
  clip_grad_norm > 0: the gradients of all groups together are first scaled to a global L2 norm
    of at most this (clip_by_global_norm_first: PyTorch's clip_grad_norm_); 0 leaves them.

  `update(grads, state, params)` takes the schedule at the optimizer's own step count
  (0 at the first update); with `global_step=` it takes that step instead (the trainer's
  global schedule), and `lr_scales={label: factor}` multiplies a group's lr.
  """
  _check_label_tree(labels)
  if large_batch_form not in LARGE_BATCH_FORMS:
    raise ValueError(f'unknown large_batch_form {large_batch_form!r}; choose one of '
                     f'{", ".join(LARGE_BATCH_FORMS)}')
  hp = dict(momentum=momentum, nesterov=nesterov, b1=b1, b2=b2, eps=eps,
            trust_coefficient=trust_coefficient, large_batch_form=large_batch_form)
  values = types.SimpleNamespace(warmup_steps=warmup_steps, floor=lr_floor,
                                 decay_start=decay_start, decay_shape=decay_shape)
  return _partitioned(labels, name, lr, weight_decay, groups, hp, schedule, total_steps,
                      values, steps_per_epoch, epochs, record_grads, clip_grad_norm)


# The defaults of the hyper-parameters an optim config may leave out: make_optimizer's.
DEFAULTS = {name: inspect.signature(make_optimizer).parameters[name].default
            for reads in OPTIMIZER_READS.values() for name in reads}


def _partitioned(labels, name, lr, weight_decay, groups, hp, schedule, total_steps, values,
                 steps_per_epoch, epochs, record_grads, clip_grad_norm=0.0):
  """make_optimizer's transformation; `hp` and `values` (the schedule's) are read only where
  the optimizer and the schedule use them."""
  if name not in OPTIMIZERS:
    raise ValueError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')
  if schedule not in SCHEDULES:
    raise ValueError(f'unknown schedule {schedule!r}; choose one of {", ".join(SCHEDULES)}')
  if schedule != 'constant' and not total_steps:
    raise ValueError(f'schedule {schedule!r} needs total_steps (the length of the run)')
  if schedule in EPOCH_SCHEDULES and not steps_per_epoch:
    raise ValueError(f'schedule {schedule!r} needs steps_per_epoch')
  transforms = {}
  for label in sorted(set(jax.tree.leaves(labels))):
    if label == FROZEN:
      transforms[label] = optax.set_to_zero()
      continue
    group_lr, group_wd = group_settings(groups, label, lr, weight_decay)
    group_schedule = schedules.build(schedule, group_lr, total_steps, values, steps_per_epoch,
                                     epochs)
    before, after = _around_lr(name, group_wd, hp)
    chain = [before, scale_by_global_schedule(group_schedule, label), after]
    transforms[label] = optax.chain(*([record_last_grads()] if record_grads else []), *chain)
  tx = optax.partition(transforms, labels)
  return clip_by_global_norm_first(tx, clip_grad_norm) if clip_grad_norm else tx


def schedule_from_optim(optim_cfg, total_steps, steps_per_epoch):
  """The step → lr function `optimizer_from_config` gives its groups (at optim.lr)."""
  return schedules.schedule_from_config(optim_cfg, optim_cfg.lr, total_steps, steps_per_epoch)


def _check_label_tree(labels):
  if not _is_label_tree(labels):
    raise TypeError('make_optimizer(labels, name=..., lr=..., ...) takes a label tree first; '
                    'for an optim ConfigDict use optimizer_from_config(optim_cfg, labels, '
                    'total_steps, steps_per_epoch)')


def _is_label_tree(labels):
  return not hasattr(labels, 'to_dict') and all(isinstance(x, str) for x in jax.tree.leaves(labels))


class _ConfigHyper:
  """The hyper-parameters of an optim config as _around_lr looks them up: each read from the
  config (or DEFAULTS) only when asked for."""

  def __init__(self, optim_cfg):
    self._cfg = optim_cfg

  def __getitem__(self, name):
    return self._cfg.get(name, DEFAULTS[name])


def optimizer_from_config(optim_cfg, labels, total_steps, steps_per_epoch):
  """`make_optimizer` with the fields of an optim config (configs/common.py): COMMON_READS,
  the fields of its optimizer (OPTIMIZER_READS; DEFAULTS where the config has none) and of
  its schedule (schedules.SCHEDULE_READS), and nothing else.
  The trainer calls `update(..., global_step=step)`."""
  c = optim_cfg
  _check_label_tree(labels)
  return _partitioned(labels, c.name, c.lr, c.weight_decay, c.get('groups', None),
                      _ConfigHyper(c), c.schedule, total_steps,
                      schedules.ConfigValues(c, total_steps, steps_per_epoch), steps_per_epoch,
                      None, c.get('record_last_grads', False), c.get('clip_grad_norm', 0.0))


def hold_groups(new_state, old_state, held):
  """The partition state with the groups in `held` kept at their old state."""
  if not held:
    return new_state
  inner = dict(new_state.inner_states)
  for label in held:
    if label in inner:
      inner[label] = old_state.inner_states[label]
  return new_state._replace(inner_states=inner)

