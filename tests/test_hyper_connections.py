"""Hyper-connections: Sinkhorn projection, n = 1 equals the plain network, shapes and parameter
counts of both variants; axial RoPE depends on relative positions only."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.metrics.classification import count_params
from jaxlab.models.hyper_connections import HyperSpec, identity_logits, sinkhorn
from jaxlab.models.vit import ViT, axial_rope, rotate

ARCH = dict(num_classes=10, image_size=16, patch=4, width=32, depth=2, heads=2, mlp_dim=64)
IMAGES = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))


def row_col_error(m):
  return float(jnp.max(jnp.abs(m.sum(-1) - 1))), float(jnp.max(jnp.abs(m.sum(-2) - 1)))


@pytest.mark.parametrize('iterations,tau,std', [
    (20, 1.0, 1.0),     # dynamic: Sinkhorn(exp(N(0, 1) logits)), 20 iterations
    (10, 0.05, 0.025),  # static: N(0, 0.025²) logits / τ = 0.05, 10 iterations
])
def test_sinkhorn_random_logits_are_doubly_stochastic(iterations, tau, std):
  logits = std * jax.random.normal(jax.random.PRNGKey(0), (500, 4, 4))
  m = jax.jit(sinkhorn, static_argnums=1)(logits / tau, iterations)
  assert bool(jnp.all(m >= 0))
  rows, cols = row_col_error(m)
  assert rows < 1e-3 and cols < 1e-3, (rows, cols)


def test_sinkhorn_of_spec_initialisation_is_the_identity():
  for iterations, tau in ((10, 0.05), (20, 1.0)):
    m = sinkhorn(identity_logits(4) / tau, iterations)
    assert max(row_col_error(m)) < 1e-3
    np.testing.assert_allclose(m, np.eye(4), atol=2e-3)


def _log_space_sinkhorn(logits, iterations):
  """The log-space rounds (row step, then column step, by logsumexp) in jax.numpy: float64
  under jax.enable_x64."""
  lse = lambda a, axis: jax.scipy.special.logsumexp(a, axis=axis, keepdims=True)
  x = logits
  for _ in range(iterations):
    x = x - lse(x, -1)
    x = x - lse(x, -2)
  return jnp.exp(x)


@pytest.mark.parametrize('spread', [1.0, 4.0, 10.0])
def test_per_token_sinkhorn_in_linear_space_is_the_log_space_one(spread):
  """The dynamic variant's per-token maps are computed in linear space (hyper_connections.
  _sinkhorn_tokens): against the log-space rounds in float64, the same maps and the same
  gradients to float32 rounding, for logits from the identity's biases (0 / −8) plus N(0, s²)."""
  rng = np.random.default_rng(0)
  logits = (np.asarray(identity_logits(4))[None] + spread * rng.standard_normal((300, 4, 4)))
  weights = rng.standard_normal((300, 4, 4))
  loss32 = lambda x: jnp.sum(sinkhorn(x, 20) * weights.astype(np.float32))
  maps, grads = jax.jit(sinkhorn, static_argnums=1)(logits.astype(np.float32), 20), \
      jax.jit(jax.grad(loss32))(logits.astype(np.float32))
  with jax.enable_x64(True):
    want = np.asarray(_log_space_sinkhorn(jnp.asarray(logits), 20))
    want_grads = np.asarray(jax.grad(lambda x: jnp.sum(_log_space_sinkhorn(x, 20) * weights))(
        jnp.asarray(logits)))
  np.testing.assert_allclose(maps, want, atol=2e-6)
  scale = np.abs(want_grads).max()
  np.testing.assert_allclose(grads, want_grads, atol=2e-4 * scale)


def test_per_token_sinkhorn_of_logits_far_apart_stays_finite():
  """Logits 200 apart (beyond LINEAR_FLOOR): no row or column of the linear-space kernel is all
  zeros, so the maps stay finite, non-negative, with columns summing to 1."""
  logits = jnp.asarray(np.random.default_rng(1).uniform(-200, 0, (50, 4, 4)), jnp.float32)
  m = sinkhorn(logits, 20)
  assert bool(jnp.all(jnp.isfinite(m))) and bool(jnp.all(m >= 0))
  assert row_col_error(m)[1] < 1e-5


def test_sinkhorn_needs_more_iterations_for_spread_out_logits():
  # The limit of the static variant's 10 iterations: logits of spread 1 at τ = 0.05 leave rows
  # far from summing to 1 (the record reports this error after training).
  m = sinkhorn(jax.random.normal(jax.random.PRNGKey(0), (500, 4, 4)) / 0.05, 10)
  assert row_col_error(m)[0] > 0.1


def init(model):
  return jax.jit(model.init)(jax.random.PRNGKey(0), IMAGES)['params']


def apply(model, params, **kw):
  return jax.jit(lambda p: model.apply({'params': p}, IMAGES, **kw))(params)


