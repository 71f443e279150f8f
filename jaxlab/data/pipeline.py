"""Batch indices into a device-resident data set.

The whole split lives on the device as uint8; the host only decides which
indices form each batch. Training batches come from a permutation per epoch
drawn from the PRNG key (the last incomplete batch of an epoch is dropped);
evaluation visits every example exactly once, the last batch padded and masked.
"""

import jax
import numpy as np


def steps_per_epoch(num_examples, batch_size):
  """Full batches per epoch; an error if the split is smaller than one batch."""
  steps = num_examples // batch_size
  if steps == 0:
    raise ValueError(f'batch size {batch_size} is larger than the {num_examples} training '
                     'examples; lower --config.train.batch_size.')
  return steps


class EpochIndices:
  """Global batch indices for any range of steps, the same however the run is split."""

  def __init__(self, key, num_examples, batch_size):
    self.key, self.n, self.batch_size = key, num_examples, batch_size
    self.steps_per_epoch = steps_per_epoch(num_examples, batch_size)
    self._epoch, self._perm = None, None

  def permutation(self, epoch):
    if epoch != self._epoch:
      self._perm = np.asarray(jax.random.permutation(jax.random.fold_in(self.key, epoch), self.n))
      self._epoch = epoch
    return self._perm

  def chunk(self, step, num_steps):
    """int32 [num_steps, batch] indices of steps step..step+num_steps-1 (one epoch at most)."""
    epoch, first = divmod(step, self.steps_per_epoch)
    if first + num_steps > self.steps_per_epoch:
      raise ValueError('a chunk of steps may not cross an epoch boundary')
    b = self.batch_size
    rows = self.permutation(epoch)[first * b:(first + num_steps) * b]
    return rows.reshape(num_steps, b).astype(np.int32)


def eval_batches(num_examples, batch_size):
  """Yield (indices [batch_size], number of real examples) covering 0..n-1 once.

  The last batch is padded by repeating index n-1; only its first `valid`
  rows are real.
  """
  for start in range(0, num_examples, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = min(batch_size, num_examples - start)
    yield np.minimum(idx, num_examples - 1).astype(np.int32), valid
