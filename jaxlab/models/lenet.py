"""LeNet-5 of the distributed-learning family (the original code's LeNet5, lucavgn/AML_Project5)."""

import flax.linen as nn

from jaxlab.models.conv import Conv, initializers, max_pool_2x2


class LeNet5(nn.Module):
  """Conv(64, 5x5) → ReLU → MaxPool 2 → Conv(64, 5x5) → ReLU → MaxPool 2 → 384 → 192 → classes.

  On 32×32 inputs the flattened features are 5·5·64 = 1600, as in the reference code.
  `conv_impl`: 'auto' (patch matmuls on the CPU, the library convolution elsewhere), 'xla' or
  'patches' (see jaxlab.models.conv); the parameters are the same either way. `param_init`:
  'torch' (default: PyTorch's nn.Conv2d / nn.Linear defaults, weights and biases U(±1/√fan_in),
  as the original code's LeNet5 in lucavgn/AML_Project5) or 'lecun' (LeCun-normal weights, zero
  biases).
  """
  num_classes: int = 100
  conv_impl: str = 'auto'
  param_init: str = 'torch'

  def dense(self, x, features, name):
    kernel_init, bias_init = initializers(self.param_init, x.shape[-1])
    return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init, name=name)(x)

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch statistics
    for name in ('conv1', 'conv2'):
      conv = Conv(64, (5, 5), impl=self.conv_impl, param_init=self.param_init, name=name)
      # Pooled, then ReLU: the same values as ReLU then pool (both are monotone), on a quarter
      # of the elements; and the same gradient as PyTorch's ReLU → pool, whose gradient goes
      # to each window's first maximum (max_pool_2x2).
      x = nn.relu(max_pool_2x2(conv(x)))
    # Flattened (H, W, C) where PyTorch flattens (C, H, W): a fixed permutation of fc1's
    # inputs, the same model under an i.i.d. initialisation.
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(self.dense(x, 384, 'fc1'))
    x = nn.relu(self.dense(x, 192, 'fc2'))
    return self.dense(x, self.num_classes, 'head')
