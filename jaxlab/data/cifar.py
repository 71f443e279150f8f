"""CIFAR-10 / CIFAR-100 readers, neither of which needs TensorFlow.

Two sources, both returning (train, test) `Split`s of uint8 NHWC images:

* `load_archive`: the original "python version" archives from
  https://www.cs.toronto.edu/~kriz/cifar.html (`cifar-10-batches-py/`,
  `cifar-100-python/`), as also downloaded by torchvision and keras.
* `load_tfds`: a TFDS data set prepared in the `array_record` file format
  (see `python -m jaxlab.data.prepare`), read with `tfds.data_source`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import dataclasses
import os
import pathlib
import pickle
from typing import Any

import numpy as np

from jaxlab.data.pipeline import IMAGE_SHAPE, Split

CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar.html'
_PIXELS = int(np.prod(IMAGE_SHAPE))  # 3072 per image
_TFDS_CHUNK = 4096  # examples per batched TFDS read


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where one CIFAR variant keeps its data, per source."""

  title: str
  archive_folder: str
  train_files: tuple[str, ...]
  test_files: tuple[str, ...]
  meta_file: str  # part of the archive; not read
  archive_label_keys: Mapping[str, bytes]  # label kind -> pickle key
  tfds_label_keys: Mapping[str, str]  # label kind -> TFDS feature

  @property
  def archive_files(self) -> tuple[str, ...]:
    return self.train_files + self.test_files + (self.meta_file,)


LAYOUTS = {
    'cifar10': _Layout(
        title='CIFAR-10',
        archive_folder='cifar-10-batches-py',
        train_files=tuple(f'data_batch_{i}' for i in range(1, 6)),
        test_files=('test_batch',),
        meta_file='batches.meta',
        archive_label_keys={'fine': b'labels'},
        tfds_label_keys={'fine': 'label'},
    ),
    'cifar100': _Layout(
        title='CIFAR-100',
        archive_folder='cifar-100-python',
        train_files=('train',),
        test_files=('test',),
        meta_file='meta',
        archive_label_keys={'fine': b'fine_labels', 'coarse': b'coarse_labels'},
        tfds_label_keys={'fine': 'label', 'coarse': 'coarse_label'},
    ),
}


# ----------------------------------------------------------------------------
# Original python archives.


def load_archive(name: str, directory: str, label: str) -> tuple[Split, Split]:
  """Reads (train, test) of `name` from the original python archive.

  Args:
    name: 'cifar10' or 'cifar100'.
    directory: the archive folder (`cifar-10-batches-py/`,
      `cifar-100-python/`) or a folder that contains it.
    label: 'fine', or 'coarse' (CIFAR-100's 20 superclasses).

  Raises:
    FileNotFoundError: no complete archive at `directory`; the message names
      the expected folder and files and where to get them.

  The files are pickles: only point this at archives you trust.
  """
  layout = LAYOUTS[name]
  folder = _find_archive_folder(layout, directory)
  key = layout.archive_label_keys[label]
  return (
      _read_batches(folder, layout.train_files, key),
      _read_batches(folder, layout.test_files, key),
  )


def _find_archive_folder(layout: _Layout, directory: str) -> pathlib.Path:
  """Returns `directory` or `directory/<archive folder>`, whichever has the data."""
  required = layout.train_files + layout.test_files
  if directory:
    root = pathlib.Path(directory).expanduser()
    for folder in (root, root / layout.archive_folder):
      if all((folder / f).is_file() for f in required):
        return folder
  raise FileNotFoundError(_archive_missing_message(layout, directory))


def check_archive(name: str, directory: str) -> None:
  """Raise before anything is read if the python archive of `name` under `directory` is
  missing (FileNotFoundError), partial (a file of the archive absent) or truncated (a
  pickle that does not end with its STOP opcode: an interrupted download or copy);
  ValueError for the latter two, naming the file."""
  layout = LAYOUTS[name]
  required = layout.train_files + layout.test_files
  root = pathlib.Path(directory).expanduser() if directory else None
  if root is not None:
    for folder in (root, root / layout.archive_folder):
      present = [f for f in required if (folder / f).is_file()]
      if not present:
        continue
      missing = [f for f in required if f not in present]
      if missing:
        raise ValueError(f'{layout.title} archive in {folder} is partial: '
                         f'{", ".join(missing)} missing (have {", ".join(present)})')
      for f in required:
        with open(folder / f, 'rb') as fh:
          size = fh.seek(0, os.SEEK_END)
          fh.seek(max(size - 1, 0))
          if size < 2 or fh.read(1) != b'.':
            raise ValueError(f'{layout.title} archive file {folder / f} is truncated '
                             f'({size} bytes; a pickle ends with its STOP byte)')
      return
  raise FileNotFoundError(_archive_missing_message(layout, directory))


def _archive_missing_message(layout: _Layout, directory: str) -> str:
  where = (
      f'neither {directory!r} nor {os.path.join(directory, layout.archive_folder)!r}'
      ' holds it'
      if directory
      else 'config.data.dir is empty'
  )
  return (
      f'{layout.title} python archive not found: expected the folder '
      f'{layout.archive_folder}/ with files {", ".join(layout.archive_files)}, '
      f'but {where}.\n'
      f'Get it from the official archives at {CIFAR_URL} (the "python '
      f'version", extract it), or reuse the {layout.archive_folder}/ that '
      'torchvision or keras already downloaded (e.g. under ~/.keras/datasets '
      'or your torchvision root). Then pass '
      '--config.data.source=archive --config.data.dir=PATH, where PATH is '
      f'{layout.archive_folder}/ or the folder that contains it.'
  )


