"""Learning-rate schedules as optax schedules of the step count.

`SCHEDULE_READS` says which fields of an optim config each schedule reads (and `FIELDS` the
values each may take): validation, the "this override would have no effect" errors
(jaxlab/experiments/preflight.py) and tests/test_reads.py, which records what `build` reads,
all start from it."""

import types

import jax.numpy as jnp
import optax

from jaxlab.checks import at_least, one_of, rule, within

DECAY_SHAPES = ('linear', 'cosine', '1-sqrt')
# The optim fields each schedule reads besides optim.schedule and the peak lr. A warm-up is
# optim.warmup_fraction of the run when that is set, else optim.warmup_epochs.
SCHEDULE_READS = {
    'constant': (),
    'cosine': ('lr_floor',),
    'warmup_cosine': ('lr_floor', 'warmup_epochs', 'warmup_fraction'),
    'whd': ('lr_floor', 'warmup_epochs', 'warmup_fraction', 'decay_start_fraction',
            'decay_shape'),
    'whd_latent_space': ('lr_floor', 'warmup_epochs', 'warmup_fraction', 'decay_shape'),
    # Stepped once per epoch (EPOCH_SCHEDULES below).
    'cosine_epoch': ('lr_floor',),
    'warmup_linear_epoch': ('lr_floor', 'warmup_epochs', 'warmup_fraction'),
}
SCHEDULES = tuple(SCHEDULE_READS)
# Why a schedule leaves a field unread, where a user would expect it to read it.
UNREAD_BECAUSE = {('whd_latent_space', 'decay_start_fraction'):
                  'the reference WHDScheduler triggers its cooldown at ⌊0.8n⌋'}
# The values of the fields the schedules read.
FIELDS = {
    'lr_floor': rule(within, 0, 1, why=' (a fraction of the peak lr)'),
    'warmup_epochs': rule(at_least, 0),
    'warmup_fraction': rule(within, 0, 1, high_open=True),
    'decay_start_fraction': rule(within, 0, 1),
    'decay_shape': rule(one_of, DECAY_SHAPES),
}


def decay_curve(shape, t):
  """The fraction of the way from peak to floor still left at progress t ∈ [0, 1] of a decay:
  linear 1−t, cosine (1+cos πt)/2, 1-sqrt 1−√t (warmup-stable-decay's cooldown)."""
  t = jnp.clip(t, 0.0, 1.0)
  if shape == 'linear':
    return 1.0 - t
  if shape == 'cosine':
    return 0.5 * (1.0 + jnp.cos(jnp.pi * t))
  if shape == '1-sqrt':
    return 1.0 - jnp.sqrt(t)
  raise ValueError(f'unknown decay shape {shape!r}; choose one of {", ".join(DECAY_SHAPES)}')


