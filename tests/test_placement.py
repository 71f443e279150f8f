"""data.placement: streamed batches train to the same parameters as the device-resident split,
on the digits and on a CIFAR read lazily through tfds.data_source (tfds.testing.mock_data)."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxlab.data.datasets import load_dataset
from jaxlab.experiments.distributed import local_spec, make_task
from jaxlab.parallel.local import worker_steps_per_epoch
from jaxlab.parallel.mesh import make_mesh
from jaxlab.params import flatten
from jaxlab.train.loop import fit
from tests.test_trainer import small_digits, tiny_config  # noqa: F401  (fixture)


def train(config, workdir, dataset, mesh):
  workers = None
  if config.local.method != 'none':
    spe = worker_steps_per_epoch(len(dataset.train.labels), config.local.workers,
                                 config.train.batch_size)
    workers = local_spec(config, spe)
  task = make_task(config, dataset.num_classes, (32, 32, 3), workers)
  summary, state = fit(config, str(workdir), task, dataset, mesh=mesh)
  return summary, {k: np.asarray(v) for k, v in flatten(jax.device_get(state.params)).items()}


def local_config(method, **train_fields):
  c = tiny_config(**train_fields)
  # The library convolution: XLA:CPU compiles the patch convolution's gradient sums into
  # different orders in the two programs on some CPUs (AVX2 without AVX-512: last-bit
  # differences), which is no property of the placement under test.
  c.model.conv_impl = 'xla'
  c.local = ml_collections.ConfigDict(dict(
      method=method, workers=4, sync_every=2, slowmo_alpha=1.0, slowmo_beta=0.0, outer_lr=0.7,
      outer_momentum=0.9, switch_epochs=0.0, dynamic_alpha=0.0))
  return c


def assert_same(a, b):
  (sa, pa), (sb, pb) = a, b
  assert pa.keys() == pb.keys()
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
  for key in ('acc1', 'nll', 'ece', 'steps'):
    assert sa[key] == sb[key], key


@pytest.mark.parametrize('method', ['none', 'local_sgd'])
def test_stream_equals_device_on_digits(tmp_path, small_digits, method):
  c = local_config(method, epochs=1, steps_per_dispatch=2)  # 4 steps, chunks of 2
  mesh = make_mesh(jax.devices()[:4])
  device = train(c, tmp_path / 'device', small_digits, mesh)
  streamed = dataclasses.replace(small_digits, placement='stream')
  stream = train(c, tmp_path / 'stream', streamed, mesh)
  assert device[0]['data_placement'] == 'device' and stream[0]['data_placement'] == 'stream'
  assert_same(device, stream)
  init = flatten(make_task(c, 10, (32, 32, 3)).params)
  assert any(not np.array_equal(device[1][k], np.asarray(init[k])) for k in init)


def test_stream_equals_device_on_tfds_cifar(tmp_path):
  c = local_config('none', epochs=1)
  c.data.update(name='cifar10', source='tfds')
  mesh = make_mesh(jax.devices()[:2])
  # mock_data stays active while training: the streamed split is read record by record from
  # the prefetch threads.
  with tfds.testing.mock_data(num_examples=40):
    c.data.placement = 'stream'
    lazy = load_dataset(c.data)
    assert lazy.placement == 'stream' and lazy.train.lazy
    stream = train(c, tmp_path / 'stream', lazy, mesh)
    c.data.placement = 'device'
    resident = load_dataset(c.data)
    assert resident.placement == 'device' and not resident.train.lazy
    device = train(c, tmp_path / 'device', resident, mesh)
  assert stream[0]['data_placement'] == 'stream' and stream[0]['steps'] == 3  # 40 / 16
  assert_same(device, stream)


def test_place_batch_reads_each_devices_rows_once_and_equals_the_gather(small_digits):
  from jaxlab.train.feeds import place_batch
  from jaxlab.train.step import gather

  class Counting:  # a lazy split that counts its reads (a streamed TFDS split decodes on each)
    def __init__(self, images):
      self.images, self.shape, self.dtype, self.reads = images, images.shape, images.dtype, []

    def __getitem__(self, index):
      self.reads.append(np.asarray(index))
      return self.images[index]

  images = Counting(small_digits.train.images)
  idx = np.array([5, 0, 63, 7, 12, -1, 3, -1], np.int32)
  mesh = make_mesh(jax.devices()[:4])
  placed = place_batch(images, small_digits.train.labels, idx, mesh, 0)
  # One read per device's two rows; a padding row (-1) reads example 0.
  assert sorted(tuple(map(int, r)) for r in images.reads) == [(3, 0), (5, 0), (12, 0), (63, 7)]
  want = gather({'image': small_digits.train.images, 'label': small_digits.train.labels}, idx)
  for key in want:
    np.testing.assert_array_equal(np.asarray(placed[key]), np.asarray(want[key]), err_msg=key)
    assert placed[key].sharding.spec[0] == 'data'


def test_ordered_sum_holds_a_slice_of_each_device_not_every_gradient():
  """distributed.ordered_sums: the devices' vectors added in device order, as gathering them
  all and summing did (the same bits), with a fraction of the memory: XLA's memory analysis of
  the 8-device program (each device holds 1/D of every device's vector, not D vectors)."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from jaxlab.parallel.mesh import DATA, all_sum
  devices = jax.devices()[:8]
  mesh = Mesh(np.array(devices), (DATA,))
  n = 100_003  # not a multiple of 8: the slices are padded
  spec = NamedSharding(mesh, P(DATA))
  gathered = lambda x: jnp.sum(jax.lax.all_gather(x, DATA), axis=0)
  programs = {name: jax.jit(jax.shard_map(f, mesh=mesh, in_specs=P(DATA), out_specs=P(),
                                          check_vma=False))
              for name, f in (('ordered', lambda x: all_sum({'g': x}, DATA)['g']),
                              ('gathered', gathered))}
  x = jax.device_put(np.random.default_rng(0).standard_normal(8 * n).astype(np.float32), spec)
  got, want = (np.asarray(programs[k](x)) for k in ('ordered', 'gathered'))
  np.testing.assert_array_equal(got, want)
  temp = {k: p.lower(x).compile().memory_analysis().temp_size_in_bytes
          for k, p in programs.items()}
  assert temp['gathered'] >= 8 * n * 4 > 4 * n * 4 >= temp['ordered'], temp
