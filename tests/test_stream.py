"""Tests of jaxlab.data.stream: host gather, step prefetcher, lazy TFDS images, placement."""

import threading
import time

import jax
import ml_collections
import numpy as np
import pytest

from jaxlab.data import datasets
from jaxlab.data import stream
from jaxlab.data.pipeline import PAD
from jaxlab.train import step as step_lib

tfds = pytest.importorskip('tensorflow_datasets')

_WAIT = 10.0  # seconds to wait for a background event before failing


# ----------------------------------------------------------------------------
# Shared fixtures.


@pytest.fixture(name='arrays', scope='module')
def _arrays():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (11, 5, 6, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 11).astype(np.int32)
  return images, labels


@pytest.fixture(name='device_gather', scope='module')
def _device_gather():
  return jax.jit(step_lib.gather)


def _cfg(**overrides) -> ml_collections.ConfigDict:
  fields = dict(name='digits', source='tfds', dir='', tfds_dir='', label='fine',
                validation_fraction=0.0, split_seed=0)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


class TinyStreamImages(tfds.core.GeneratorBasedBuilder):
  """A real (not mocked) TFDS data set in array_record format: 32x32x3 PNGs, 10 classes."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(32, 32, 3)),
        'label': tfds.features.ClassLabel(num_classes=10),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(13, 0), 'test': self._generate_examples(4, 1)}

  def _generate_examples(self, num, seed):
    from PIL import Image  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(seed)
    for i in range(num):
      image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      # A PIL image is encoded with PIL: building needs no TensorFlow.
      yield i, {'image': Image.fromarray(image), 'label': int(rng.integers(10))}


@pytest.fixture(name='tiny_tfds', scope='module')
def _tiny_tfds(tmp_path_factory):
  """(data_dir, train images as TFDS reads them, their labels)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  TinyStreamImages(data_dir=data_dir, file_format='array_record').download_and_prepare()
  source = tfds.data_source('tiny_stream_images', split='train', data_dir=data_dir,
                            download=False)
  examples = [source[i] for i in range(len(source))]
  return (data_dir, np.stack([ex['image'] for ex in examples]),
          np.array([ex['label'] for ex in examples], np.int32))


# ----------------------------------------------------------------------------
# host_batch == step.gather, bit for bit.


@pytest.mark.parametrize('idx', [
    np.array([3, PAD, 0, 10, PAD, 7, 7]),
    np.array([[1, 2, 3, 4], [5, 6, PAD, PAD], [0, 9, 8, PAD]]),
    np.array([[[2, PAD, 4], [10, 0, 1]], [[PAD, PAD, PAD], [6, 6, 5]]]),
], ids=['1d', '2d', '3d'])
def test_host_batch_matches_device_gather(arrays, device_gather, idx):
  images, labels = arrays
  idx = idx.astype(np.int32)
  host = stream.host_batch(images, labels, idx)
  device = jax.device_get(device_gather({'image': images, 'label': labels}, idx))
  assert set(host) == set(device) == {'image', 'label', 'weight'}
  for key in host:
    assert host[key].dtype == device[key].dtype, key
    assert host[key].shape == device[key].shape, key
    np.testing.assert_array_equal(host[key], device[key])
  assert host['image'].shape == (*idx.shape, 5, 6, 3)
  np.testing.assert_array_equal(host['weight'], (idx >= 0).astype(np.float32))
  np.testing.assert_array_equal(host['image'][idx < 0], np.broadcast_to(
      images[0], host['image'][idx < 0].shape))


def test_host_batch_copies(arrays):
  images, labels = arrays
  batch = stream.host_batch(images, labels, np.array([0, 1]))
  batch['image'][:] = 0
  assert images[0].any()


# ----------------------------------------------------------------------------
# StepPrefetcher.


class _Recorder:
  """make(step) that records which step ran on which thread; optionally blocks."""

  def __init__(self, fail_at=(), gate_from=None):
    self.lock = threading.Lock()
    self.calls = []  # (step, thread)
    self.started = {}
    self.fail_at = set(fail_at)
    self.gate = threading.Event()
    self.gate_from = gate_from  # steps >= this wait for `gate`

  def event(self, step):
    with self.lock:
      return self.started.setdefault(step, threading.Event())

  def __call__(self, step):
    with self.lock:
      self.calls.append((step, threading.current_thread()))
    self.event(step).set()
    if self.gate_from is not None and step >= self.gate_from:
      assert self.gate.wait(_WAIT)
    if step in self.fail_at:
      raise ValueError(f'bad step {step}')
    return {'step': step, 'square': step * step}

  @property
  def steps(self):
    with self.lock:
      return [s for s, _ in self.calls]