def warmup_hold_decay(peak_lr, total_steps, warmup_steps, decay_start, floor=0.0,
                      shape='1-sqrt'):
  """Linear 0 → peak over `warmup_steps`, hold at peak until `decay_start`, then decay with
  `shape` to floor·peak at `total_steps` (and stay there). decay_start = total_steps holds to
  the end: the schedule to pair with checkpoint averaging instead of a cooldown."""
  if shape not in DECAY_SHAPES:
    raise ValueError(f'unknown decay shape {shape!r}; choose one of {", ".join(DECAY_SHAPES)}')
  decay_start = max(decay_start, warmup_steps)
  decay_len = max(total_steps - decay_start, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = step / max(warmup_steps, 1)
    left = decay_curve(shape, (step - decay_start) / decay_len)
    decayed = floor + (1.0 - floor) * left
    factor = jnp.where(step < warmup_steps, warm, jnp.where(step < decay_start, 1.0, decayed))
    return peak_lr * factor
  return schedule


# whd_latent_space: white-richard/latent-space src/latent_space/schedulers/
# warm_hold_decay_scheduler.py `WHDScheduler` as lightning/lightning_module.py builds it
# (frac_decay left at its default 0.2, init_div_factor 100, auto_trigger_cooldown=True,
# stepped every optimizer step: LambdaLR's step k is the k-th update, 0 first).
LATENT_SPACE_FRAC_DECAY = 0.2
LATENT_SPACE_INIT_DIV = 100.0


def latent_space_whd_steps(total_steps, warmup_steps):
  """(warm-up, cooldown start, cooldown end) in steps of WHDScheduler with
  auto_trigger_cooldown: the cooldown is triggered at max(warm-up, ⌊(1 − 0.2)·n⌋) (at most
  n − 1) and lasts max(1, ⌈0.2·start⌉) steps, ending at most at n: for n = 39,200, 31,360 to
  37,632 (0.8n to 0.96n). Python float arithmetic, as the reference's."""
  import math  # pylint: disable=g-import-not-at-top
  n = int(total_steps)
  computed = int(math.floor(max(0.0, min(1.0, 1.0 - LATENT_SPACE_FRAC_DECAY)) * n))
  start = max(int(warmup_steps), max(0, min(max(0, n - 1), computed)))
  length = max(1, int(math.ceil(LATENT_SPACE_FRAC_DECAY * start)))
  return int(warmup_steps), start, min(start + length, n)


def whd_latent_space(peak_lr, total_steps, warmup_steps, floor=0.1, shape='1-sqrt'):
  """WHDScheduler's lr (see latent_space_whd_steps): warm-up x + (1 − x)/100 with
  x = step/warm-up (from lr/100, not 0), hold at 1, then from the cooldown start `shape`
  (t = (step − start)/(end − start)) to floor at the cooldown end, floor from there on."""
  if shape not in DECAY_SHAPES:
    raise ValueError(f'unknown decay shape {shape!r}; choose one of {", ".join(DECAY_SHAPES)}')
  warmup, start, end = latent_space_whd_steps(total_steps, warmup_steps)
  decay_len = max(1, end - start)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    x = step / max(warmup, 1)
    warm = x + (1.0 - x) / LATENT_SPACE_INIT_DIV
    decayed = floor + (1.0 - floor) * decay_curve(shape, (step - start) / decay_len)
    factor = jnp.where(step < start, 1.0, jnp.where(step < end, decayed, floor))
    factor = jnp.where((warmup > 0) & (step < warmup), warm, factor)
    return peak_lr * jnp.where(step >= total_steps, floor, factor)
  return schedule


def make_schedule(kind, peak_lr, total_steps, warmup_steps=0, floor=0.0, decay_start=None,
                  decay_shape='1-sqrt', steps_per_epoch=None, epochs=None):
  """A step → learning-rate function.

  constant: peak_lr throughout. cosine: peak_lr · cosine decay to `floor`·peak_lr
  over `total_steps` (T_max = the run, as PyTorch's CosineAnnealingLR with
  eta_min = floor·lr). warmup_cosine: linear 0 → peak_lr over `warmup_steps`,
  then cosine to floor·peak_lr at `total_steps`. whd: warmup_hold_decay with
  the decay from `decay_start` (default: the last 20% of the steps). whd_latent_space:
  see `whd_latent_space`. cosine_epoch, warmup_linear_epoch: stepped per epoch
  (`epoch_schedule`; they need steps_per_epoch).
  """
  values = types.SimpleNamespace(warmup_steps=warmup_steps, floor=floor,
                                 decay_start=decay_start, decay_shape=decay_shape)
  return build(kind, peak_lr, total_steps, values, steps_per_epoch, epochs)


def build(kind, peak_lr, total_steps, values, steps_per_epoch=None, epochs=None):
  """The schedule `kind` at `peak_lr`, reading of `values` (warmup_steps, floor, decay_start,
  decay_shape: attributes, of `ConfigValues` for an optim config) only what `kind` uses
  (SCHEDULE_READS)."""
  if kind in EPOCH_SCHEDULES:
    if not steps_per_epoch:
      raise ValueError(f'schedule {kind!r} needs steps_per_epoch')
    warmup = values.warmup_steps / steps_per_epoch if kind == 'warmup_linear_epoch' else 0.0
    return epoch_schedule(kind, peak_lr, steps_per_epoch,
                          epochs or -(-(total_steps or 0) // steps_per_epoch), warmup,
                          values.floor)
  total_steps = total_steps or 0
  if kind == 'constant':
    return optax.constant_schedule(peak_lr)
  if kind == 'cosine':
    return optax.cosine_decay_schedule(peak_lr, max(total_steps, 1), alpha=values.floor)
  if kind == 'warmup_cosine':
    warmup_steps = values.warmup_steps
    return optax.warmup_cosine_decay_schedule(
        0.0, peak_lr, warmup_steps, max(total_steps, warmup_steps + 1),
        end_value=values.floor * peak_lr)
  if kind == 'whd':
    start = values.decay_start
    start = int(0.8 * total_steps) if start is None else start
    return warmup_hold_decay(peak_lr, total_steps, values.warmup_steps, start, values.floor,
                             values.decay_shape)
  if kind == 'whd_latent_space':  # decay_start unused: the reference triggers at ⌊0.8n⌋
    return whd_latent_space(peak_lr, total_steps, values.warmup_steps, values.floor,
                            values.decay_shape)
  raise ValueError(f'unknown schedule {kind!r}; choose one of {", ".join(SCHEDULES)}')


class ConfigValues:
  """What `build` reads of an optim config, in steps; each field is read only when asked for."""

  def __init__(self, optim_cfg, total_steps, steps_per_epoch):
    self._cfg, self._total, self._spe = optim_cfg, total_steps, steps_per_epoch

  @property
  def warmup_steps(self):
    return warmup_steps_of(self._cfg, self._total, self._spe)

  @property
  def floor(self):
    return self._cfg.get('lr_floor', 0.0)

  @property
  def decay_start(self):
    return decay_start_of(self._cfg, self._total)

  @property
  def decay_shape(self):
    return self._cfg.get('decay_shape', '1-sqrt')


def warmup_steps_of(optim_cfg, total_steps, steps_per_epoch):
  """Warm-up length in steps: optim.warmup_fraction of the run when set, else warmup_epochs."""
  fraction = optim_cfg.get('warmup_fraction', 0.0)
  if fraction and optim_cfg.get('schedule') == 'whd_latent_space':
    return int(fraction * total_steps)  # WHDScheduler: int(frac_warmup * n_iterations)
  if fraction:
    return int(round(fraction * total_steps))
  return int(optim_cfg.warmup_epochs * steps_per_epoch)


def decay_start_of(optim_cfg, total_steps):
  """The step where whd's decay starts: optim.decay_start_fraction of the run."""
  return int(round(optim_cfg.get('decay_start_fraction', 0.8) * total_steps))


def schedule_from_config(optim_cfg, peak_lr, total_steps, steps_per_epoch):
  """The schedule optim.schedule at `peak_lr`, with the fields of an optim config it reads
  (SCHEDULE_READS)."""
  return build(optim_cfg.schedule, peak_lr, total_steps,
               ConfigValues(optim_cfg, total_steps, steps_per_epoch), steps_per_epoch)


def describe(optim_cfg, total_steps, steps_per_epoch):
  """One line for a record: the schedule and its parameters in steps."""
  kind = optim_cfg.schedule
  warmup = warmup_steps_of(optim_cfg, total_steps, steps_per_epoch)
  floor = optim_cfg.lr_floor
  if kind == 'constant':
    return 'constant'
  if kind == 'cosine':
    return f'cosine over {total_steps} steps to {floor:g}·lr'
  if kind == 'warmup_cosine':
    return f'linear warm-up {warmup} steps, cosine to {floor:g}·lr at step {total_steps}'
  if kind == 'whd_latent_space':
    _, start, end = latent_space_whd_steps(total_steps, warmup)
    return (f'warmup-hold-decay (latent-space WHDScheduler): warm-up {warmup} steps from '
            f'lr/{LATENT_SPACE_INIT_DIV:g}, hold to step {start}, '
            f'{optim_cfg.get("decay_shape", "1-sqrt")} decay to {floor:g}·lr at step {end}, '
            f'{floor:g}·lr to step {total_steps}')
  start = decay_start_of(optim_cfg, total_steps)
  if start >= total_steps:
    return f'warm-up {warmup} steps, then hold at lr to the end (no decay)'
  return (f'warmup-hold-decay: warm-up {warmup} steps, hold to step {start}, '
          f'{optim_cfg.get("decay_shape", "1-sqrt")} decay to {floor:g}·lr at step {total_steps}')


# Schedules stepped once per epoch (the lr constant within an epoch), as the PyTorch schedulers
# of the distributed-learning family's original code (lucavgn/AML_Project5) step after each epoch:
#   cosine_epoch         CosineAnnealingLR(T_max = E epochs): epoch e at
#                        floor + (1 − floor)·(1 + cos πe/E)/2 of the peak lr
#   warmup_linear_epoch  SqrtLRScheduler (Results/LargeBatch notebooks): (e + 1)/W for e < W, then
#                        1 − (e − W)/(E − W) (0 at e = E, never reached), times the peak lr
# (`build` makes them with epoch_schedule; they need steps_per_epoch).
EPOCH_SCHEDULES = ('cosine_epoch', 'warmup_linear_epoch')


def epoch_schedule(kind, peak_lr, steps_per_epoch, epochs, warmup_epochs=0.0, floor=0.0):
  """A step → lr function of the epoch e = step // steps_per_epoch (see EPOCH_SCHEDULES)."""
  if kind not in EPOCH_SCHEDULES:
    raise ValueError(f'unknown per-epoch schedule {kind!r}; choose one of '
                     f'{", ".join(EPOCH_SCHEDULES)}')
  epochs, warmup = float(max(epochs, 1)), float(warmup_epochs)

  def schedule(step):
    e = (jnp.asarray(step, jnp.int32) // steps_per_epoch).astype(jnp.float32)
    if kind == 'cosine_epoch':
      left = 0.5 * (1.0 + jnp.cos(jnp.pi * e / epochs))
      return peak_lr * (floor + (1.0 - floor) * left)
    warm = (e + 1.0) / max(warmup, 1.0)
    left = 1.0 - (e - warmup) / max(epochs - warmup, 1.0)
    return peak_lr * jnp.where(e < warmup, warm, floor + (1.0 - floor) * left)
  return schedule
