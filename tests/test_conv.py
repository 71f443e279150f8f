"""The patch-matmul convolution (jaxlab.models.conv) against a float64 numpy convolution and
against XLA's own, values and both gradients; and LeNet-5 the same with either implementation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.models.conv import Conv, conv_valid, max_pool_2x2
from jaxlab.models.lenet import LeNet5

X = jax.random.normal(jax.random.PRNGKey(0), (6, 9, 8, 3))
W = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 3, 5))


def numpy_conv(x, w):
  """Direct VALID cross-correlation in float64, by the definition."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  kh, kw = w.shape[:2]
  h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = np.zeros((x.shape[0], h, wd, w.shape[3]))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum('bhwc,co->bhwo', x[:, i:i + h, j:j + wd], w[i, j])
  return out


@pytest.mark.parametrize('form', ['patches', 'rows'])
@pytest.mark.parametrize('chunk', [1, 2, 3, 6])
def test_conv_valid_matches_numpy(chunk, form):
  np.testing.assert_allclose(conv_valid(X, W, chunk, form), numpy_conv(X, W), rtol=1e-5,
                             atol=1e-5)


def test_auto_form_is_rows_for_wide_kernel_rows_only():
  # 'auto' picks by the columns of one kernel row (kw·C): LeNet-5's conv1 (5·3) patches, its
  # conv2 (5·64) rows. Checked through the sums' order: each form agrees with itself bit for bit.
  for kernel_shape, form in (((5, 5, 3, 8), 'patches'), ((5, 5, 64, 8), 'rows')):
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 9, 9, kernel_shape[2]))
    w = jax.random.normal(jax.random.PRNGKey(5), kernel_shape)
    np.testing.assert_array_equal(conv_valid(x, w, 2), conv_valid(x, w, 2, form))
  with pytest.raises(ValueError, match='unknown conv form'):
    conv_valid(X, W, 2, 'cols')


@pytest.mark.parametrize('form', ['patches', 'rows'])
def test_conv_valid_gradients_match_hand_derived_and_xla(form):
  dy = jax.random.normal(jax.random.PRNGKey(2), (6, 7, 7, 5))
  loss = lambda x, w, conv: jnp.sum(conv(x, w) * dy)
  got = jax.grad(loss, (0, 1))(X, W, lambda x, w: conv_valid(x, w, 2, form))
  # For L = Σ y·dy with y the correlation: dW[i,j] = Σ x[shifted]ᵀ dy, dx = dy scattered back.
  x, d = np.asarray(X, np.float64), np.asarray(dy, np.float64)
  dw = np.stack([np.stack([np.einsum('bhwc,bhwo->co', x[:, i:i + 7, j:j + 7], d)
                           for j in range(2)]) for i in range(3)])
  dx = np.zeros_like(x)
  for i in range(3):
    for j in range(2):
      dx[:, i:i + 7, j:j + 7] += d @ np.asarray(W, np.float64)[i, j].T
  np.testing.assert_allclose(got[0], dx, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got[1], dw, rtol=1e-4, atol=1e-4)
  xla = jax.grad(loss, (0, 1))(X, W, lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  for a, b in zip(got, xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('padding', ['VALID', 'SAME'])
def test_conv_module_equals_flax_conv(padding):
  # param_init='lecun' is flax's initialisers (the default, 'torch', is PyTorch's:
  # tests/test_fidelity_distributed.py).
  ours = Conv(4, (3, 2), padding=padding, impl='patches', chunk=4,  # gcd(4, 6) = 2 per chunk
              param_init='lecun')
  ref = nn.Conv(4, (3, 2), padding=padding)
  p_ours = ours.init(jax.random.PRNGKey(3), X)
  p_ref = ref.init(jax.random.PRNGKey(3), X)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_ref)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref)):
    np.testing.assert_array_equal(a, b)  # same names, shapes and initialisers
  np.testing.assert_allclose(ours.apply(p_ref, X), ref.apply(p_ref, X), rtol=1e-5, atol=1e-5)


def test_max_pool_2x2_equals_flax_max_pool():
  np.testing.assert_array_equal(max_pool_2x2(X), nn.max_pool(X, (2, 2), strides=(2, 2)))


def numpy_pool_grad(x, dy):
  """PyTorch's max_pool2d(2, 2) backward, transcribed: each window's gradient goes to its first
  maximum, scanning the window row by row (`val > maxval` keeps the earliest)."""
  x, dy = np.asarray(x), np.asarray(dy)
  dx = np.zeros_like(x)
  for b, i, j, c in np.ndindex(dy.shape):
    window = [(2 * i + di, 2 * j + dj) for di in (0, 1) for dj in (0, 1)]
    best = window[0]
    for h, w in window[1:]:
      if x[b, h, w, c] > x[(b, *best, c)]:
        best = (h, w)
    dx[(b, *best, c)] += dy[b, i, j, c]
  return dx


@pytest.mark.parametrize('shape', [(2, 6, 8, 3), (1, 7, 5, 2)])  # the odd edge is dropped
def test_max_pool_2x2_gradient_is_pytorchs_first_maximum(shape):
  # Small integers: many windows hold tied maxima (JAX's rule for max would split among them).
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, shape), jnp.float32)
  dy = jax.random.normal(jax.random.PRNGKey(2), (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
  y, vjp = jax.vjp(max_pool_2x2, x)
  np.testing.assert_array_equal(y, nn.max_pool(x, (2, 2), strides=(2, 2)))
  (dx,) = vjp(dy)
  np.testing.assert_array_equal(dx, numpy_pool_grad(x, dy))


def test_lenet_pools_before_its_relu_with_relu_then_pools_values_and_gradients():
  images = jax.random.normal(jax.random.PRNGKey(6), (4, 16, 16, 3))
  model = LeNet5(10, 'xla')
  params = jax.jit(model.init)(jax.random.PRNGKey(7), images)

  def relu_then_pool(p):  # the reference order, with PyTorch's pool gradient
    x = images
    for name in ('conv1', 'conv2'):
      x = jax.lax.conv_general_dilated(x, p['params'][name]['kernel'], (1, 1), 'VALID',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      x = max_pool_2x2(nn.relu(x + p['params'][name]['bias']))
    x = x.reshape(x.shape[0], -1)
    for name in ('fc1', 'fc2', 'head'):
      x = x @ p['params'][name]['kernel'] + p['params'][name]['bias']
      x = nn.relu(x) if name != 'head' else x
    return x

  loss = lambda f: jax.jit(jax.value_and_grad(lambda p: jnp.mean(jax.nn.log_softmax(f(p))[:, 0])))
  (l_ours, g_ours) = loss(lambda p: model.apply(p, images))(params)
  l_ref, g_ref = loss(relu_then_pool)(params)
  np.testing.assert_allclose(l_ours, l_ref, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_lenet_same_loss_and_gradients_with_either_conv():
  images = jax.random.normal(jax.random.PRNGKey(4), (4, 16, 16, 3))
  params = jax.jit(LeNet5(10, 'xla').init)(jax.random.PRNGKey(5), images)
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p: jnp.mean(jax.nn.log_softmax(m.apply(p, images))[:, 0])))(params)
  (l_xla, g_xla), (l_pat, g_pat) = loss(LeNet5(10, 'xla')), loss(LeNet5(10, 'patches'))
  np.testing.assert_allclose(l_pat, l_xla, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_pat), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_unknown_impl_names_the_choices():
  with pytest.raises(ValueError, match='auto, xla, patches'):
    Conv(4, impl='cudnn').init(jax.random.PRNGKey(0), X)
