"""LeNet-5 variant of the distributed-learning seed (SPEC §4)."""

import flax.linen as nn

from jaxlab.models.conv import Conv, max_pool_2x2


class LeNet5(nn.Module):
  """Conv(64, 5x5) → ReLU → MaxPool 2 → Conv(64, 5x5) → ReLU → MaxPool 2 → 384 → 192 → classes.

  On 32×32 inputs the flattened features are 5·5·64 = 1600, as in the seed. `conv_impl`: 'auto'
  (patch matmuls on the CPU, the library convolution elsewhere), 'xla' or 'patches' (see
  jaxlab.models.conv); the parameters are the same either way.
  """
  num_classes: int = 100
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch statistics
    for name in ('conv1', 'conv2'):
      x = max_pool_2x2(nn.relu(Conv(64, (5, 5), impl=self.conv_impl, name=name)(x)))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(384, name='fc1')(x))
    x = nn.relu(nn.Dense(192, name='fc2')(x))
    return nn.Dense(self.num_classes, name='head')(x)
