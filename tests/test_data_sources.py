"""Tests of jaxlab.data: digits, CIFAR python archives, CIFAR via TFDS, errors."""

import collections
import pathlib
import pickle

import ml_collections
import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from jaxlab.data import datasets
from jaxlab.data import prepare


def _cfg(**overrides) -> ml_collections.ConfigDict:
  fields = dict(
      name='digits',
      source='tfds',
      dir='',
      tfds_dir='',
      label='fine',
      validation_fraction=0.0,
      split_seed=0,
  )
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def _counts(labels, num_classes):
  return np.bincount(labels, minlength=num_classes)


def _rows(images):
  """Each image as bytes, to compare splits as sets."""
  return [image.tobytes() for image in images]


def _expected_nhwc(data):
  """NHWC images from CIFAR rows, derived pixel by pixel from the layout."""
  rows, cols, channels = np.indices((32, 32, 3))
  return data[:, channels * 1024 + rows * 32 + cols]


# ----------------------------------------------------------------------------
# Tiny archives in the original pickle layout.


def _random_rows(rng, num, first_id):
  """uint8 [num, 3072] rows, made unique by an id in the first two bytes."""
  data = rng.integers(0, 256, size=(num, 3072), dtype=np.uint8)
  ids = np.arange(first_id, first_id + num)
  data[:, 0], data[:, 1] = ids % 256, ids // 256
  return data


def _pickle(path, obj):
  with open(path, 'wb') as f:
    pickle.dump(obj, f)


def _write_cifar10(root: pathlib.Path, per_batch: int = 10):
  """Writes cifar-10-batches-py/ under root; returns the source arrays.

  Every batch holds each of the 10 labels per_batch // 10 times.
  """
  rng = np.random.default_rng(10)
  folder = root / 'cifar-10-batches-py'
  folder.mkdir(parents=True)
  source = {'train_data': [], 'train_labels': []}
  for i in range(1, 6):
    data = _random_rows(rng, per_batch, first_id=i * per_batch)
    labels = [int(v) for v in rng.permutation(per_batch) % 10]
    _pickle(folder / f'data_batch_{i}', {b'data': data, b'labels': labels})
    source['train_data'].append(data)
    source['train_labels'] += labels
  source['train_data'] = np.concatenate(source['train_data'])
  source['test_data'] = _random_rows(rng, 7, first_id=0)
  source['test_labels'] = [int(v) for v in rng.integers(0, 10, 7)]
  _pickle(
      folder / 'test_batch',
      {b'data': source['test_data'], b'labels': source['test_labels']},
  )
  _pickle(folder / 'batches.meta', {b'label_names': [b'x'] * 10})
  return source


def _write_cifar100(root: pathlib.Path):
  """Writes cifar-100-python/ under root; returns the source arrays."""
  rng = np.random.default_rng(100)
  folder = root / 'cifar-100-python'
  folder.mkdir(parents=True)
  source = {}
  for split, num in (('train', 12), ('test', 5)):
    data = _random_rows(rng, num, first_id=0)
    fine = [int(v) for v in rng.integers(0, 100, num)]
    coarse = [int(v) for v in rng.integers(0, 20, num)]
    _pickle(
        folder / split,
        {b'data': data, b'fine_labels': fine, b'coarse_labels': coarse},
    )
    source[split] = (data, fine, coarse)
  _pickle(
      folder / 'meta',
      {b'fine_label_names': [b'f'] * 100, b'coarse_label_names': [b'c'] * 20},
  )
  return source


# ----------------------------------------------------------------------------
# digits


@pytest.fixture(name='digits', scope='module')
def _digits():
  return datasets.load_dataset(_cfg())


def test_digits_shapes_and_dtypes(digits):
  assert digits.name == 'digits'
  assert digits.num_classes == 10
  assert digits.eval_split == 'test'
  assert digits.train.images.shape == (1437, 32, 32, 3)
  assert digits.test.images.shape == (360, 32, 32, 3)
  assert digits.train.labels.shape == (1437,)
  assert digits.test.labels.shape == (360,)
  for split in (digits.train, digits.test):
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32


def test_digits_split_is_stratified(digits):
  total = _counts(sk_datasets.load_digits().target, 10)
  train = _counts(digits.train.labels, 10)
  test = _counts(digits.test.labels, 10)
  assert (train > 0).all() and (test > 0).all()
  np.testing.assert_array_equal(train + test, total)
  assert np.abs(test - 0.2 * total).max() <= 1
  assert np.abs(train - 0.8 * total).max() <= 1


