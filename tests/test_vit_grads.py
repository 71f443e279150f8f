"""The ViT's hand-written gradients equal autodiff's: the LoRA product and the residual
stream's materialised gradient (both exist for XLA:CPU's speed, not for new mathematics)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.vit import low_rank, materialize_grad


def test_low_rank_gradient_equals_autodiff():
  k = jax.random.split(jax.random.key(0), 4)
  h = jax.random.normal(k[0], (2, 5, 6))
  a = jax.random.normal(k[1], (6, 3))
  b = jax.random.normal(k[2], (3, 4))
  w = jax.random.normal(k[3], (2, 5, 4))  # a loss that weighs every output differently
  ours = jax.grad(lambda *p: jnp.sum(w * low_rank(*p)), argnums=(0, 1, 2))(h, a, b)
  plain = jax.grad(lambda h, a, b: jnp.sum(w * ((h @ a) @ b)), argnums=(0, 1, 2))(h, a, b)
  assert np.allclose(low_rank(h, a, b), (h @ a) @ b, atol=1e-6)
  for x, y in zip(ours, plain):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
  assert all(float(jnp.abs(y).max()) > 0.1 for y in plain)  # none of them trivially zero


def test_materialized_gradient_is_the_gradient():
  x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
  f = lambda x: jnp.sum(jnp.sin(materialize_grad(x) * 3.0) ** 2)
  g = lambda x: jnp.sum(jnp.sin(x * 3.0) ** 2)
  np.testing.assert_array_equal(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(g))(x))
  # A NaN gradient passes through unchanged (the loop runs zero times then).
  nan = jax.jit(jax.grad(lambda x: jnp.sum(materialize_grad(x) * jnp.nan)))(x)
  assert np.isnan(np.asarray(nan)).all()


def test_hyper_connection_products_have_autodiffs_gradients():
  from jaxlab.models.hyper_connections import combine, premix
  n, d = 4, 5
  k = jax.random.split(jax.random.key(1), 6)
  x = jax.random.normal(k[0], (2, 3, n, d))
  y = jax.random.normal(k[1], (2, 3, d))
  w = jax.random.normal(k[2], (2, 3, n, d))
  for lead in ((), (2, 3)):  # maps shared by every token (static) and per token (dynamic)
    pre = jax.random.normal(k[3], (*lead, n))
    post = jax.random.normal(k[4], (*lead, n))
    res = jax.random.normal(k[5], (*lead, n, n))
    plain_premix = lambda p, x: jnp.einsum('...j,...jd->...d', p, x)
    plain_combine = lambda r, x, q, y: (jnp.einsum('...ij,...jd->...id', r, x)
                                        + q[..., :, None] * y[..., None, :])
    ours = jax.grad(lambda *a: jnp.sum(w[..., 0, :] * premix(*a)), argnums=(0, 1))(pre, x)
    ref = jax.grad(lambda *a: jnp.sum(w[..., 0, :] * plain_premix(*a)), argnums=(0, 1))(pre, x)
    ours += jax.grad(lambda *a: jnp.sum(w * combine(*a)), argnums=(0, 1, 2, 3))(res, x, post, y)
    ref += jax.grad(lambda *a: jnp.sum(w * plain_combine(*a)), argnums=(0, 1, 2, 3))(res, x, post, y)
    for a, b in zip(ours, ref):
      assert a.shape == b.shape
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
