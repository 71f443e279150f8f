"""Credit-assignment rules for the residual MLP: BP, FA, uSF and DFA (the ladder's
reference definitions: docs/references.md).

`credit_value_and_grad` walks the residual stream backwards once:
  - the readout (out_ln, out_head) always gets its exact gradient;
  - δ_L = ∂loss/∂h_L; for bp / fa / usf, δ_l = δ_{l+1} + (the block's input
    gradient under its rule: exact for bp, through B for fa, through sign(W)
    for usf — the block layers' custom_vjp);
  - for dfa, the signal at the output of block l is e·B_l, with e = softmax −
    onehot (divided by the batch size, as the mean loss's gradient) and B_l a
    fixed random (classes × d) matrix; the embedding gets e·B_embed;
  - each block's parameters get the gradient of its local surrogate
    ⟨sg(δ̂), f_l(sg(h_l))⟩ with δ̂ = δ / rms(δ) when rms_normalize (one learning
    rate for every block whatever its feedback's scale), else of ⟨sg(δ), f_l⟩;
  - the embedding gets its rule's signal at h_0 (not normalised).
Frozen blocks pass the signal through but their parameter gradients are not
requested (and XLA drops that work).
"""

import jax
import jax.numpy as jnp
import optax

from jaxlab.models.resmlp import ResMLP
from jaxlab.parallel.mesh import DATA

RULES = ('bp', 'fa', 'dfa', 'usf')


def make_model(rule, num_classes, width, depth):
  """The ResMLP whose block layers carry `rule`'s backward (dfa blocks use the exact one)."""
  if rule not in RULES:
    raise ValueError(f'unknown credit rule {rule!r}; choose one of {", ".join(RULES)}')
  return ResMLP(num_classes, width, depth, 'bp' if rule == 'dfa' else rule)


def init_feedback(model, rule, key, image_shape):
  """The fixed feedback matrices of `rule` (an empty dict for bp and usf)."""
  if rule == 'fa':
    variables = model.init({'params': key, 'feedback': key}, jnp.zeros((1, *image_shape)))
    return variables['feedback']
  if rule == 'dfa':
    keys = jax.random.split(key, model.depth + 1)
    draw = lambda k: jax.random.normal(k, (model.num_classes, model.width)) / model.num_classes ** 0.5
    return {'embed': draw(keys[0]), **{f'blocks_{i}': draw(keys[i + 1]) for i in range(model.depth)}}
  return {}


def _rms(x, axis_name, weight=None, count=None):
  """The root mean square of `x` [b, d] over the real examples (weight 1) of the global batch."""
  if weight is None:
    ms = jnp.mean(jnp.square(x))
    if axis_name is not None:
      ms = jax.lax.pmean(ms, axis_name)
    return jnp.sqrt(ms) + 1e-12
  sq = jnp.sum(weight[:, None] * jnp.square(x))
  if axis_name is not None:
    sq = jax.lax.psum(sq, axis_name)
  return jnp.sqrt(sq / (count * x.shape[-1])) + 1e-12


def credit_value_and_grad(model, rule, params, feedback, images, labels, trainable_blocks,
                          rms_normalize=True, axis_name=DATA, weight=None, denom=None):
  """((loss, logits), grads) with grads for embed, out_ln, out_head and the blocks in
  `trainable_blocks` (a tuple of indices), following `rule` (see the module docstring).

  `axis_name` is the data-parallel axis the rms is taken over (None outside shard_map).
  `weight` [b] (0 for padding) and `denom` (the global batch's number of real examples)
  make the loss sum(weight · loss) / denom, this device's share of the global mean; by
  default every example is real and the loss is the local mean.
  """
  rms_weight = weight  # None: every example real, the rms a plain mean
  if weight is None:
    weight, denom = jnp.ones(labels.shape, jnp.float32), jnp.float32(labels.shape[0])
  fa_vars = {'feedback': feedback} if rule == 'fa' else {}

  def call(p, *args, method):
    return model.apply({'params': p, **fa_vars}, *args, method=method)

  h, embed_vjp = jax.vjp(lambda p: call({**params, 'embed': p}, images, method=ResMLP.embed_images),
                         params['embed'])
  block_vjps = []
  for i in range(model.depth):
    name = f'blocks_{i}'
    f, vjp = jax.vjp(lambda p, x, name=name, i=i: call({**params, name: p}, x, i,
                                                       method=ResMLP.branch), params[name], h)
    block_vjps.append(vjp)
    h = h + f

  def readout(ln, head, hl):
    logits = call({**params, 'out_ln': ln, 'out_head': head}, hl, method=ResMLP.readout)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(weight * losses) / denom, logits

  loss, readout_vjp, logits = jax.vjp(readout, params['out_ln'], params['out_head'], h,
                                      has_aux=True)
  g_ln, g_head, delta = readout_vjp(jnp.ones_like(loss))
  grads = {'out_ln': g_ln, 'out_head': g_head}
  if rule == 'dfa':
    error = ((jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1]))
             * (weight / denom)[:, None])
  for i in reversed(range(model.depth)):
    signal = error @ feedback[f'blocks_{i}'] if rule == 'dfa' else delta
    d_params, d_h = block_vjps[i](signal)
    if i in trainable_blocks:
      scale = 1.0 / _rms(signal, axis_name, rms_weight, denom) if rms_normalize else 1.0
      grads[f'blocks_{i}'] = jax.tree.map(lambda g: g * scale, d_params)
    if rule != 'dfa':
      delta = delta + d_h
  signal0 = error @ feedback['embed'] if rule == 'dfa' else delta
  (grads['embed'],) = embed_vjp(signal0)
  return (loss, logits), grads