def test_digits_pixels_are_scaled_upscaled_8x8_images(digits):
  raw = sk_datasets.load_digits()
  scaled = np.round(raw.images * 255 / 16).astype(np.uint8)
  images = np.concatenate([digits.train.images, digits.test.images])
  labels = np.concatenate([digits.train.labels, digits.test.labels])
  assert images.min() == 0 and images.max() == 255
  # Three equal channels, each an 8x8 image repeated as 4x4 blocks.
  small = images[:, ::4, ::4, 0]
  expected = np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)
  np.testing.assert_array_equal(images, np.stack([expected] * 3, axis=-1))
  # Train + test are exactly sklearn's (image, label) pairs, scaled 0..255.
  got = collections.Counter(zip(_rows(small), labels.tolist()))
  want = collections.Counter(zip(_rows(scaled), raw.target.tolist()))
  assert got == want


def test_digits_is_deterministic(digits):
  again = datasets.load_dataset(_cfg())
  for a, b in ((digits.train, again.train), (digits.test, again.test)):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


# ----------------------------------------------------------------------------
# CIFAR python archives


@pytest.mark.parametrize('subfolder', ['', 'cifar-10-batches-py'])
def test_cifar10_archive(tmp_path, subfolder):
  source = _write_cifar10(tmp_path)
  ds = datasets.load_dataset(
      _cfg(name='cifar10', source='archive', dir=str(tmp_path / subfolder))
  )
  assert (ds.name, ds.num_classes, ds.eval_split) == ('cifar10', 10, 'test')
  assert ds.train.images.shape == (50, 32, 32, 3)
  assert ds.test.images.shape == (7, 32, 32, 3)
  assert ds.train.images.dtype == np.uint8
  assert ds.train.labels.dtype == np.int32
  np.testing.assert_array_equal(ds.train.labels, source['train_labels'])
  np.testing.assert_array_equal(ds.test.labels, source['test_labels'])
  data, images = source['train_data'], ds.train.images
  # Hand-picked pixels: channel c of (row r, col k) is data[c*1024 + r*32 + k].
  for i in (0, 17, 49):
    assert images[i, 0, 1, 0] == data[i, 1]
    assert images[i, 0, 1, 1] == data[i, 1024 + 1]
    assert images[i, 0, 1, 2] == data[i, 2048 + 1]
    assert images[i, 2, 5, 1] == data[i, 1024 + 2 * 32 + 5]
    assert images[i, 31, 31, 2] == data[i, 3071]
  np.testing.assert_array_equal(images, _expected_nhwc(data))
  np.testing.assert_array_equal(ds.test.images, _expected_nhwc(source['test_data']))


@pytest.mark.parametrize(
    'label, num_classes, column', [('fine', 100, 1), ('coarse', 20, 2)]
)
@pytest.mark.parametrize('subfolder', ['', 'cifar-100-python'])
def test_cifar100_archive(tmp_path, subfolder, label, num_classes, column):
  source = _write_cifar100(tmp_path)
  ds = datasets.load_dataset(
      _cfg(
          name='cifar100',
          source='archive',
          dir=str(tmp_path / subfolder),
          label=label,
      )
  )
  assert ds.num_classes == num_classes
  for split, got in (('train', ds.train), ('test', ds.test)):
    data, labels = source[split][0], source[split][column]
    assert got.images.shape == (len(data), 32, 32, 3)
    assert got.labels.dtype == np.int32
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.images, _expected_nhwc(data))
    assert got.images[3, 0, 1, 1] == data[3, 1024 + 1]


def test_archive_validation_holdout(tmp_path):
  source = _write_cifar10(tmp_path)
  cfg = _cfg(
      name='cifar10', source='archive', dir=str(tmp_path),
      validation_fraction=0.2, split_seed=3,
  )
  ds = datasets.load_dataset(cfg)
  assert ds.eval_split == 'validation'
  assert len(ds.train.labels) == 40 and len(ds.test.labels) == 10
  # Disjoint, and together exactly the original train split (images unique).
  train_rows, val_rows = set(_rows(ds.train.images)), set(_rows(ds.test.images))
  assert len(train_rows) == 40 and len(val_rows) == 10
  assert not train_rows & val_rows
  original = set(_rows(_expected_nhwc(source['train_data'])))
  assert train_rows | val_rows == original
  # Labels still belong to their images.
  label_of = dict(zip(_rows(_expected_nhwc(source['train_data'])),
                      source['train_labels']))
  for split in (ds.train, ds.test):
    assert [label_of[r] for r in _rows(split.images)] == split.labels.tolist()
  # Stratified: 5 per class in train -> exactly 1 per class held out.
  np.testing.assert_array_equal(_counts(ds.test.labels, 10), np.ones(10))
  # Deterministic for a seed, different for another.
  again = datasets.load_dataset(cfg)
  np.testing.assert_array_equal(again.test.images, ds.test.images)
  np.testing.assert_array_equal(again.train.images, ds.train.images)
  cfg.split_seed = 4
  other = datasets.load_dataset(cfg)
  assert set(_rows(other.test.images)) != val_rows