def test_prefetcher_returns_steps_in_order():
  make = _Recorder()
  with stream.StepPrefetcher(make, 0, 10, depth=2) as prefetcher:
    got = [prefetcher.get(s) for s in range(10)]
    with pytest.raises(IndexError, match='beyond'):
      prefetcher.get(10)
  assert got == [{'step': s, 'square': s * s} for s in range(10)]
  assert max(make.steps) == 9  # steps at or beyond `end` are never made
  assert sorted(make.steps) == list(range(10))  # each step made once


def test_prefetcher_runs_ahead_on_background_threads():
  make = _Recorder(gate_from=1)  # steps 1.. block until the gate opens
  main = threading.current_thread()
  with stream.StepPrefetcher(make, 0, 100, depth=3, threads=3) as prefetcher:
    assert prefetcher.get(0)['step'] == 0
    # get(0) returned while steps 1..3 are all being made, concurrently, elsewhere.
    for s in (1, 2, 3):
      assert make.event(s).wait(_WAIT), f'step {s} was not started ahead'
    time.sleep(0.1)
    assert sorted(make.steps) == [0, 1, 2, 3]  # no further than depth ahead
    assert all(thread is not main for _, thread in make.calls)
    make.gate.set()
    assert prefetcher.get(1)['step'] == 1
    assert make.event(4).wait(_WAIT)  # the window moved on
    time.sleep(0.1)
    assert max(make.steps) == 4


def test_prefetcher_depth_zero_is_synchronous():
  make = _Recorder()
  with stream.StepPrefetcher(make, 0, 5, depth=0) as prefetcher:
    assert [prefetcher.get(s)['step'] for s in range(3)] == [0, 1, 2]
  assert make.steps == [0, 1, 2]
  assert all(t is threading.current_thread() for _, t in make.calls)


def test_prefetcher_restarts_out_of_order():
  make = _Recorder()
  with stream.StepPrefetcher(make, 0, 20, depth=2) as prefetcher:
    assert prefetcher.get(0)['step'] == 0
    assert prefetcher.get(1)['step'] == 1
    assert prefetcher.get(7)['step'] == 7  # a resume further on
    assert prefetcher.get(8)['step'] == 8
    assert prefetcher.get(3)['step'] == 3  # and back
    assert prefetcher.get(4)['step'] == 4
    assert make.event(6).wait(_WAIT)  # prefetching again from the new place


def test_prefetcher_starts_where_told():
  make = _Recorder()
  with stream.StepPrefetcher(make, 5, 8, depth=2) as prefetcher:
    assert make.event(6).wait(_WAIT)  # started before the first get
    assert [prefetcher.get(s)['step'] for s in (5, 6, 7)] == [5, 6, 7]
  assert sorted(make.steps) == [5, 6, 7]


def test_prefetcher_propagates_errors():
  make = _Recorder(fail_at={2})
  with stream.StepPrefetcher(make, 0, 6, depth=2) as prefetcher:
    assert prefetcher.get(1)['step'] == 1
    with pytest.raises(ValueError, match='bad step 2'):
      prefetcher.get(2)
    with pytest.raises(ValueError, match='bad step 2'):
      prefetcher.get(2)  # asked again: made again, fails again
    assert prefetcher.get(3)['step'] == 3  # the pipeline recovers


def test_prefetcher_closes_cleanly():
  make = _Recorder()
  prefetcher = stream.StepPrefetcher(make, 0, 1000, depth=3)
  with prefetcher:
    for s in range(4):
      prefetcher.get(s)
  threads = {t for _, t in make.calls}
  assert threads and not any(t.is_alive() for t in threads)
  made = len(make.calls)
  time.sleep(0.1)
  assert len(make.calls) == made  # nothing made after close
  with pytest.raises(ValueError, match='close'):
    prefetcher.get(4)
  prefetcher.close()  # idempotent


def test_prefetcher_rejects_bad_depth():
  with pytest.raises(ValueError, match='data.prefetch'):
    stream.StepPrefetcher(lambda s: s, 0, 3, depth=-1)


# ----------------------------------------------------------------------------
# Placement.


def test_choose_placement_auto():
  assert stream.choose_placement('auto', 153_600_000, 100_000_000) == (
      'stream', "data.placement=auto chose stream: the training split's 153.6 MB exceeds "
      'the device budget of 100.0 MB (data.device_budget_mb)')
  placement, reason = stream.choose_placement('auto', 153_600_000, 153_600_000)
  assert placement == 'device'
  assert 'chose device' in reason and '153.6 MB' in reason


