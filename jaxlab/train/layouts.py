"""How the models of a run sit on the devices: what the training loop must not know.

Three layouts, one interface, chosen once by `choose(config, task, mesh)`:
  OneModel  one model, state replicated, each global batch split over the devices;
  Replicas  several seeds in one program (a leading seed axis), each with its own data order;
  Workers   local SGD: K workers with their own data shards, parameters and optimizer
            states (a leading worker axis sharded over the devices), averaged every J steps.
The loop asks a layout for the batch indices of a run of steps, where a run of
steps must stop (a workers' average), what to do after it (the average), what the
run hands on at its end (`finish`: the workers' final average, applied after the
last checkpoint so that a longer run resumed from it continues as an uninterrupted
one), which parameters to evaluate, and the fields it adds to the summary. Host-side
counters it keeps (`counters`, e.g. communication time) are saved with every
checkpoint and restored with it.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data.pipeline import EpochIndices
from jaxlab.parallel.local import WorkerIndices, make_average
from jaxlab.parallel.mesh import check_divisible, replicate, shard_leading, to_host
from jaxlab.params import merge, run_keys
from jaxlab.train.state import TrainState


class Layout:
  """One model (the 'data' layout); the base of the others."""
  name = 'data'
  batch_axis = 1  # the axis of a chunk of indices [steps, ...] split over the devices

  def __init__(self, config, task, mesh):
    self.config, self.task, self.mesh = config, task, mesh
    check_divisible(config.train.batch_size, mesh)
    self.seeds = (config.seed,)
    self.counters = {}

  @property
  def copies(self):
    """Models trained together (seeds or workers): their images per step add up."""
    return len(self.seeds)

  def batches(self, num_examples):
    """The batch-index plan of the split (steps_per_epoch, chunk(step, n))."""
    tc = self.config.train
    return EpochIndices(run_keys(self.seeds[0])[1], num_examples, tc.batch_size, tc.drop_last)

  def place(self, tree):
    """A state (or a part of it) on the mesh."""
    return replicate(tree, self.mesh)

  def step_of(self, state):
    return int(np.max(to_host(state.step)))

  def stop_before(self, state, step, stop):
    """The end of the run of steps from `step`: `stop`, or earlier where the layout must act."""
    del state, step
    return stop

  def acts_after(self, state, step, first, end):
    """Whether the layout acts (`after`, which the loop calls only then) once the steps
    first..step (of `end`) ran."""
    del state, step, first, end
    return False

  def after(self, state, step, first, end):
    """The state after the steps first..step (of `end`) ran; called where `acts_after` is true."""
    del step, first, end
    return state

  def finish(self, state, step):
    """What a run that ends at `step` hands on (evaluates, returns), from the state its last
    checkpoint holds."""
    del step
    return state

  @property
  def frozen_copies(self):
    """Copies of the frozen parameters the state holds: one per model, or one shared."""
    return self.copies

  def eval_params(self, params, frozen):
    """The whole parameters the evaluation applies (trainable and frozen merged)."""
    return merge(params, frozen)

  def summary(self, state, compute_time):
    del state, compute_time
    return {}


class Replicas(Layout):
  """Seeds in one program (a loop over them, or vmap: Task.seed_loop): each seed its own data
  order; every seed's batch split over devices."""
  name = 'replicas'
  batch_axis = 2

  def __init__(self, config, task, mesh):
    super().__init__(config, task, mesh)
    self.seeds = tuple(task.seeds)
    # The state's frozen parameters: stacked per seed (axis 0), or, where every seed's are the
    # same (PEFT's pretrained backbone), one copy every seed reads (None: no seed axis).
    # build_setup decides, from the parameters.
    self.frozen_axis = 0

  @property
  def state_axes(self):
    """The seed axes of the state's parts: a leading seed axis on all but a shared backbone."""
    return TrainState(step=0, params=0, frozen=self.frozen_axis, opt_state=0, rng=0, extra=0)

  @property
  def frozen_copies(self):
    return 1 if self.frozen_axis is None else self.copies

  def eval_params(self, params, frozen):
    if self.frozen_axis is None:  # each seed's model reads the one shared copy
      n = len(self.seeds)
      frozen = self.place(jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), frozen))
    return merge(params, frozen)

  def batches(self, num_examples):
    tc = self.config.train
    return _Stacked([EpochIndices(run_keys(s)[1], num_examples, tc.batch_size, tc.drop_last)
                     for s in self.seeds])


