"""Local SGD and its relatives over a worker axis sharded on the device mesh.

K workers, each with its own contiguous shard of the training set, its own
parameters and optimizer state (a leading worker axis, K/D workers per device,
vmapped). Every J local steps the parameters (only) are averaged with `pmean`:
  local_sgd   x ← x̄
  slowmo      u ← β·u + (x₀ − x̄)/lr;  x ← x₀ − α·lr·u   (α = 1, β = 0 is local SGD)
  diloco      x ← x₀ + OuterOpt(x₀ − x̄)   (outer Nesterov SGD on the pseudo-gradient;
              the inner optimizer is whatever optim.name says, AdamW in DiLoCo)
  post_local  synchronous averaging after every step until `switch_step`, then every J
x₀ is the parameters at the start of the round (kept in TrainState.extra).
With dynamic_alpha = α > 0 the round length adapts: after each average
H = clip(α·G/(σ² + 1e-6), 4, 64), where, over the round's pseudo-gradients
d_k = x₀ − x_k of the workers, G = ‖mean_k d_k‖² and σ² = mean_k ‖d_k − mean d‖²
(the workers' gradient signal against their disagreement); the next average
is H steps later (TrainState.extra['next_sync'], so a resumed run agrees).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxlab.parallel.mesh import DATA, all_sum

METHODS = ('local_sgd', 'slowmo', 'diloco', 'post_local')


@dataclasses.dataclass(frozen=True)
class LocalSpec:
  workers: int
  sync_every: int = 16
  method: str = 'local_sgd'
  slowmo_alpha: float = 1.0
  slowmo_beta: float = 0.0
  outer_lr: float = 0.7
  outer_momentum: float = 0.9
  outer_nesterov: bool = True
  switch_step: int = 0
  dynamic_alpha: float = 0.0
  dynamic_range: tuple[int, int] = (4, 64)
  # SlowMo's γ: the workers' base learning rate, constant as in the original code (the lr of
  # a cosine schedule is 0 at the end of the run, where u = (x₀ − x̄)/γ would be 0/0).
  inner_lr: float = 1.0

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'unknown local method {self.method!r}; choose one of {", ".join(METHODS)}')
    if self.workers < 1 or self.sync_every < 1:
      raise ValueError('local.workers and local.sync_every must be at least 1')

  def outer_tx(self):
    return optax.sgd(self.outer_lr, momentum=self.outer_momentum or None,
                     nesterov=self.outer_nesterov and bool(self.outer_momentum))

  def averages_after(self, step):
    """Whether the parameters are averaged once `step` steps are done."""
    if self.method == 'post_local' and step <= self.switch_step:
      return True
    return step % self.sync_every == 0

  def next_average(self, step):
    """The first step count after `step` at which an average happens."""
    if self.method == 'post_local' and step < self.switch_step:
      return step + 1
    return (step // self.sync_every + 1) * self.sync_every

  def init_extra(self, params):
    """Outer state for one worker: the round's anchor x₀ and the outer optimizer's state."""
    # rounds: averages so far; synced_at: the step of the last one (both kept by checkpoints).
    extra = {'anchor': params, 'next_sync': jnp.int32(self.sync_every),
             'rounds': jnp.int32(0), 'synced_at': jnp.int32(0)}
    if self.method == 'slowmo':
      extra['slowmo_u'] = jax.tree.map(jnp.zeros_like, params)
    if self.method == 'diloco':
      extra['outer'] = self.outer_tx().init(params)
    return extra


class WorkerIndices:
  """Batch indices [n, K, b]: worker k draws from its contiguous shard, its own order per epoch.

  The shards cover the whole split (sizes differ by at most one); every worker
  takes the same number of steps per epoch, that of the largest shard. Its
  last, partial batch is padded with PAD as in `EpochIndices` (a worker whose
  shard runs out a batch early gets a batch of padding only, and its step is
  then a no-op). With drop_last the shards are equal (n // K each) and each
  worker's partial batch is dropped, as before.
  """

  def __init__(self, key, num_examples, workers, batch_size, drop_last=False):
    from jaxlab.data.pipeline import EpochIndices
    sizes = _shard_sizes(num_examples, workers, drop_last)
    self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    self.steps_per_epoch = worker_steps_per_epoch(num_examples, workers, batch_size, drop_last)
    self.workers = [EpochIndices(jax.random.fold_in(key, k), n, batch_size, drop_last,
                                 steps=self.steps_per_epoch) for k, n in enumerate(sizes)]

  def chunk(self, step, n):
    rows = [w.chunk(step, n) for w in self.workers]
    return np.stack([np.where(r >= 0, start + r, r) for start, r in zip(self.starts, rows)],
                    axis=1).astype(np.int32)


def _shard_sizes(num_examples, workers, drop_last):
  """The workers' contiguous shard sizes: n // K each with drop_last, else the whole split
  (sizes differing by at most one)."""
  if drop_last:
    return [num_examples // workers] * workers
  return [len(a) for a in np.array_split(np.arange(num_examples), workers)]


def worker_steps_per_epoch(num_examples, workers, batch_size, drop_last=False):
  """Steps per epoch of every local-SGD worker: those of the largest shard (see WorkerIndices)."""
  from jaxlab.data.pipeline import steps_per_epoch
  return max(steps_per_epoch(n, batch_size, drop_last)
             for n in _shard_sizes(num_examples, workers, drop_last))


def worker_state(state, workers):
  """K copies of one state: identical parameters, one PRNG key per worker."""
  stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (workers, *x.shape)), state)
  return stacked.replace(rng=jax.vmap(lambda k: jax.random.fold_in(state.rng, k))(
      jnp.arange(workers)))


def make_average(spec, mesh, ordered=True):
  """jit(shard_map): the state with every worker's params set to the round's result.

  The state carries the worker axis, sharded over DATA; the mean over workers
  is a local mean followed by `pmean` across devices. Optimizer states are
  not touched (the parameters only are averaged, as in the original local-SGD code). ordered: the sums over devices
  in device order (mesh.all_sum), the same on any split of the devices into processes.
  """
  def pmean(tree):  # one collective for the whole tree (mesh.all_sum)
    return jax.tree.map(lambda x: x / jax.lax.axis_size(DATA), all_sum(tree, DATA, ordered))

  def average(state):
    k_local = jax.tree.leaves(state.params)[0].shape[0]
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # identical on every worker
    spread = lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (k_local, *x.shape)), tree)
    xbar = pmean(jax.tree.map(lambda x: jnp.mean(x, axis=0), state.params))
    extra = dict(state.extra)
    if spec.dynamic_alpha:
      x0 = first(extra['anchor'])
      signal = sum(jnp.sum(jnp.square(a - b)) for a, b in
                   zip(jax.tree.leaves(x0), jax.tree.leaves(xbar)))  # ‖mean_k d_k‖²
      spread_sq = sum(pmean([jnp.mean(jnp.sum(jnp.square(x - b).reshape(x.shape[0], -1), axis=1))
                             for x, b in zip(jax.tree.leaves(state.params),
                                             jax.tree.leaves(xbar))]))
      lo, hi = spec.dynamic_range
      h = jnp.clip(jnp.round(spec.dynamic_alpha * signal / (spread_sq + 1e-6)), lo, hi)
      extra['next_sync'] = jnp.broadcast_to(state.step[0] + h.astype(jnp.int32), (k_local,))
    if spec.method in ('local_sgd', 'post_local'):
      new = xbar
    elif spec.method == 'slowmo':
      x0, u = first(extra['anchor']), first(extra['slowmo_u'])
      lr = spec.inner_lr
      u = jax.tree.map(lambda u, a, b: spec.slowmo_beta * u + (a - b) / lr, u, x0, xbar)
      new = jax.tree.map(lambda a, u: a - spec.slowmo_alpha * lr * u, x0, u)
      extra['slowmo_u'] = spread(u)
    else:  # diloco
      x0 = first(extra['anchor'])
      pseudo_grad = jax.tree.map(lambda a, b: a - b, x0, xbar)
      updates, outer = spec.outer_tx().update(pseudo_grad, first(extra['outer']), x0)
      new = optax.apply_updates(x0, updates)
      extra['outer'] = spread(outer)
    extra['anchor'] = spread(new)
    extra['rounds'] = extra['rounds'] + 1
    extra['synced_at'] = state.step
    return state.replace(params=spread(new), extra=extra)

  sharded = jax.shard_map(average, mesh=mesh, in_specs=(P(DATA),), out_specs=P(DATA),
                          check_vma=False)
  return jax.jit(sharded, donate_argnums=0)
