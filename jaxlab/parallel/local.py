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
With dynamic_alpha = α > 0 the round length adapts: after each average the next
round lasts H steps (TrainState.extra['next_sync'], so a resumed run agrees), the
first one sync_every. dynamic_form says how H is computed:
  original  the original code's (lucavgn/AML_Project5, Personal_contribution/
            DynamicSGD_alpha_500.ipynb, compute_gradient_stats and update_H): over the
            workers' gradients g_k of their last local step (the loss gradient, before
            weight decay), σ² = Σ_k‖g_k‖²/(K − 1) − K/(K − 1)·‖ḡ‖² (the unbiased variance
            summed over coordinates), G = ‖ḡ‖² − σ²/K and
            H = int(min(64, max(4, α·G/(σ² + 1e-6)))) (truncated); needs K ≥ 2 and an
            optimizer built with record_last_grads (optim.record_last_grads).
  pseudo    over the round's pseudo-gradients d_k = x₀ − x_k: G = ‖mean_k d_k‖²,
            σ² = mean_k ‖d_k − mean d‖², H = clip(round(α·G/(σ² + 1e-6)), 4, 64).

Each worker's batches (worker_data):
  original  as the original code's loaders (Distributed_LocalSGD*.ipynb): worker k owns
            the contiguous shard [k·n//K, (k+1)·n//K) and one DataLoader over it (shuffled,
            the last batch partial), restarted with a new order whenever it runs out and
            never at an epoch boundary; an epoch is ⌈⌈n/B⌉/(K·J)⌉ rounds of J steps
            (⌈⌈n/B⌉/K⌉ steps with dynamic rounds).
  epoch     one pass of each worker over its shard per epoch (shards covering the split).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxlab.parallel.mesh import DATA, all_sum

_EVERY_METHOD = ('workers', 'sync_every', 'dynamic_alpha', 'dynamic_form', 'worker_data')
# The local.* fields each method reads (through LocalSpec: run_round and the worker batches).
METHOD_READS = {
    'local_sgd': _EVERY_METHOD,
    'slowmo': _EVERY_METHOD + ('slowmo_alpha', 'slowmo_beta', 'slowmo_lr'),
    'diloco': _EVERY_METHOD + ('outer_lr', 'outer_momentum'),
    'post_local': _EVERY_METHOD + ('switch_epochs',),
}
METHODS = tuple(METHOD_READS)
DYNAMIC_FORMS = ('original', 'pseudo')
WORKER_DATA = ('original', 'epoch')


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
  # SlowMo's γ: inner_lr, or with inner_schedule (step → lr) the workers' lr at the round's
  # last step, as the original code (Distributed_LocalSGD_SlowMo.ipynb) reads the optimizer's
  # current lr (a cosine schedule stepped per epoch). Where that lr is 0, u keeps its old value.
  inner_lr: float = 1.0
  inner_schedule: Any = None
  dynamic_form: str = 'original'
  worker_data: str = 'epoch'

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'unknown local method {self.method!r}; choose one of {", ".join(METHODS)}')
    if self.workers < 1 or self.sync_every < 1:
      raise ValueError('local.workers and local.sync_every must be at least 1')
    if self.dynamic_form not in DYNAMIC_FORMS:
      raise ValueError(f'unknown dynamic_form {self.dynamic_form!r}; choose one of '
                       f'{", ".join(DYNAMIC_FORMS)}')
    if self.worker_data not in WORKER_DATA:
      raise ValueError(f'unknown worker_data {self.worker_data!r}; choose one of '
                       f'{", ".join(WORKER_DATA)}')
    if self.dynamic_alpha and self.dynamic_form == 'original' and self.workers < 2:
      raise ValueError("the original dynamic rounds need at least 2 workers (σ² divides by K − 1)")

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


def last_grads(opt_state):
  """The gradients the optimizer saw at its last update, from its `LastGrads` state
  (optimizers built with record_last_grads), one tree per parameter group, in tree order."""
  from jaxlab.optim.optimizers import LastGrads
  found = [x.grads for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, LastGrads))
           if isinstance(x, LastGrads)]
  if not found:
    raise ValueError('the original dynamic rounds need the workers\' last gradients: build the '
                     'optimizer with record_last_grads=True (optim.record_last_grads)')
  return jax.tree.leaves(found)