class _Stacked:
  """Several seeds' batch plans as one: indices [n, seeds, B]."""

  def __init__(self, plans):
    self.plans = plans
    self.steps_per_epoch = plans[0].steps_per_epoch

  def chunk(self, step, n):
    return np.stack([p.chunk(step, n) for p in self.plans], axis=1)


class Workers(Layout):
  """Local SGD and its relatives: parameters averaged every J steps (or as the method says)."""
  name = 'workers'

  def __init__(self, config, task, mesh):
    self.config, self.task, self.mesh = config, task, mesh
    self.spec = task.workers
    check_divisible(self.spec.workers, mesh, 'the number of local workers')
    self.seeds = (config.seed,)
    self._average = None
    self.counters = {'comm_time_s': 0.0}

  @property
  def copies(self):
    return self.spec.workers

  def batches(self, num_examples):
    tc = self.config.train
    return WorkerIndices(run_keys(self.seeds[0])[1], num_examples, self.spec.workers, tc.batch_size, tc.drop_last,
                         spec=self.spec)

  def place(self, tree):
    return shard_leading(tree, self.mesh)

  def next_sync(self, state, step):
    """The step count of the next parameter average after `step`."""
    if self.spec.dynamic_alpha:
      return max(int(np.max(to_host(state.extra['next_sync']))), step + 1)
    return self.spec.next_average(step)

  def stop_before(self, state, step, stop):
    return min(stop, self.next_sync(state, step))

  def acts_after(self, state, step, first, end):
    del end
    return step == self.next_sync(state, first)

  def after(self, state, step, first, end):
    del step, first, end  # the loop asked acts_after: the round ends here
    if self._average is None:
      self._average = make_average(self.spec, self.mesh, ordered_sums(self.config))
    t0 = time.perf_counter()
    state = jax.block_until_ready(self._average(state))
    self.counters['comm_time_s'] += time.perf_counter() - t0
    return state

  def finish(self, state, step):
    # The run ends as one model: a last average unless the round ended at this very step.
    if int(np.max(to_host(state.extra['synced_at']))) == step:
      return state
    return self.after(state, step, step, step)

  def eval_params(self, params, frozen):
    # The workers' mean (their common value right after an average).
    return jax.tree.map(lambda x: x.mean(axis=0), merge(params, frozen))

  def summary(self, state, compute_time):
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    return {
        'workers': self.spec.workers, 'sync_every': self.spec.sync_every,
        'method': self.spec.method,
        # Computation (the local steps, incl. the first dispatch of each shape) and
        # communication (the parameter averages) measured apart.
        'compute_time_s': compute_time, 'comm_time_s': self.counters['comm_time_s'],
        'comm_rounds': int(np.max(to_host(state.extra['rounds']))),
        # Each worker sends and receives its parameters once per round (an all-reduce).
        'comm_bytes_per_round_per_worker': int(param_bytes // self.spec.workers)}


def ordered_sums(config):
  """distributed.ordered_sums (default on): device sums in device order (mesh.all_sum)."""
  return bool(config.get('distributed', {}).get('ordered_sums', True))


def choose(config, task, mesh):
  """The layout `task` asks for: Workers (task.workers), Replicas (task.seeds) or one model."""
  if task.workers is not None:
    return Workers(config, task, mesh)
  if task.seeds is not None:
    return Replicas(config, task, mesh)
  return Layout(config, task, mesh)
