"""Image-classification data sets as in-memory NumPy arrays.

`load_dataset(data_cfg)` is the single entry point. It returns a `Dataset` whose
splits hold uint8 NHWC images of shape [N, 32, 32, 3] and int32 labels, whatever
the data set ('digits', 'cifar10', 'cifar100') and source ('tfds', 'archive').

The readers live in `digits.py` and `cifar.py`; they are imported lazily so that
the offline default (digits) never imports TensorFlow Datasets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sklearn import model_selection

DATASETS = ('digits', 'cifar10', 'cifar100')
SOURCES = ('tfds', 'archive')

# Label kinds each data set offers, with their number of classes.
_NUM_CLASSES = {
    'digits': {'fine': 10},
    'cifar10': {'fine': 10},
    'cifar100': {'fine': 100, 'coarse': 20},
}

IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `images` uint8 [N, 32, 32, 3] (NHWC) and `labels` int32 [N]."""

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.shape[1:] != IMAGE_SHAPE:
      raise ValueError(
          'Split.images must be uint8 [N, 32, 32, 3], got '
          f'{self.images.dtype} {self.images.shape}.'
      )
    if self.labels.dtype != np.int32 or self.labels.shape != (
        self.images.shape[0],
    ):
      raise ValueError(
          f'Split.labels must be int32 [{self.images.shape[0]}], got '
          f'{self.labels.dtype} {self.labels.shape}.'
      )

  def __len__(self) -> int:
    return self.labels.shape[0]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A loaded data set.

  `test` is the split the trainer evaluates on: the real test set when
  `eval_split == 'test'`, or a hold-out of the train split when
  `eval_split == 'validation'` (the test set is then not returned).
  """

  name: str
  train: Split
  test: Split
  num_classes: int
  eval_split: str


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


def load_dataset(data_cfg: Any) -> Dataset:
  """Loads the data set that `data_cfg` describes.

  Args:
    data_cfg: a `ConfigDict` (or any object with these attributes): `name`,
      `source`, `dir`, `tfds_dir`, `label`, `validation_fraction`,
      `split_seed` (empty `dir`/`tfds_dir` mean unset).

  Returns:
    A `Dataset`. With `validation_fraction > 0`, `test` is a stratified
    hold-out of that fraction of the train split (deterministic for
    `split_seed`) and `eval_split == 'validation'`.

  Raises:
    ValueError: a config value is not one of its valid choices.
    FileNotFoundError: the requested CIFAR data is not available locally; the
      message says how to get it.
  """
  request = _parse(data_cfg)
  train, test = _load_splits(request)
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
      num_classes=_NUM_CLASSES[request.name][request.label],
      eval_split=eval_split,
  )


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `split` into (rest, hold-out), stratified by label.

  The hold-out has `fraction` of the examples (rounded up, as sklearn does),
  every class in proportion; the two parts are disjoint, keep the original
  order, and depend only on `seed`.
  """
  indices = np.arange(len(split))
  rest, held = model_selection.train_test_split(
      indices, test_size=fraction, random_state=seed, stratify=split.labels
  )
  return _take(split, np.sort(rest)), _take(split, np.sort(held))


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
    mask = relabel[split.labels] >= 0
    return Split(images=split.images[mask], labels=relabel[split.labels[mask]])

  return dataclasses.replace(dataset, train=keep(dataset.train), test=keep(dataset.test),
                             num_classes=len(classes))


def _take(split: Split, indices: np.ndarray) -> Split:
  return Split(images=split.images[indices], labels=split.labels[indices])


def _load_splits(request: _Request) -> tuple[Split, Split]:
  """Returns (train, test) from the reader that `request` selects."""
  if request.name == 'digits':
    from jaxlab.data import digits  # pylint: disable=g-import-not-at-top

    return digits.load_digits_splits()

  from jaxlab.data import cifar  # pylint: disable=g-import-not-at-top

  if request.source == 'archive':
    return cifar.load_archive(request.name, request.dir, request.label)
  return cifar.load_tfds(request.name, request.tfds_dir, request.label)


def _choices(values) -> str:
  return ', '.join(repr(v) for v in values)


def _parse(data_cfg: Any) -> _Request:
  """Reads and validates the fields of `data_cfg`."""
  request = _Request(
      name=data_cfg.name,
      source=data_cfg.source,
      dir=data_cfg.dir or '',
      tfds_dir=data_cfg.tfds_dir or '',
      label=data_cfg.label,
      validation_fraction=float(data_cfg.validation_fraction),
      split_seed=int(data_cfg.split_seed),
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
  labels = _NUM_CLASSES[request.name]
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