def original_rounds_h(grads, workers, alpha, lo, hi, eps=1e-6, total=lambda x: x):
  """H of the original code's update_H over `grads` (leaves with a leading axis of this
  device's workers); `total` sums over the devices. Returns (H, G, σ²)."""
  sq_norms = sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1).sum() for g in grads)
  sums = [jnp.sum(g, axis=0) for g in grads]
  sq_norms, sums = total((sq_norms, sums))
  avg_sq = sum(jnp.sum(jnp.square(s / workers)) for s in sums)  # ‖ḡ‖²
  sigma_sq = sq_norms / (workers - 1) - workers / (workers - 1) * avg_sq
  g = avg_sq - sigma_sq / workers
  h = jnp.floor(jnp.clip(alpha * g / (sigma_sq + eps), lo, hi))  # int() of a value ≥ lo > 0
  return h, g, sigma_sq


class WorkerIndices:
  """Batch indices [n, K, b]: worker k draws from its contiguous shard, its own order per epoch.

  The shards cover the whole split (sizes differ by at most one); every worker
  takes the same number of steps per epoch, that of the largest shard. Its
  last, partial batch is padded with PAD as in `EpochIndices` (a worker whose
  shard runs out a batch early gets a batch of padding only, and its step is
  then a no-op). With drop_last the shards are equal (n // K each) and each
  worker's partial batch is dropped, as before.
  """

  def __init__(self, key, num_examples, workers, batch_size, drop_last=False, spec=None):
    from jaxlab.data.pipeline import EpochIndices
    self.stream = spec is not None and spec.worker_data == 'original'
    if self.stream:  # the original loaders (module docstring): n // K each, their own passes
      sizes = [num_examples // workers] * workers
    else:
      sizes = _shard_sizes(num_examples, workers, drop_last)
    self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    self.steps_per_epoch = worker_steps_per_epoch(num_examples, workers, batch_size, drop_last,
                                                  spec)
    self.workers = [EpochIndices(jax.random.fold_in(key, k), n, batch_size, drop_last,
                                 steps=None if self.stream else self.steps_per_epoch)
                    for k, n in enumerate(sizes)]

  def _rows(self, w, step, n):
    if not self.stream:
      return w.chunk(step, n)
    parts, end = [], step + n  # a worker's own passes need not line up with the epochs
    while step < end:
      m = min(end - step, w.steps_per_epoch - step % w.steps_per_epoch)
      parts.append(w.chunk(step, m))
      step += m
    return np.concatenate(parts)

  def chunk(self, step, n):
    rows = [self._rows(w, step, n) for w in self.workers]
    return np.stack([np.where(r >= 0, start + r, r) for start, r in zip(self.starts, rows)],
                    axis=1).astype(np.int32)


def _shard_sizes(num_examples, workers, drop_last):
  """The workers' contiguous shard sizes: n // K each with drop_last, else the whole split
  (sizes differing by at most one)."""
  if drop_last:
    return [num_examples // workers] * workers
  return [len(a) for a in np.array_split(np.arange(num_examples), workers)]


def worker_steps_per_epoch(num_examples, workers, batch_size, drop_last=False, spec=None):
  """Steps per epoch of every local-SGD worker. worker_data 'epoch' (or no spec): those of the
  largest shard. 'original': J·⌈⌈n/B⌉/(K·J)⌉, the original code's ⌈782/(K·J)⌉ rounds of J
  steps on CIFAR's 50,000 images at B = 64 (Distributed_LocalSGD.ipynb); ⌈⌈n/B⌉/K⌉ with
  dynamic rounds (see WorkerIndices)."""
  from jaxlab.data.pipeline import steps_per_epoch
  if spec is not None and spec.worker_data == 'original':
    global_steps = steps_per_epoch(num_examples, batch_size, drop_last)  # 782 for CIFAR at 64
    per_round = workers * (1 if spec.dynamic_alpha else spec.sync_every)
    return -(-global_steps // per_round) * per_round // workers
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
    if spec.dynamic_alpha and spec.dynamic_form == 'original':
      lo, hi = spec.dynamic_range
      h, _, _ = original_rounds_h(last_grads(state.opt_state), spec.workers, spec.dynamic_alpha,
                                  lo, hi, total=lambda t: all_sum(t, DATA, ordered))
      extra['next_sync'] = jnp.broadcast_to(state.step[0] + h.astype(jnp.int32), (k_local,))
    elif spec.dynamic_alpha:
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
      if spec.inner_schedule is None:
        lr = jnp.float32(spec.inner_lr)
      else:
        lr = jnp.asarray(spec.inner_schedule(state.step[0] - 1), jnp.float32)
      safe = jnp.where(lr > 0, lr, 1.0)
      u = jax.tree.map(lambda u, a, b: jnp.where(lr > 0, spec.slowmo_beta * u + (a - b) / safe, u),
                       u, x0, xbar)
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
