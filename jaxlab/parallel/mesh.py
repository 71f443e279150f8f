"""A one-axis device mesh for data parallelism, and placement helpers.

One code path serves one device and many, one process and many: with a single
device the mesh has one entry and the collectives are no-ops; with several
processes (jax.distributed) the mesh spans every process's devices, each
process places only the shards its own devices hold, and `to_host` fetches a
global array whichever process holds its parts.
"""

import functools

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


def make_mesh(devices=None):
  """A mesh over `devices` (default: every device of every process) with axis 'data'."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA,))


def check_divisible(batch_size, mesh, what='batch size'):
  """Raise unless `batch_size` splits evenly over the mesh's devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f'{what} {batch_size} is not divisible by the {n} devices of the mesh; '
        f'choose a multiple of {n} (e.g. --config.train.batch_size={max(n, batch_size // n * n)}).')


def place(tree, mesh, spec=P()):
  """Each leaf on the mesh as `spec` says, from a host value every process holds in full.

  Each process copies in only the parts its own devices hold
  (`make_array_from_callback`), so this is the same call on one process or
  many. The result never aliases the input's buffers, so that donating it to
  a jitted step cannot delete arrays the caller still holds. A leaf already
  spread over several processes is resharded on the devices.
  """
  sharding = NamedSharding(mesh, spec)

  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: np.array(host[index], copy=True))
  return jax.tree.map(put, tree)


def replicate(tree, mesh):
  """Copies of every leaf on every device of the mesh (see `place`)."""
  return place(tree, mesh, P())


def shard_leading(tree, mesh, axis=0):
  """Split each leaf's dimension `axis` over the mesh's 'data' axis (see `place`)."""
  return place(tree, mesh, P(*([None] * axis + [DATA])))


def ordered_sum(x, axis_name):
  """The sum over the devices of `axis_name` of the vector `x`, added in device order on the
  1/D slice each device owns (all_to_all), then gathered: all_sum's ordered reduction."""
  d = jax.lax.axis_size(axis_name)
  n = x.shape[0]
  parts = jax.numpy.pad(x, (0, (-n) % d)).reshape(d, -1)
  mine = jax.lax.all_to_all(parts, axis_name, 0, 0)  # [D, n/D]: my slice of each device's
  return jax.lax.all_gather(jax.numpy.sum(mine, axis=0), axis_name, tiled=True)[:n]


def all_sum(tree, axis_name, ordered=True):
  """The sum of `tree` over the devices of `axis_name` (inside shard_map).

  ordered=True adds the devices' values in device order: the rounding is then the same however
  the devices are split into processes, so one process with four devices and two processes with
  two give bit-identical runs. It goes as a reduce-scatter written out: each device receives its
  1/D slice of every device's vector (all_to_all, in device order), sums them, and the summed
  slices are gathered. Each device holds about three vectors' worth, not D as gathering whole
  vectors would (measured, XLA's memory analysis of an 8-device sum of 5M float32: 36 MiB of
  temporaries in place of 153 MiB, the same bits). A plain psum leaves the order to the
  collective's implementation (in-process, or gloo/NCCL across processes): the least memory
  and traffic, the same result up to float rounding.

  The leaves go as one flat vector per dtype, so a tree costs one collective per dtype and not
  one per leaf (each is a rendezvous of the devices: on simulated CPU devices, the bulk of
  the time of a small model's sum). Elementwise, the result is the same as leaf by leaf.
  """
  reduce = functools.partial(ordered_sum, axis_name=axis_name) if ordered else (
      lambda x: jax.lax.psum(x, axis_name))
  leaves, treedef = jax.tree.flatten(tree)
  out = list(leaves)
  for dtype in sorted({x.dtype for x in leaves}, key=str):  # the same order in every process
    which = [i for i, x in enumerate(leaves) if x.dtype == dtype]
    flat = reduce(jax.numpy.concatenate([jax.numpy.ravel(leaves[i]) for i in which]))
    start = 0
    for i in which:
      size = leaves[i].size
      out[i] = flat[start:start + size].reshape(leaves[i].shape)
      start += size
  return jax.tree.unflatten(treedef, out)


def to_host(tree):
  """numpy copies of the leaves: fetched directly when this process holds all of a leaf (or a
  full replica), else gathered from every process (all processes must call it together)."""
  def get(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)

