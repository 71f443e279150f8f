"""Residual MLP of the credit-assignment family (docs/references.md).

embed: Linear(pixels → d) on flattened images; L residual blocks
h ← h + f_l(h) with f_l(h) = fc2(relu(fc1(h))); out_ln: LayerNorm(d);
out_head: Linear(d → classes). fc2 starts scaled so that ‖f_l(h)‖/‖h‖ ≈ 0.10
at init (the reference run's frozen stack is a near-identity random feature map).

The dense layers of the blocks take their backward rule from `rule`:
'bp' (exact), 'fa' (the input gradient goes through a fixed random matrix B
of W's shape, from the 'feedback' collection) or 'usf' (B = sign(W)). The
forward pass is the same for every rule.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxlab.models.feedback import feedback_matmul

RULES_WITH_MATRICES = ('fa',)
BRANCH_SCALE = 0.1 * 2 ** 0.5  # relu halves the energy: fc2 rescaled so ‖f‖/‖h‖ ≈ 0.10


class FeedbackDense(nn.Module):
  """x·W + b whose input gradient follows the credit rule (W itself always gets x^T·δ)."""
  features: int
  rule: str = 'bp'
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.variance_scaling(self.init_scale ** 2, 'fan_in', 'truncated_normal')
    w = self.param('kernel', init, (x.shape[-1], self.features))
    b = self.param('bias', nn.initializers.zeros, (self.features,))
    if self.rule == 'bp':
      return x @ w + b
    if self.rule == 'fa':
      fb = self.variable('feedback', 'kernel', lambda: nn.initializers.lecun_normal()(
          self.make_rng('feedback'), w.shape)).value
    elif self.rule == 'usf':
      fb = jnp.sign(w)
    else:
      raise ValueError(f'unknown credit rule {self.rule!r} for a dense layer')
    return feedback_matmul(x, w, fb) + b


class Branch(nn.Module):
  """f(h) = fc2(relu(fc1(h)))."""
  width: int
  rule: str = 'bp'

  @nn.compact
  def __call__(self, h):
    z = nn.relu(FeedbackDense(self.width, self.rule, name='fc1')(h))
    return FeedbackDense(self.width, self.rule, BRANCH_SCALE, name='fc2')(z)


class ResMLP(nn.Module):
  """embed → L residual blocks → out_ln → out_head. Parts are exposed for the credit rules."""
  num_classes: int = 10
  width: int = 256
  depth: int = 4
  rule: str = 'bp'  # backward rule inside the blocks: bp | fa | usf (dfa uses bp here)

  def setup(self):
    self.embed = nn.Dense(self.width, name='embed')
    self.blocks = [Branch(self.width, self.rule, name=f'blocks_{i}') for i in range(self.depth)]
    self.out_ln = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name='out_ln')
    self.out_head = nn.Dense(self.num_classes, name='out_head')

  def embed_images(self, images):
    return self.embed(images.reshape(images.shape[0], -1))

  def branch(self, h, index):
    return self.blocks[index](h)

  def readout(self, h):
    return self.out_head(self.out_ln(h))

  def hidden_states(self, images):
    """[h_0, ..., h_L]: the residual stream after the embedding and after each block."""
    hs = [self.embed_images(images)]
    for i in range(self.depth):
      hs.append(hs[-1] + self.branch(hs[-1], i))
    return hs

  def __call__(self, images, train=False):
    del train
    return self.readout(self.hidden_states(images)[-1])
