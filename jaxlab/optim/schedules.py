"""Learning-rate schedules as optax schedules of the step count."""

import optax

SCHEDULES = ('constant', 'cosine', 'warmup_cosine')


def make_schedule(kind, peak_lr, total_steps, warmup_steps=0, floor=0.0):
  """A step → learning-rate function.

  constant: peak_lr throughout. cosine: peak_lr · cosine decay to `floor`·peak_lr
  over `total_steps` (T_max = the run, as PyTorch's CosineAnnealingLR with
  eta_min = floor·lr). warmup_cosine: linear 0 → peak_lr over `warmup_steps`,
  then cosine to floor·peak_lr at `total_steps`.
  """
  if kind == 'constant':
    return optax.constant_schedule(peak_lr)
  if kind == 'cosine':
    return optax.cosine_decay_schedule(peak_lr, max(total_steps, 1), alpha=floor)
  if kind == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, peak_lr, warmup_steps, max(total_steps, warmup_steps + 1), end_value=floor * peak_lr)
  raise ValueError(f'unknown schedule {kind!r}; choose one of {list(SCHEDULES)}')