# ----------------------------------------------------------------------------
# CIFAR via TFDS (mocked data, array_record data source)


@pytest.mark.parametrize(
    'name, label, num_classes',
    [('cifar10', 'fine', 10), ('cifar100', 'fine', 100),
     ('cifar100', 'coarse', 20)],
)
def test_tfds_mock(name, label, num_classes, no_network):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=6):
    ds = datasets.load_dataset(_cfg(name=name, source='tfds', label=label))
  assert (ds.name, ds.num_classes, ds.eval_split) == (name, num_classes, 'test')
  for split in (ds.train, ds.test):
    assert split.images.shape == (6, 32, 32, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (6,)
    assert split.labels.dtype == np.int32
    assert 0 <= split.labels.min() and split.labels.max() < num_classes
    assert split.images.any()  # filled, not left as empty memory of zeros


def test_tfds_mock_matches_examples(no_network):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=5):
    ds = datasets.load_dataset(
        _cfg(name='cifar100', source='tfds', label='coarse')
    )
    examples = list(tfds.data_source('cifar100', split='train'))
  np.testing.assert_array_equal(
      ds.train.images, np.stack([ex['image'] for ex in examples])
  )
  np.testing.assert_array_equal(
      ds.train.labels, [ex['coarse_label'] for ex in examples]
  )


# ----------------------------------------------------------------------------
# Errors


def test_unknown_dataset():
  with pytest.raises(ValueError, match='imagenet') as err:
    datasets.load_dataset(_cfg(name='imagenet'))
  for name in ('digits', 'cifar10', 'cifar100'):
    assert repr(name) in str(err.value)


def test_unknown_source():
  with pytest.raises(ValueError, match='hdf5') as err:
    datasets.load_dataset(_cfg(name='cifar10', source='hdf5'))
  assert "'tfds'" in str(err.value) and "'archive'" in str(err.value)


@pytest.mark.parametrize('name', ['digits', 'cifar10'])
def test_coarse_labels_only_for_cifar100(name):
  with pytest.raises(ValueError, match="'fine'"):
    datasets.load_dataset(_cfg(name=name, label='coarse'))


@pytest.mark.parametrize('fraction', [-0.1, 1.0])
def test_bad_validation_fraction(fraction):
  with pytest.raises(ValueError, match='validation_fraction'):
    datasets.load_dataset(_cfg(validation_fraction=fraction))


@pytest.mark.parametrize('subdir', [None, 'missing', 'empty'])
def test_archive_missing(tmp_path, subdir):
  (tmp_path / 'empty').mkdir()
  directory = '' if subdir is None else str(tmp_path / subdir)
  with pytest.raises(FileNotFoundError) as err:
    datasets.load_dataset(_cfg(name='cifar100', source='archive', dir=directory))
  message = str(err.value)
  for needle in ('cifar-100-python', 'train, test, meta', 'data.dir',
                 '--config.data.source=archive',
                 'https://www.cs.toronto.edu/~kriz/cifar.html',
                 'torchvision'):
    assert needle in message


def test_archive_incomplete(tmp_path):
  _write_cifar10(tmp_path)
  (tmp_path / 'cifar-10-batches-py' / 'data_batch_3').unlink()
  with pytest.raises(FileNotFoundError, match='cifar-10-batches-py'):
    datasets.load_dataset(_cfg(name='cifar10', source='archive', dir=str(tmp_path)))


def test_tfds_not_prepared(tmp_path, no_network):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(FileNotFoundError) as err:
    datasets.load_dataset(
        _cfg(name='cifar100', source='tfds', tfds_dir=str(tmp_path))
    )
  message = str(err.value)
  for needle in ('prepare', 'python -m jaxlab.data.prepare --dataset=cifar100',
                 '.[prepare]', 'archive', '--config.data.dir', 'digits',
                 str(tmp_path)):
    assert needle in message


def test_tfds_not_prepared_in_default_dir(tmp_path, monkeypatch, no_network):
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(tfds.core.constants, 'DATA_DIR', str(tmp_path))
  with pytest.raises(FileNotFoundError) as err:
    datasets.load_dataset(_cfg(name='cifar10', source='tfds', tfds_dir=''))
  message = str(err.value)
  assert f'{tmp_path} (TFDS default)' in message
  assert '--dataset=cifar10' in message and 'archive' in message


def test_prepare_without_tensorflow(monkeypatch, capsys):
  monkeypatch.setattr(prepare, 'tensorflow_available', lambda: False)
  assert prepare.main(['--dataset=cifar100', '--tfds_dir=/nowhere']) == 2
  message = capsys.readouterr().err
  assert 'TensorFlow' in message and '.[prepare]' in message
