"""Where a run's data sits (data.placement) and how each step's batch reaches the step.

  device  the whole split on every device as uint8; a run of steps is handed its batch
          indices and gathers the images inside the compiled step (`step.gather`);
  stream  the host gathers each step's uint8 batch and puts it on the mesh, on background
          threads, `data.prefetch` steps ahead; augmentation still runs in the step.
Both hand the compiled step the same images for the same indices, so they train to the
same parameters. In a multi-process run each process gathers and places only the rows its
own devices hold.
"""


import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxlab.parallel.mesh import DATA, replicate, shard_leading


def _stream():
  from jaxlab.data import stream  # only when streaming: it imports grain
  return stream


class DeviceFeed:
  """data.placement=device: the splits replicated on every device; batches are indices."""
  placement = 'device'

  def __init__(self, dataset, mesh, plan, batch_axis):
    self.mesh, self.plan, self.batch_axis = mesh, plan, batch_axis
    train, test = dataset.train.materialize(), dataset.test.materialize()
    self.train = replicate({'image': train.images, 'label': train.labels}, mesh)
    self.test = replicate({'image': test.images, 'label': test.labels}, mesh)

  def chunk(self, step, n):
    """What the compiled run of steps step..step+n-1 reads beside the split: their indices."""
    return shard_leading(self.plan.chunk(step, n), self.mesh, axis=self.batch_axis)

  def first(self, chunk):
    """The first step's part of `chunk`."""
    return jax.tree.map(lambda x: x[0], chunk)

  def eval_ref(self, idx):
    return shard_leading(idx, self.mesh)

  def close(self):
    pass


def place_batch(images, labels, idx, mesh, axis):
  """The batch of host indices `idx` (dimension `axis` split over the mesh) as global arrays:
  each process gathers only the rows of its own devices."""
  spec = P(*([None] * axis + [DATA]))
  sharding = NamedSharding(mesh, spec)

  gathered = {}  # one host gather per device slice, shared by its image, label and weight

  def part(key):
    def fetch(index):
      rows = index[:idx.ndim]
      slot = tuple((r.start, r.stop, r.step) for r in rows)
      if slot not in gathered:
        gathered[slot] = _stream().host_batch(images, labels, idx[rows])
      return gathered[slot][key]
    return fetch

  shapes = {'image': (*idx.shape, *images.shape[1:]), 'label': idx.shape, 'weight': idx.shape}
  return {k: jax.make_array_from_callback(shape, sharding, part(k)) for k, shape in shapes.items()}


class StreamFeed:
  """data.placement=stream: each step's batch gathered by the host, placed on background
  threads `depth` steps ahead; the splits never sit on the devices whole."""
  placement = 'stream'

  def __init__(self, dataset, mesh, plan, batch_axis, start, end, depth=2):
    self.mesh, self.plan, self.batch_axis = mesh, plan, batch_axis
    self.dataset = dataset
    self.train, self.test = {}, {}
    self.prefetch = _stream().StepPrefetcher(self._make, start, end, depth=max(int(depth), 2))

  def _make(self, step):
    """Step `step`'s batch on the mesh (on a prefetch thread: the transfer finishes there)."""
    idx = self.plan.chunk(step, 1)[0]
    return jax.block_until_ready(place_batch(
        self.dataset.train.images, self.dataset.train.labels, idx, self.mesh,
        self.batch_axis - 1))

  def chunk(self, step, n):
    """The batches of steps step..step+n-1, one per step (the compiled chunk stacks them)."""
    return tuple(self.prefetch.get(s) for s in range(step, step + n))

  def first(self, chunk):
    return chunk[0]

  def eval_ref(self, idx):
    return place_batch(self.dataset.test.images, self.dataset.test.labels, idx, self.mesh, 0)

  def close(self):
    self.prefetch.close()


def make(data_cfg, dataset, mesh, plan, batch_axis, start, end, steps_per_dispatch=1,
         log=print):
  """The feed of `dataset` for the batch plan `plan` (indices [steps, ...] split over the mesh on
  `batch_axis`) from step `start` to `end`, at the placement `load_dataset` resolved from
  data.placement. Streamed batches are prepared data.prefetch steps ahead, and at least one
  dispatch's worth (the next run of steps is ready when the current one ends)."""
  placement = getattr(dataset, 'placement', 'device')
  if jax.process_count() > 1:  # hosts may differ in memory: all stream if any must
    from jax.experimental import multihost_utils
    votes = multihost_utils.process_allgather(np.int32(placement == 'stream'))
    placement = 'stream' if np.max(votes) else 'device'
  if placement == 'stream':
    if getattr(dataset, 'placement_reason', ''):
      log(dataset.placement_reason)
    depth = max(getattr(data_cfg, 'prefetch', 2), steps_per_dispatch)
    return StreamFeed(dataset, mesh, plan, batch_axis, start, end, depth)
  return DeviceFeed(dataset, mesh, plan, batch_axis)