@pytest.mark.parametrize('requested', ['device', 'stream'])
@pytest.mark.parametrize('nbytes', [10, 10**12])
def test_choose_placement_explicit(requested, nbytes):
  placement, reason = stream.choose_placement(requested, nbytes, 10**6)
  assert placement == requested
  assert reason.startswith(f'data.placement={requested}')
  assert ('exceeds' in reason) == (requested == 'device' and nbytes > 10**6)


def test_choose_placement_unknown():
  with pytest.raises(ValueError, match='--config.data.placement=') as err:
    stream.choose_placement('host', 1, 1)
  for choice in ('auto', 'device', 'stream', 'host'):
    assert choice in str(err.value)


class _FakeDevice:
  process_index = 0

  def __init__(self, limit, platform='gpu'):
    self.limit, self.platform, self.device_kind = limit, platform, f'fake {platform}'

  def memory_stats(self):
    return None if self.limit is None else {'bytes_limit': self.limit}


def test_device_budget_bytes(monkeypatch, capsys):
  assert stream.device_budget_bytes(100, jax.devices()) == 100_000_000
  assert stream.device_budget_bytes(0.5) == 500_000
  # Accelerators: half of the smallest device's limit.
  assert stream.device_budget_bytes(0, [_FakeDevice(8000), _FakeDevice(6000)]) == 3000
  # CPU (no memory statistics): half the host's memory, shared by the devices.
  monkeypatch.setattr(stream, '_host_memory_bytes', lambda: 16_000)
  assert stream.device_budget_bytes(0, [_FakeDevice(None, 'cpu')] * 4) == 2000
  # An accelerator without a limit: the stated fallback, never the host's memory.
  assert stream.device_budget_bytes(0, [_FakeDevice(None)] * 2) == \
      stream.ACCELERATOR_FALLBACK_BYTES // 2
  assert 'fake gpu reports no memory limit' in capsys.readouterr().err
  assert stream.device_budget_bytes(0, [_FakeDevice(None), _FakeDevice(2**30)]) == 2**29
  assert stream.device_budget_bytes(0, jax.local_devices()) == 8000 // len(jax.local_devices())
  with pytest.raises(ValueError, match='device_budget_mb'):
    stream.device_budget_bytes(-1)


# ----------------------------------------------------------------------------
# Lazy TFDS images over a real array_record data set.


def test_tfds_images_reads_what_tfds_reads(tiny_tfds, no_network):
  data_dir, images, labels = tiny_tfds
  lazy = stream.TfdsImages.open('tiny_stream_images', 'train', data_dir)
  assert lazy.shape == (13, 32, 32, 3) and lazy.dtype == np.uint8 and len(lazy) == 13
  assert lazy.nbytes == images.nbytes
  idx = np.array([[3, 1], [3, 12]])
  got = lazy[idx]
  assert got.dtype == np.uint8 and got.shape == (2, 2, 32, 32, 3)
  np.testing.assert_array_equal(got, images[idx])
  np.testing.assert_array_equal(lazy[5], images[5])
  np.testing.assert_array_equal(lazy[-1], images[-1])
  np.testing.assert_array_equal(lazy[2:9:3], images[2:9:3])
  np.testing.assert_array_equal(np.asarray(lazy), images)
  np.testing.assert_array_equal(lazy.read_labels(), labels)
  view = lazy.subset([7, 2, 11])
  assert view.shape == (3, 32, 32, 3)
  np.testing.assert_array_equal(view[np.array([2, 0])], images[[11, 7]])
  np.testing.assert_array_equal(view.read_labels(), labels[[7, 2, 11]])
  with pytest.raises(IndexError):
    lazy[np.array([13])]


def test_tfds_images_decode_only_what_is_asked(tiny_tfds, monkeypatch):
  data_dir, images, labels = tiny_tfds
  lazy = stream.TfdsImages.open('tiny_stream_images', 'train', data_dir)
  read = []
  getitems = lazy.source.__getitems__
  monkeypatch.setattr(lazy.source, '__getitems__', lambda keys: read.append(keys) or getitems(keys))
  np.testing.assert_array_equal(lazy[np.array([5, 2, 5, 5])], images[[5, 2, 5, 5]])
  assert read == [[2, 5]]  # one batched read, each record once
  # Labels come without decoding a single image.
  lazy = stream.TfdsImages.open('tiny_stream_images', 'train', data_dir)
  feature = lazy.source.dataset_info.features['image']

  def no_decoding(*args, **kwargs):
    raise AssertionError('an image was decoded')

  monkeypatch.setattr(feature, 'decode_example_np', no_decoding)
  np.testing.assert_array_equal(lazy.read_labels(), labels)
  with pytest.raises(AssertionError, match='decoded'):
    lazy[np.array([0])]  # the patch bites where images are read


