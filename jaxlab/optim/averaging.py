"""Checkpoint averaging: the mean of parameter snapshots over the last part of training.

An alternative to a learning-rate cooldown (hold the rate, average the
weights): snapshots are taken every `every` steps once the run is past
`start`, and either all of them are averaged (a running mean, window=0) or
only the last `window` (a ring buffer). The statistics live in
`TrainState.extra['average']`, so they are checkpointed and resumed with the
rest of the state. Seeds trained together (a leading seed axis on every
parameter) keep one set of statistics each: `init` and `average` take `seeds=True`
and work seed by seed (their snapshots are taken at the same steps); the trainer
adds a snapshot through the seeds' loop (jaxlab.train.step.seed_map over `update`),
so each seed's statistics are, bit for bit, those of its run alone.

`READS` says which averaging fields each mode reads, `FIELDS` the values each may take.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.checks import at_least, rule, within

# The averaging fields each mode reads (`from_config`): off while every_steps is 0.
READS = {'off': ('every_steps',), 'on': ('every_steps', 'start_fraction', 'window')}
FIELDS = {
    'every_steps': rule(at_least, 0, ' (0 turns averaging off)'),
    'start_fraction': rule(within, 0, 1, high_open=True),
    'window': rule(at_least, 0, ' (0 averages every snapshot)'),
}


def mode(avg_cfg):
  """'on' or 'off': the key of READS for `config.averaging`."""
  return 'on' if avg_cfg is not None and avg_cfg.every_steps else 'off'


@dataclasses.dataclass(frozen=True)
class ParamAverage:
  """Snapshots at the steps s > start with s % every == 0; window 0 averages all of them."""
  start: int
  every: int
  window: int = 0

  def __post_init__(self):
    if self.every <= 0:
      raise ValueError(f'averaging.every_steps must be positive (got {self.every})')
    if self.window < 0:
      raise ValueError(f'averaging.window must be ≥ 0 (got {self.window}); 0 averages every '
                       'snapshot')

  def init(self, params, seeds=False):
    """The empty statistics for parameters shaped like `params` (`seeds`: one set per seed,
    the parameters stacked on a leading seed axis)."""
    if seeds:
      return jax.vmap(self.init)(params)
    zeros = lambda x: jnp.zeros(((self.window,) if self.window else ()) + x.shape, jnp.float32)
    return {'count': jnp.zeros((), jnp.int32), 'buffer' if self.window else 'mean':
            jax.tree.map(zeros, params)}

  def due(self, step):
    """Whether a snapshot is taken after step `step`."""
    return step > self.start and step % self.every == 0

  def update(self, stats, params):
    """`stats` with `params` added as the newest snapshot (one model's; seeds trained together
    map it over their axis: jaxlab.train.step.seed_map)."""
    count = stats['count']
    if self.window:  # overwrite the oldest slot of the ring buffer
      slot = count % self.window
      buf = jax.tree.map(lambda b, p: b.at[slot].set(p.astype(jnp.float32)), stats['buffer'],
                         params)
      return {'count': count + 1, 'buffer': buf}
    mean = jax.tree.map(lambda m, p: m + (p.astype(jnp.float32) - m) / (count + 1),
                        stats['mean'], params)
    return {'count': count + 1, 'mean': mean}

  def average(self, stats, like, seeds=False):
    """The averaged parameters (in the dtypes of `like`), or None before the first snapshot
    (`seeds`: each seed's own average, stacked like `like`)."""
    counts = set(np.asarray(stats['count']).reshape(-1).tolist())
    if len(counts) != 1:
      raise ValueError(f'the seeds hold different numbers of snapshots {sorted(counts)}: '
                       'they are taken at the same steps, so their statistics were mixed up')
    count = counts.pop()
    if count == 0:
      return None
    if self.window:
      n = min(count, self.window)  # slots 0..n-1 hold the snapshots, in some order
      axis = 1 if seeds else 0
      mean = jax.tree.map(lambda b: jnp.sum(jax.lax.slice_in_dim(b, 0, n, axis=axis), axis) / n,
                          stats['buffer'])
    else:
      mean = stats['mean']
    return jax.tree.map(lambda m, x: m.astype(x.dtype), mean, like)

  def snapshots(self, stats):
    """How many snapshots the statistics hold (each seed the same)."""
    return int(np.max(np.asarray(stats['count'])))


def from_config(avg_cfg, total_steps):
  """The ParamAverage of `config.averaging`, or None when every_steps is 0 (off)."""
  if mode(avg_cfg) == 'off':
    return None
  return ParamAverage(start=int(round(avg_cfg.start_fraction * total_steps)),
                      every=int(avg_cfg.every_steps), window=int(avg_cfg.window))