@pytest.mark.parametrize('pos', ['learned', 'rope'])
def test_one_stream_static_equals_plain_residual_and_warns(pos):
  plain = ViT(**ARCH, pos=pos)
  spec = HyperSpec(kind='static', streams=1)
  hyper = ViT(**ARCH, pos=pos, residual=spec)
  p_plain, p_hyper = init(plain), init(hyper)
  # The same branch weights: the plain network's, plus the hyper-connection logits.
  shared = {k: ({**p_hyper[k], **v} if k.startswith('blocks_') else v) for k, v in p_plain.items()}
  assert set(p_hyper['blocks_0']) - set(p_plain['blocks_0']) == {'hc_attn', 'hc_mlp'}
  # Every H is exactly 1; compiled, XLA may fuse the two graphs differently, so allclose.
  np.testing.assert_allclose(apply(hyper, shared), apply(plain, p_plain), rtol=1e-5, atol=1e-6)
  with pytest.warns(UserWarning, match='n = 1'):
    spec.warn_if_trivial()


def test_four_streams_differ_from_plain_and_count_their_parameters():
  plain = init(ViT(**ARCH))
  static = init(ViT(**ARCH, residual=HyperSpec(kind='static', streams=4)))
  dynamic = init(ViT(**ARCH, residual=HyperSpec(kind='dynamic', streams=4, iterations=20)))
  n, d, branches = 4, 32, 4
  # static: H_res logits n², H_pre and H_post logits n each, per wrapped branch.
  assert count_params(static) - count_params(plain) == branches * (n * n + 2 * n)
  # dynamic: RMSNorm scale n·d, projections n·d × (2n + n²), 3 gates, biases 2n + n².
  per_branch = n * d + n * d * (2 * n + n * n) + 3 + 2 * n + n * n
  assert count_params(dynamic) - count_params(plain) == branches * per_branch
  model = ViT(**ARCH, residual=HyperSpec(kind='dynamic', streams=4, iterations=20))
  logits = apply(model, dynamic)
  emb = apply(model, dynamic, embed=True)
  assert logits.shape == (3, 10) and emb.shape == (3, 32)
  assert np.all(np.isfinite(logits))
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # n = 4 is a real comparison: no warning
    HyperSpec(kind='dynamic', streams=4).warn_if_trivial()


def test_dynamic_maps_are_per_token_and_doubly_stochastic():
  from jaxlab.models.hyper_connections import HyperConnection
  spec = HyperSpec(kind='dynamic', streams=4, iterations=20)
  hc = HyperConnection(spec, index=0)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 4, 8))
  params = hc.init(jax.random.PRNGKey(0), x, lambda h: h)
  # Gates opened from 0.01 to 0.1: the maps move with the token, their logits spread by ~0.1
  # around the identity init (near-identity matrices converge slowly: at a spread of 1, 20
  # iterations leave rows ~2e-2 off; the record reports the error measured after training).
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.full_like(p, 0.1) if 'gate' in jax.tree_util.keystr(path) else p,
      params)
  _, inter = hc.apply(params, x, lambda h: h, mutable=['intermediates'])
  (pre, post, res), = inter['intermediates']['maps']
  assert pre.shape == (2, 5, 4) and res.shape == (2, 5, 4, 4)
  assert float(jnp.min(pre)) > 0 and float(jnp.max(post)) < 2
  assert max(row_col_error(res)) < 1e-3
  assert float(jnp.std(pre[:, :, 0])) > 1e-3  # H_pre differs between tokens


def test_axial_rope_scores_depend_on_relative_position_only():
  cos, sin = axial_rope(4, 8, 100.0)
  assert cos.shape == (17, 4)
  np.testing.assert_array_equal(cos[0], 1.0)  # the class token is not rotated
  q, k = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 17, 1, 8))
  rq = rotate(q, cos, sin)[0, :, 0]
  token = lambda r, c: 1 + 4 * r + c
  # One query vector and one key vector at every position: pairs of patches with the same
  # (row, col) offset (1, 2) give the same score.
  rq2 = rotate(jnp.broadcast_to(q[:, :1], q.shape), cos, sin)[0, :, 0]
  rk2 = rotate(jnp.broadcast_to(k[:, :1], k.shape), cos, sin)[0, :, 0]
  a = jnp.dot(rq2[token(0, 0)], rk2[token(1, 2)])
  b = jnp.dot(rq2[token(2, 1)], rk2[token(3, 3)])
  np.testing.assert_allclose(a, b, rtol=1e-5)
  c = jnp.dot(rq2[token(0, 0)], rk2[token(2, 1)])
  assert abs(float(a - c)) > 1e-4  # another offset, another score
  # Rotation keeps norms.
  np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q[0, :, 0], axis=-1),
                             rtol=1e-5)