def test_host_batch_from_tfds_images(tiny_tfds, device_gather):
  data_dir, images, labels = tiny_tfds
  lazy = stream.TfdsImages.open('tiny_stream_images', 'train', data_dir)
  idx = np.array([[4, PAD, 0], [12, 4, PAD]], np.int32)
  host = stream.host_batch(lazy, labels, idx)
  device = jax.device_get(device_gather({'image': images, 'label': labels}, idx))
  for key in host:
    assert host[key].dtype == device[key].dtype
    np.testing.assert_array_equal(host[key], device[key])


def test_prefetched_host_batches_from_tfds_images(tiny_tfds):
  """The intended use: host gather + device transfer on the prefetch threads."""
  data_dir, images, labels = tiny_tfds
  lazy = stream.TfdsImages.open('tiny_stream_images', 'train', data_dir)
  order = np.random.default_rng(1).permutation(13)
  batches = np.concatenate([order, [PAD, PAD, PAD]]).reshape(4, 4)

  def make(s):
    return jax.block_until_ready(jax.device_put(stream.host_batch(lazy, labels, batches[s])))

  with stream.StepPrefetcher(make, 0, 4, depth=2) as prefetcher:
    for s in range(4):
      got = jax.device_get(prefetcher.get(s))
      want = stream.host_batch(images, labels, batches[s])
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])


# ----------------------------------------------------------------------------
# load_dataset with placements (CIFAR through tfds.testing.mock_data).


def test_load_dataset_streams_tfds_lazily(no_network):
  with tfds.testing.mock_data(num_examples=6):
    ds = datasets.load_dataset(_cfg(name='cifar100', source='tfds', label='coarse',
                                    placement='stream'))
    examples = list(tfds.data_source('cifar100', split='train'))
    assert ds.placement == 'stream' and 'streamed' in ds.placement_reason
    assert ds.train.lazy and isinstance(ds.train.images, stream.TfdsImages)
    assert ds.train.images.shape == (6, 32, 32, 3)
    assert ds.train.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train.labels, [ex['coarse_label'] for ex in examples])
    np.testing.assert_array_equal(ds.train.images[np.arange(6)],
                                  np.stack([ex['image'] for ex in examples]))
    assert not ds.test.lazy and ds.test.images.shape == (6, 32, 32, 3)


def test_load_dataset_stream_with_holdout(no_network):
  with tfds.testing.mock_data(num_examples=60):
    cfg = _cfg(name='cifar10', source='tfds', placement='stream', validation_fraction=0.25)
    ds = datasets.load_dataset(cfg)
    full = datasets.load_dataset(_cfg(name='cifar10', source='tfds', placement='device',
                                      validation_fraction=0.25))
    assert ds.train.lazy and not ds.test.lazy and ds.eval_split == 'validation'
    assert not full.train.lazy and full.placement == 'device'
    # The same hold-out as with the split in memory.
    np.testing.assert_array_equal(ds.train.labels, full.train.labels)
    np.testing.assert_array_equal(np.asarray(ds.train.images), full.train.images)
    np.testing.assert_array_equal(ds.test.images, full.test.images)
    np.testing.assert_array_equal(ds.train.materialize().images, full.train.images)


@pytest.mark.parametrize('budget_mb, placement', [(0.01, 'stream'), (1.0, 'device')])
def test_load_dataset_auto(no_network, budget_mb, placement):
  with tfds.testing.mock_data(num_examples=6):  # 6 * 3072 bytes = 0.018 MB
    ds = datasets.load_dataset(_cfg(name='cifar10', source='tfds', placement='auto',
                                    device_budget_mb=budget_mb))
  assert ds.placement == placement and ds.train.lazy == (placement == 'stream')
  assert ds.placement_reason.startswith(f'data.placement=auto chose {placement}')


def test_load_dataset_placement_of_in_memory_data():
  ds = datasets.load_dataset(_cfg(placement='stream'))
  assert ds.placement == 'stream' and not ds.train.lazy  # digits: NumPy, streamed
  ds = datasets.load_dataset(_cfg())  # old configs: no placement fields -> auto
  assert ds.placement == 'device' and 'auto' in ds.placement_reason


def test_load_dataset_bad_placement():
  with pytest.raises(ValueError, match='--config.data.placement='):
    datasets.load_dataset(_cfg(placement='gpu'))
