"""Training batch indices (the step gathers them from the device-resident split, or the host
streams the batch they name: jaxlab.train.feeds; evaluation batches: train.evaluate).

The host only decides which indices form each batch. Training batches come from a permutation per epoch
drawn from the PRNG key. Every example is seen once per epoch: the last,
partial batch is padded to the static batch shape with the index -1, which
the step reads as a masked example of weight 0 (PyTorch's DataLoader with
drop_last=False). With drop_last=True the partial batch is dropped instead.

`Split` is what every reader returns and the pipeline indexes: one split's uint8 images and
int32 labels.
"""

import dataclasses
from typing import Any

import jax
import numpy as np

PAD = -1  # the index of a padding example: weight 0 in the step

IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `images` uint8 [N, 32, 32, 3] (NHWC) and `labels` int32 [N].

  `images` is a NumPy array, or a lazy array (anything with `.shape`, `.dtype`,
  `__len__` and `__getitem__` of an int array returning uint8 NumPy images,
  e.g. `stream.TfdsImages`); `np.asarray(images)` reads a lazy one whole.
  """

  images: Any
  labels: np.ndarray

  def __post_init__(self):
    if self.images.dtype != np.uint8 or tuple(self.images.shape[1:]) != IMAGE_SHAPE:
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

  @property
  def lazy(self) -> bool:
    """Whether `images` is read on demand rather than held as a NumPy array."""
    return not isinstance(self.images, np.ndarray)

  def materialize(self) -> 'Split':
    """This split with its images read into a NumPy array (itself if they already are)."""
    if not self.lazy:
      return self
    return Split(images=np.asarray(self.images, dtype=np.uint8), labels=self.labels)


def steps_per_epoch(num_examples, batch_size, drop_last=False):
  """Batches per epoch: ceil(n / b), or n // b with drop_last; an error if there are none."""
  if batch_size < 1:
    raise ValueError(f'batch size {batch_size} must be at least 1 '
                     '(--config.train.batch_size=64)')
  steps = num_examples // batch_size if drop_last else -(-num_examples // batch_size)
  if steps == 0:
    raise ValueError(f'batch size {batch_size} is larger than the {num_examples} training '
                     'examples and train.drop_last=True drops the only, partial batch; lower '
                     '--config.train.batch_size or set --config.train.drop_last=false.')
  return steps


class EpochIndices:
  """Global batch indices for any range of steps, the same however the run is split.

  `steps`: batches per epoch when larger than this split's own (a local-SGD
  worker with a smaller shard than the others pads whole batches with PAD).
  """

  def __init__(self, key, num_examples, batch_size, drop_last=False, steps=None):
    self.key, self.n, self.batch_size = key, num_examples, batch_size
    own = steps_per_epoch(num_examples, batch_size, drop_last)
    self.steps_per_epoch = max(own, steps or 0)
    self.used = own * batch_size if drop_last else num_examples  # examples seen per epoch
    self._epoch, self._perm = None, None

  def permutation(self, epoch):
    """This epoch's order of the examples it uses, padded with PAD to whole batches."""
    if epoch != self._epoch:
      perm = np.asarray(jax.random.permutation(jax.random.fold_in(self.key, epoch), self.n))
      padded = np.full(self.steps_per_epoch * self.batch_size, PAD, np.int64)
      padded[:self.used] = perm[:self.used]
      self._perm, self._epoch = padded, epoch
    return self._perm

  def chunk(self, step, num_steps):
    """int32 [num_steps, batch] indices of steps step..step+num_steps-1 (one epoch at most);
    PAD marks the padding of a partial batch."""
    epoch, first = divmod(step, self.steps_per_epoch)
    if first + num_steps > self.steps_per_epoch:
      raise ValueError('a chunk of steps may not cross an epoch boundary')
    b = self.batch_size
    rows = self.permutation(epoch)[first * b:(first + num_steps) * b]
    return rows.reshape(num_steps, b).astype(np.int32)
