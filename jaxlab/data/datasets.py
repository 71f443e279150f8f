"""Image-classification data sets as in-memory NumPy arrays, or lazily read.

`load_dataset(data_cfg)` is the single entry point. It returns a `Dataset` whose
splits hold uint8 NHWC images of shape [N, 32, 32, 3] and int32 labels, whatever
the data set ('digits', 'cifar10', 'cifar100') and source ('tfds', 'archive').

`data_cfg.placement` ('auto' | 'device' | 'stream') says where the training
split's images go (see `jaxlab.data.stream`). A TFDS training split that is to
be streamed is not decoded into memory: its images are a lazy
`stream.TfdsImages` (decoded per batch), its labels an in-memory int32 array.
Every other split is a NumPy array.

The readers live in `digits.py` and `cifar.py`; they are imported lazily so that
the offline default (digits) never imports TensorFlow Datasets.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from sklearn import model_selection

from jaxlab.data.pipeline import Split

DATASETS = ('digits', 'cifar10', 'cifar100')
SOURCES = ('tfds', 'archive')
# The data fields where the images come from, read by each origin (`_load_splits`): the
# embedded digits, or a CIFAR data set from one of SOURCES.
ORIGIN_READS = {'digits': (), 'tfds': ('source', 'tfds_dir', 'label'),
                'archive': ('source', 'dir', 'label')}


def origin(data_cfg):
  """The key of ORIGIN_READS for `config.data`."""
  return 'digits' if data_cfg.name == 'digits' else data_cfg.source

# Label kinds each data set offers, with their number of classes.
NUM_CLASSES = {
    'digits': {'fine': 10},
    'cifar10': {'fine': 10},
    'cifar100': {'fine': 100, 'coarse': 20},
}

@dataclasses.dataclass(frozen=True)
class Dataset:
  """A loaded data set.

  `test` is the split the trainer evaluates on: the real test set when
  `eval_split == 'test'`, or a hold-out of the train split when
  `eval_split == 'validation'` (the test set is then not returned).

  `placement` is where the training split's images should go, 'device' or
  'stream' (data.placement with 'auto' resolved), and `placement_reason` a
  sentence saying why, for the user. A streamed TFDS training split has lazy
  images (`train.lazy`).
  """

  name: str
  train: Split
  test: Split
  num_classes: int
  eval_split: str
  placement: str = 'device'
  placement_reason: str = ''


@dataclasses.dataclass(frozen=True)
class _Request:
  """A validated `data_cfg`."""

  name: str
  source: str
  dir: str
  tfds_dir: str
  label: str
  validation_fraction: float
  split_seed: int
  placement: str = 'auto'
  device_budget_mb: float = 0.0
  prefetch: int = 2


def load_dataset(data_cfg: Any, devices=None) -> Dataset:
  """Loads the data set that `data_cfg` describes.

  Args:
    data_cfg: a `ConfigDict` (or any object with these attributes): `name`,
      `source`, `dir`, `tfds_dir`, `label`, `validation_fraction`,
      `split_seed` (empty `dir`/`tfds_dir` mean unset); optionally
      `placement` ('auto' | 'device' | 'stream', default 'auto'),
      `device_budget_mb` (default 0 = automatic) and `prefetch` (default 2).
    devices: the devices that would hold the training split, for the
      automatic budget of placement 'auto' (default: `jax.local_devices()`;
      JAX is only asked when placement is 'auto' and device_budget_mb is 0).

  Returns:
    A `Dataset`. With `validation_fraction > 0`, `test` is a stratified
    hold-out of that fraction of the train split (deterministic for
    `split_seed`) and `eval_split == 'validation'`. `placement` is 'device' or
    'stream'; with 'stream' and source 'tfds' (CIFAR), the train split's images
    are a lazy `stream.TfdsImages` (a validation hold-out is then read into
    memory, the rest stays lazy).

  Raises:
    ValueError: a config value is not one of its valid choices.
    FileNotFoundError: the requested CIFAR data is not available locally; the
      message says how to get it.
  """
  request = _parse(data_cfg)
  decide = functools.partial(_decide, request, devices)
  train, test, (placement, reason) = _load_splits(request, decide)
  eval_split = 'test'
  if request.validation_fraction > 0:
    train, test = hold_out(
        train, request.validation_fraction, request.split_seed
    )
    eval_split = 'validation'
  return Dataset(
      name=request.name,
      train=train,
      test=test,
      num_classes=NUM_CLASSES[request.name][request.label],
      eval_split=eval_split,
      placement=placement,
      placement_reason=reason,
  )


def _decide(request: _Request, devices, nbytes: int) -> tuple[str, str]:
  """(placement, reason) for a training split of `nbytes` image bytes."""
  from jaxlab.data import stream  # pylint: disable=g-import-not-at-top

  if request.placement == 'auto' or request.device_budget_mb > 0:
    budget = stream.device_budget_bytes(request.device_budget_mb, devices)
  else:
    budget = float('inf')  # an explicit choice: no need to ask the devices
  return stream.choose_placement(request.placement, nbytes, budget)


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `split` into (rest, hold-out), stratified by label.

  The hold-out has `fraction` of the examples (rounded up, as sklearn does),
  every class in proportion; the two parts are disjoint, keep the original
  order, and depend only on `seed`. A lazy `split` gives a lazy rest and an
  in-memory hold-out.
  """
  indices = np.arange(len(split))
  rest, held = model_selection.train_test_split(
      indices, test_size=fraction, random_state=seed, stratify=split.labels
  )
  return _take(split, np.sort(rest)), _take(split, np.sort(held), lazy=False)