def _read_batches(
    folder: pathlib.Path, files: Sequence[str], label_key: bytes
) -> Split:
  """Concatenates the pickled batches `files` into one NHWC split."""
  parts = [_read_batch(folder / f, label_key) for f in files]
  return Split(
      images=np.concatenate([images for images, _ in parts]),
      labels=np.concatenate([labels for _, labels in parts]),
  )


def _read_batch(path: pathlib.Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  """Reads one pickled batch: (uint8 [N, 32, 32, 3], int32 [N])."""
  with open(path, 'rb') as f:
    batch = pickle.load(f, encoding='bytes')
  data = np.asarray(batch[b'data'], dtype=np.uint8)
  labels = np.asarray(batch[label_key], dtype=np.int32)
  if data.ndim != 2 or data.shape[1] != _PIXELS or len(labels) != len(data):
    raise ValueError(
        f'{path}: expected data [N, {_PIXELS}] and {label_key!r} [N], got '
        f'{data.shape} and {labels.shape}.'
    )
  return channels_last(data), labels


def channels_last(data: np.ndarray) -> np.ndarray:
  """Maps CIFAR rows [N, 3072] (1024 R, 1024 G, 1024 B) to [N, 32, 32, 3]."""
  height, width, channels = IMAGE_SHAPE
  images = data.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images)


# ----------------------------------------------------------------------------
# TensorFlow Datasets, array_record format.


def load_tfds(name: str, tfds_dir: str, label: str) -> tuple[Split, Split]:
  """Reads (train, test) of the TFDS data set `name` without TensorFlow.

  Args:
    name: 'cifar10' or 'cifar100' (also the TFDS names).
    tfds_dir: TFDS `data_dir`; '' means TFDS's default.
    label: 'fine', or 'coarse' (CIFAR-100's 20 superclasses).

  Raises:
    FileNotFoundError: the data set is not prepared in `array_record` format
      under `tfds_dir`; the message lists the ways out. Nothing is downloaded.
  """
  key = LAYOUTS[name].tfds_label_keys[label]
  return (
      read_tfds_split(name, 'train', tfds_dir, key),
      read_tfds_split(name, 'test', tfds_dir, key),
  )


def read_tfds_split(name: str, split: str, tfds_dir: str, label_key: str) -> Split:
  """Reads every example of one TFDS split into memory."""
  return stack_examples(open_tfds_split(name, split, tfds_dir), label_key)


def open_tfds_split(name: str, split: str, tfds_dir: str):
  """Returns the TFDS data source of one split, known to be readable."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    source = tfds.data_source(
        name,
        split=split,
        data_dir=tfds_dir or None,
        download=False,
        builder_kwargs={'file_format': 'array_record'},
    )
    if len(source):
      _ = source[0]  # Listed but missing files only fail on the first read.
  except (OSError, KeyError, RuntimeError, ValueError, AssertionError) as err:
    # TFDS 4.9 signals "not prepared" as KeyError (no splits); data prepared
    # in another format as NotImplementedError (a RuntimeError).
    raise FileNotFoundError(_not_prepared_message(name, tfds_dir, err)) from err
  return source


def stack_examples(source: Sequence[Mapping[str, Any]], label_key: str) -> Split:
  """Copies all examples of `source` into preallocated uint8/int32 arrays."""
  num = len(source)
  images = np.empty((num, *IMAGE_SHAPE), np.uint8)
  labels = np.empty((num,), np.int32)
  for i, example in enumerate(_iter_examples(source)):
    images[i] = example['image']
    labels[i] = example[label_key]
  return Split(images=images, labels=labels)


def _iter_examples(source, chunk: int = _TFDS_CHUNK) -> Iterator[Mapping[str, Any]]:
  """Yields the examples of `source` in order, `chunk` records per read."""
  for start in range(0, len(source), chunk):
    keys = list(range(start, min(start + chunk, len(source))))
    try:
      examples = source.__getitems__(keys)
    except TypeError:
      # `tfds.testing.mock_data` (TFDS 4.9) binds its fake `__getitems__`
      # without `self`, so batched reads fail there; single reads work. A real
      # TypeError in decoding recurs below and propagates.
      examples = [source[k] for k in keys]
    yield from examples


def _not_prepared_message(name: str, tfds_dir: str, err: Exception) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  searched = tfds_dir or f'{tfds.core.constants.DATA_DIR} (TFDS default)'
  prepare = f'python -m jaxlab.data.prepare --dataset={name}'
  if tfds_dir:
    prepare += f' --tfds_dir={tfds_dir}'
  else:
    prepare += ' (or --tfds_dir=DIR, then train with --config.data.tfds_dir=DIR)'
  return (
      f'TFDS data set {name!r} is not prepared in array_record format under '
      f'data_dir {searched}.\n'
      'Ways out:\n'
      f'  1. With network: pip install -e ".[prepare]" then {prepare}.\n'
      f'  2. Use the original python archive ({CIFAR_URL}): '
      '--config.data.source=archive --config.data.dir=PATH.\n'
      '  3. Run the offline demo on the embedded digits data set with the '
      ':quick configs.\n'
      f'(TFDS said: {type(err).__name__}: {err})'
  )
