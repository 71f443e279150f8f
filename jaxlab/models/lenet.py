"""LeNet-5 variant of the distributed-learning seed (SPEC §4)."""

import flax.linen as nn


class LeNet5(nn.Module):
  """Conv(64, 5x5) → ReLU → MaxPool 2 → Conv(64, 5x5) → ReLU → MaxPool 2 → 384 → 192 → classes.

  On 32×32 inputs the flattened features are 5·5·64 = 1600, as in the seed.
  """
  num_classes: int = 100

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch statistics
    for name in ('conv1', 'conv2'):
      x = nn.Conv(64, (5, 5), padding='VALID', name=name)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(384, name='fc1')(x))
    x = nn.relu(nn.Dense(192, name='fc2')(x))
    return nn.Dense(self.num_classes, name='head')(x)
