"""The embedded default data set: scikit-learn's 8x8 handwritten digits.

It ships inside scikit-learn (1797 images, 10 classes), so it works offline.
Images are presented like CIFAR: 32x32x3 uint8.
"""

from __future__ import annotations

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from jaxlab.data.pipeline import Split

NUM_CLASSES = 10
TEST_FRACTION = 0.2
_SPLIT_SEED = 0
_UPSCALE = 4  # 8x8 -> 32x32
_MAX_VALUE = 16  # sklearn digits pixels are 0..16


def to_rgb32(images: np.ndarray) -> np.ndarray:
  """Maps [N, 8, 8] digits with values 0..16 to uint8 [N, 32, 32, 3].

  Each pixel becomes a 4x4 block (nearest-neighbour upscaling) with value
  round(v * 255 / 16), repeated on the three channels.
  """
  scaled = np.round(np.asarray(images) * (255 / _MAX_VALUE)).astype(np.uint8)
  big = scaled.repeat(_UPSCALE, axis=1).repeat(_UPSCALE, axis=2)
  return np.repeat(big[..., None], 3, axis=-1)


def load_digits_splits() -> tuple[Split, Split]:
  """Returns the fixed (train, test) split: 1437 / 360 examples.

  The split is stratified by label (`train_test_split(test_size=0.2,
  stratify=y, random_state=0)`), so it is identical on every call.
  """
  digits = sk_datasets.load_digits()
  images = to_rgb32(digits.images)
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images,
      labels,
      test_size=TEST_FRACTION,
      stratify=labels,
      random_state=_SPLIT_SEED,
  )
  return Split(train_x, train_y), Split(test_x, test_y)
