import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlab.data import augment


def cfg(**kw):
  base = dict(resize=0, crop_padding=4, flip=True, normalization='none')
  base.update(kw)
  return ml_collections.ConfigDict(base)


def images(n=8, size=8):
  return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def test_same_key_same_batch_and_keys_matter():
  fn = jax.jit(augment.make_train_augment(cfg()))
  x = images()
  a, b = fn(keys(8), x), fn(keys(8), x)
  np.testing.assert_array_equal(a, b)
  c = fn(keys(8, seed=1), x)
  assert not np.array_equal(a, c)


def test_shapes_and_resize():
  fn = augment.make_train_augment(cfg(resize=16, normalization='cifar100'))
  out = fn(keys(8), images())
  assert out.shape == (8, 16, 16, 3) and out.dtype == jnp.float32
  ev = augment.make_eval_preprocess(cfg(resize=16))
  assert ev(images()).shape == (8, 16, 16, 3)


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
  x = augment.to_float(images(1)[0])
  out = np.asarray(augment.random_crop(jax.random.PRNGKey(3), x, 2))
  padded = np.pad(np.asarray(x), ((2, 2), (2, 2), (0, 0)))
  windows = [padded[t:t + 8, l:l + 8] for t in range(5) for l in range(5)]
  assert any(np.array_equal(out, w) for w in windows)


def test_flip_is_identity_or_mirror_and_both_occur():
  x = augment.to_float(images(1)[0])
  seen = set()
  for k in keys(20):
    out = np.asarray(augment.random_flip(k, x))
    if np.array_equal(out, x):
      seen.add('same')
    else:
      np.testing.assert_array_equal(out, np.asarray(x)[:, ::-1])
      seen.add('mirror')
  assert seen == {'same', 'mirror'}


def test_eval_preprocess_normalises():
  x = np.full((1, 4, 4, 3), 255, np.uint8)
  out = augment.make_eval_preprocess(cfg(normalization='half'))(x)
  np.testing.assert_allclose(out, 1.0)


def test_unknown_normalization_names_choices():
  with pytest.raises(ValueError, match='cifar100'):
    augment.make_train_augment(cfg(normalization='nope'))


def test_rotation_by_90_degrees_is_rot90():
  x = augment.to_float(images(1)[0])
  out = np.asarray(augment.rotate(x, 90.0))
  np.testing.assert_allclose(out, np.rot90(np.asarray(x), k=1), atol=1e-5)
  np.testing.assert_allclose(np.asarray(augment.rotate(x, 0.0)), x, atol=1e-6)


def test_perspective_with_corners_in_place_is_identity():
  x = augment.to_float(images(1)[0])
  corners = jnp.array([[0, 0], [7, 0], [7, 7], [0, 7]], jnp.float32)
  np.testing.assert_allclose(augment._homography(corners, corners), np.eye(3), atol=1e-5)
  out = augment.random_perspective(jax.random.PRNGKey(0), x, 1e-7, 1.0)
  np.testing.assert_allclose(np.asarray(out), x, atol=1e-4)


def test_color_adjustments_match_their_definitions():
  x = augment.to_float(images(1)[0])
  np.testing.assert_allclose(augment.adjust_color(x), x, atol=1e-5)  # neutral factors
  np.testing.assert_allclose(augment.adjust_color(x, brightness=0.5), np.asarray(x) * 0.5,
                             atol=1e-6)
  gray = np.asarray(x) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(augment.adjust_color(x, saturation=0.0),
                             np.repeat(gray[..., None], 3, -1), atol=1e-5)


def test_full_sgdm_set_is_deterministic_and_in_range():
  c = cfg(rotation=15.0, perspective=0.2, perspective_p=0.5, color_jitter=(0.3, 0.3, 0.3, 0.2))
  fn = jax.jit(augment.make_train_augment(c))
  a, b = fn(keys(8), images()), fn(keys(8), images())
  np.testing.assert_array_equal(a, b)
  assert a.shape == (8, 8, 8, 3) and float(a.min()) >= 0 and float(a.max()) <= 1
