"""A one-axis device mesh for data parallelism, and placement helpers.

One code path serves one device and many: with a single device the mesh has
one entry and the collectives are no-ops.
"""

import jax
import jax.numpy as jnp
import numpy as np
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


def replicate(tree, mesh):
  """Copies of every leaf on every device of the mesh.

  Always fresh buffers (never aliases of the input), so that donating the
  result to a jitted step cannot delete arrays the caller still holds. (An
  explicit copy: with several devices, jax 0.10's device_put(may_alias=False)
  still reuses the input's buffer for the first device.)
  """
  copied = jax.tree.map(lambda x: jnp.array(x, copy=True), tree)
  return jax.device_put(copied, NamedSharding(mesh, P()))


def shard_leading(tree, mesh, axis=0):
  """Split each leaf's dimension `axis` over the mesh's 'data' axis."""
  spec = P(*([None] * axis + [DATA]))
  return jax.device_put(tree, NamedSharding(mesh, spec))