def select_classes(dataset: Dataset, classes) -> Dataset:
  """The examples of `classes` only, relabelled 0..len(classes)-1 in the given order.

  Used to split one data set into a pretraining task and a transfer task
  (e.g. digits 0-4, then 5-9).
  """
  classes = [int(c) for c in classes]
  bad = [c for c in classes if not 0 <= c < dataset.num_classes]
  if bad or len(set(classes)) != len(classes):
    raise ValueError(f'data.classes must be distinct labels in 0..{dataset.num_classes - 1}, '
                     f'got {classes}')
  relabel = np.full(dataset.num_classes, -1, np.int32)
  relabel[classes] = np.arange(len(classes), dtype=np.int32)

  def keep(split):
    kept = _take(split, np.flatnonzero(relabel[split.labels] >= 0))
    return Split(images=kept.images, labels=relabel[kept.labels])

  return dataclasses.replace(dataset, train=keep(dataset.train), test=keep(dataset.test),
                             num_classes=len(classes))


def _take(split: Split, indices: np.ndarray, lazy: bool = True) -> Split:
  """The examples at `indices`; lazy images stay lazy (a view) unless `lazy=False`."""
  images = split.images
  if isinstance(images, np.ndarray):
    images = images[indices]
  elif lazy and hasattr(images, 'subset'):
    images = images.subset(indices)
  else:
    images = np.asarray(images[indices], dtype=np.uint8)
  return Split(images=images, labels=split.labels[indices])


def _load_splits(request: _Request, decide) -> tuple[Split, Split, tuple[str, str]]:
  """Returns (train, test, (placement, reason)) from the reader that `request` selects.

  `decide(nbytes)` resolves the placement of a training split of that size.
  """
  if request.name == 'digits':
    from jaxlab.data import digits  # pylint: disable=g-import-not-at-top

    train, test = digits.load_digits_splits()
    return train, test, decide(train.images.nbytes)

  from jaxlab.data import cifar  # pylint: disable=g-import-not-at-top

  if request.source == 'archive':
    train, test = cifar.load_archive(request.name, request.dir, request.label)
    return train, test, decide(train.images.nbytes)
  if request.placement == 'device':
    train, test = cifar.load_tfds(request.name, request.tfds_dir, request.label)
    return train, test, decide(train.images.nbytes)
  return _load_tfds_streamable(request, decide)


def _load_tfds_streamable(request: _Request, decide):
  """CIFAR from TFDS, the train split left lazy when it is to be streamed."""
  from jaxlab.data import cifar  # pylint: disable=g-import-not-at-top
  from jaxlab.data import stream  # pylint: disable=g-import-not-at-top

  key = cifar.LAYOUTS[request.name].tfds_label_keys[request.label]
  source = cifar.open_tfds_split(request.name, 'train', request.tfds_dir)
  images = stream.TfdsImages(source)
  placement, reason = decide(images.nbytes)
  if placement == 'stream':
    train = Split(images=images, labels=images.read_labels(key))
  else:
    train = cifar.stack_examples(source, key)
  test = cifar.read_tfds_split(
      request.name, 'test', request.tfds_dir, key)
  return train, test, (placement, reason)


def _choices(values) -> str:
  return ', '.join(repr(v) for v in values)


def _parse(data_cfg: Any) -> _Request:
  """Reads and validates the fields of `data_cfg`."""
  from jaxlab.data import stream  # pylint: disable=g-import-not-at-top

  request = _Request(
      name=data_cfg.name,
      source=data_cfg.source,
      dir=data_cfg.dir or '',
      tfds_dir=data_cfg.tfds_dir or '',
      label=data_cfg.label,
      validation_fraction=float(data_cfg.validation_fraction),
      split_seed=int(data_cfg.split_seed),
      placement=getattr(data_cfg, 'placement', 'auto'),
      device_budget_mb=float(getattr(data_cfg, 'device_budget_mb', 0.0)),
      prefetch=int(getattr(data_cfg, 'prefetch', 2)),
  )
  if request.placement not in stream.PLACEMENTS:
    raise ValueError(
        f'Unknown data placement {request.placement!r} (--config.data.placement=); '
        f'valid choices: {_choices(stream.PLACEMENTS)}.'
    )
  if request.device_budget_mb < 0:
    raise ValueError(
        'config.data.device_budget_mb must be >= 0 (0 = automatic), got '
        f'{request.device_budget_mb}.'
    )
  if request.prefetch < 0:
    raise ValueError(
        f'config.data.prefetch must be >= 0 (steps prepared ahead), got {request.prefetch}.'
    )
  if request.name not in DATASETS:
    raise ValueError(
        f'Unknown data set {request.name!r} (config.data.name); valid '
        f'choices: {_choices(DATASETS)}.'
    )
  if request.source not in SOURCES:
    raise ValueError(
        f'Unknown data source {request.source!r} (config.data.source); valid '
        f'choices: {_choices(SOURCES)}.'
    )
  labels = NUM_CLASSES[request.name]
  if request.label not in labels:
    raise ValueError(
        f'Label kind {request.label!r} (config.data.label) is not available '
        f'for {request.name!r}; valid choices: {_choices(labels)}.'
    )
  if not 0 <= request.validation_fraction < 1:
    raise ValueError(
        'config.data.validation_fraction must be in [0, 1), got '
        f'{request.validation_fraction}.'
    )
  return request
