import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

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


# --- Colour adjustments and jitter ---------------------------------------------------------------
# Truth is a float64 numpy re-derivation of torchvision's definitions (transforms/
# _functional_tensor.py), with its own HSV conversion; and torchvision itself where importable.

COLOUR_FACTORS = {'brightness': (0.0, 0.3, 1.0, 1.7), 'contrast': (0.0, 0.5, 1.0, 1.9),
                  'saturation': (0.0, 0.4, 1.0, 1.9), 'hue': (-0.5, -0.2, 0.0, 0.13, 0.5)}
JITTER_NAMES = ('brightness', 'contrast', 'saturation', 'hue')  # torchvision's op numbering
LUMA = np.array([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights


def colour_images():
  """4 uint8 images of 8×8: random pixels, primaries and secondaries, grays, black and white; the
  second image is bright, so that factors above 1 clip."""
  u = np.random.default_rng(5).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  u[0, 0] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
             [0, 0, 0], [255, 255, 255]]
  u[0, 1, :4] = [[128, 128, 128], [200, 50, 50], [10, 200, 10], [255, 128, 0]]
  u[1] = 255 - u[1] // 4
  return u


def np_rgb_to_hsv(x):
  """The textbook RGB -> HSV of float RGB [..., 3] in [0, 1]; h in [0, 1)."""
  r, g, b = np.moveaxis(x, -1, 0)
  v = x.max(-1)
  c = v - x.min(-1)
  s = np.where(v > 0, c / np.where(v > 0, v, 1), 0.0)
  safe = np.where(c > 0, c, 1)
  h = np.select([c == 0, v == r, v == g],
                [0.0, ((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4)
  return h / 6, s, v


def np_hsv_to_rgb(h, s, v):
  """HSV -> RGB as f(n) = v - v·s·clip(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6, n = 5, 3, 1."""
  k = (np.array([5.0, 3.0, 1.0]) + 6 * h[..., None]) % 6
  return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def np_adjust(name, images, factor):
  """torchvision's adjust_<name> of uint8 or float images [..., H, W, 3], in float64 numpy:
  uint8 results as levels (truncated where torchvision casts to uint8), floats in [0, 1]."""
  uint8 = images.dtype == np.uint8
  x = np.asarray(images, np.float64)
  top = 255 if uint8 else 1
  blend = lambda other: (np.floor if uint8 else np.asarray)(
      np.clip(factor * x + (1 - factor) * other, 0, top))
  gray = (np.floor if uint8 else np.asarray)(x @ LUMA)  # rgb_to_grayscale, .to(uint8)
  if name == 'brightness':
    return blend(0.0)
  if name == 'contrast':
    return blend(gray.mean(axis=(-2, -1), keepdims=True)[..., None])
  if name == 'saturation':
    return blend(gray[..., None])
  h, s, v = np_rgb_to_hsv(x / 255 if uint8 else x)
  out = np_hsv_to_rgb((h + factor) % 1, s, v)
  return np.floor(out * (256 - 1e-3)) if uint8 else out  # convert_image_dtype to uint8


def assert_close_to_reference(got, want, images):
  """uint8: within 1 level, and only in a few pixels (where float32 and float64 truncate on
  either side of a level); floats: to float32 round-off."""
  assert got.dtype == images.dtype and got.shape == want.shape
  if images.dtype == np.uint8:
    off = np.abs(got.astype(np.float64) - want)
    assert off.max() <= 1 and off.mean() < 0.02
  else:
    np.testing.assert_allclose(got, want, atol=1e-5)


# One compile per op and dtype, with the factor traced and vmapped, as in the train step.
ADJUST = {name: jax.jit(jax.vmap(getattr(augment, 'adjust_' + name), in_axes=(None, 0)))
          for name in COLOUR_FACTORS}
# Colour jitter of a batch, one key per image, and its parameters (strengths static).
JITTER = jax.jit(jax.vmap(augment.random_color_jitter, in_axes=(0, 0, None)), static_argnums=2)
JITTER_PARAMS = jax.jit(jax.vmap(augment.color_jitter_params, in_axes=(0, None)),
                        static_argnums=1)
JITTER_STRENGTHS = (0.5, 1.5, 0.5, 0.5)


def jitter_batch():
  """16 keys and 16 float images of 4×4 for the jitter tests (one compile between them)."""
  x = colour_images()[:, :4, :4].astype(np.float32) / 255
  return keys(4000, seed=1)[:16], np.concatenate([x] * 4)


@pytest.mark.parametrize('name', list(COLOUR_FACTORS))
def test_colour_adjustments_match_numpy_definitions(name):
  u = colour_images()
  factors = COLOUR_FACTORS[name]
  for x in (u, u.astype(np.float32) / 255):
    out = np.asarray(ADJUST[name](x, jnp.asarray(factors, jnp.float32)))
    for got, factor in zip(out, factors):
      assert_close_to_reference(got, np_adjust(name, x, factor), x)


def test_colour_adjustments_python_factors_one_image_and_special_cases():
  u = colour_images()
  x = u.astype(np.float32) / 255
  names = list(COLOUR_FACTORS)

  @jax.jit  # one compile: Python factors, on one uint8 image [H, W, 3] and on float images
  def cases(u0, x):
    one = [getattr(augment, 'adjust_' + n)(u0, COLOUR_FACTORS[n][1]) for n in names]
    neutral = [getattr(augment, 'adjust_' + n)(x, 0.0 if n == 'hue' else 1.0) for n in names]
    zero = [augment.adjust_brightness(x, 0.0), augment.adjust_contrast(x, 0.0),
            augment.adjust_saturation(x, 0.0)]
    return one, neutral, zero

  one, neutral, (black, contrast0, saturation0) = cases(u[0], x)
  for name, got in zip(names, one):
    assert_close_to_reference(np.asarray(got), np_adjust(name, u[0], COLOUR_FACTORS[name][1]),
                              u[0])
  for got in neutral:
    np.testing.assert_allclose(got, x, atol=1e-6)
  np.testing.assert_array_equal(black, 0)
  means = (x @ LUMA).mean((1, 2))  # contrast 0: each image's mean gray
  np.testing.assert_allclose(contrast0, np.broadcast_to(means[:, None, None, None], x.shape),
                             atol=1e-6)
  np.testing.assert_allclose(saturation0, np.repeat((x @ LUMA)[..., None], 3, -1), atol=1e-6)
  with pytest.raises(ValueError, match='hue'):
    augment.adjust_hue(x, 0.6)
  with pytest.raises(ValueError, match='saturation'):
    augment.adjust_saturation(x, -0.1)


def test_uint8_contrast_mean_under_jit():
  # The mean of the truncated uint8 grayscale. On XLA's CPU backend (jaxlib 0.10.2), a fused
  # reduction over a batch this size ignored a float -> uint8 -> float truncation, which moved
  # the mean by about half a level and so a fifth of the pixels by one.
  u = np.random.default_rng(7).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  out = np.asarray(jax.jit(augment.adjust_contrast)(u, jnp.float32(0.0)))
  assert_close_to_reference(out, np_adjust('contrast', u, 0.0), u)


def test_hue_is_the_hsv_rotation():
  # A turn of 1/3 takes red to green and green to blue, 1/6 red to yellow, 1/2 red to cyan, and
  # leaves grays alone. (The former YIQ rotation took red by 1/3 to about (24, 42, 255).)
  u = colour_images()
  turns = jnp.asarray([1 / 3, 1 / 6, -0.5, 0.0, 0.0])  # the shape of the compiled ADJUST['hue']
  out = np.asarray(ADJUST['hue'](u.astype(np.float32) / 255, turns))
  pixels = lambda i, *cols: out[i, 0, 0, list(cols)] * 255
  np.testing.assert_allclose(pixels(0, 0, 1, 6, 7), [[0, 255, 0], [0, 0, 255], [0, 0, 0],
                                                      [255, 255, 255]], atol=1e-3)
  np.testing.assert_allclose(out[0, 0, 1, :4] * 255, [[128, 128, 128], [50, 200, 50],
                                                       [10, 10, 200], [0, 255, 128]], atol=1e-3)
  np.testing.assert_allclose(pixels(1, 0), [[255, 255, 0]], atol=1e-3)
  np.testing.assert_allclose(pixels(2, 0, 3), [[0, 255, 255], [0, 0, 255]], atol=1e-3)
  levels = np.asarray(ADJUST['hue'](u, turns))  # uint8 gives the same levels
  np.testing.assert_array_equal(levels[0, 0, 0, :2], [[0, 255, 0], [0, 0, 255]])


def np_jitter(image, order, factors, strengths):
  """ColorJitter's forward: the ops in `order`, those of strength 0 skipped."""
  for i in order:
    if strengths[i]:
      image = np_adjust(JITTER_NAMES[i], image, factors[i]).astype(image.dtype)
  return image


def test_color_jitter_random_order_and_factors():
  strengths = JITTER_STRENGTHS
  orders, factors = (np.asarray(a) for a in JITTER_PARAMS(keys(4000, seed=1), strengths))
  # Over many keys: permutations, each op first about a quarter of the time; the factors in
  # their ranges ([max(0, 1 - s), 1 + s] and [-h, h]), spanning them.
  assert all(sorted(o) == [0, 1, 2, 3] for o in orders[:100])
  first = np.bincount(orders[:, 0], minlength=4)
  assert all(850 < c < 1150 for c in first), first
  for f, (lo, hi) in zip(factors.T, ((0.5, 1.5), (0.0, 2.5), (0.5, 1.5), (-0.5, 0.5))):
    assert lo <= f.min() < lo + 0.01 * (hi - lo) and hi - 0.01 * (hi - lo) < f.max() <= hi
  with pytest.raises(ValueError, match='hue'):
    augment.color_jitter_params(keys(1)[0], (0.1, 0.1, 0.1, 0.6))

  # The first 16 keys on a batch: different orders for the images, each image in its own order,
  # which matters: for most, the same factors in the reverse order give an image more than 2
  # levels away.
  ks, images = jitter_batch()
  orders, factors = orders[:16], factors[:16]
  out = np.asarray(JITTER(ks, images, strengths))
  assert len({tuple(o) for o in orders}) >= 8
  reversed_off = []
  for got, im, o, f in zip(out, images, orders, factors):
    np.testing.assert_allclose(got, np_jitter(im, o, f, strengths), atol=1e-5)
    reversed_off.append(np.abs(got - np_jitter(im, o[::-1], f, strengths)).max())
  assert sum(d > 2 / 255 for d in reversed_off) >= 12 and max(reversed_off) > 0.1
  # Strength 0 skips the op; the others keep their order and factors.
  off = (0.5, 0.0, 0.5, 0.0)
  out = np.asarray(JITTER(ks, images, off))
  for got, im, o, f in zip(out, images, orders, factors):
    np.testing.assert_allclose(got, np_jitter(im, o, f, off), atol=1e-5)


def test_full_sgdm_set_is_deterministic_and_in_range():
  c = cfg(rotation=15.0, perspective=0.2, perspective_p=0.5, color_jitter=(0.3, 0.3, 0.3, 0.2))
  fn = jax.jit(augment.make_train_augment(c))
  a, b = fn(keys(8), images()), fn(keys(8), images())
  np.testing.assert_array_equal(a, b)
  assert a.shape == (8, 8, 8, 3) and float(a.min()) >= 0 and float(a.max()) <= 1


# --- Random resized crop, RandAugment, random erasing -------------------------------------------
# Truth is PIL (an independent implementation of the same definitions) or boxes computed by hand.

OPS = augment.RANDAUGMENT_OPS
op = jax.jit(augment.randaugment_op)  # one compile per image shape, reused by the tests below


def uint8_image(size=32, seed=1):
  return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def levels(x):
  return np.round(np.asarray(x) * 255).astype(int)


def pil_per_channel(x, fn):
  """Apply fn to each channel of a float image as a PIL 'F' image."""
  return np.stack([np.asarray(fn(Image.fromarray(np.asarray(x)[..., c])))
                   for c in range(x.shape[-1])], -1)


def test_resized_crop_matches_pil_bilinear_when_upscaling():
  # PIL antialiases when downscaling, so compare on an upscale (a 5×7 box to 16×16).
  x = augment.to_float(uint8_image(16))
  out = augment.resized_crop(x, 3, 2, 5, 7, 16)
  want = pil_per_channel(x, lambda im: im.crop((2, 3, 9, 8)).resize((16, 16), Image.BILINEAR))
  np.testing.assert_allclose(out, want, atol=1e-5)


def test_random_resized_crop_boxes_by_hand():
  def box(area, aspect, top, left, scale, ratio):  # uniforms of each of the 10 tries, offsets
    u = jnp.asarray(list(area) + list(aspect) + [top, left], jnp.float32)
    return tuple(int(v) for v in augment._crop_box(u, 16, 16, scale, ratio))

  # Area 0.08 + 0.92·0.5 of 256 = 138.24, aspect 4/3: sides round(13.58) wide, round(10.18) high;
  # top floor(0.5·7), left floor(0.99·3).
  assert box([0.5] * 10, [1.0] * 10, 0.5, 0.99, (0.08, 1.0), (3 / 4, 4 / 3)) == (3, 2, 10, 14)
  # The first try (23 wide) does not fit; the second (11×11) does, not the later 14×14 ones.
  assert box([1.0, 0.0] + [0.5] * 8, [1.0] + [0.5] * 9, 0.0, 0.0,
             (0.5, 1.0), (1 / 2, 2.0)) == (0, 0, 11, 11)
  # Nothing fits: the central crop of the closest ratio.
  assert box([0.5] * 10, [0.5] * 10, 0.5, 0.5, (4.0, 4.0), (2.0, 3.0)) == (4, 0, 8, 16)
  assert box([0.5] * 10, [0.5] * 10, 0.5, 0.5, (4.0, 4.0), (1 / 3, 1 / 2)) == (0, 4, 16, 8)
  # Scale 1 and ratio 1: the whole image, and the crop is the identity.
  assert box([0.3] * 10, [0.7] * 10, 0.3, 0.6, (1.0, 1.0), (1.0, 1.0)) == (0, 0, 16, 16)
  x = augment.to_float(uint8_image(16))
  out = augment.random_resized_crop(keys(1)[0], x, 16, (1.0, 1.0), (1.0, 1.0))
  np.testing.assert_allclose(out, x, atol=1e-6)


def test_random_resized_crop_is_a_window_at_random_positions():
  # A quarter of the area, square, at 8×8: an unscaled 8×8 window, at more than one position.
  x = augment.to_float(uint8_image(16))
  windows = {(t, l): np.asarray(x[t:t + 8, l:l + 8]) for t in range(9) for l in range(9)}
  found = []
  for k in keys(6):
    out = np.asarray(augment.random_resized_crop(k, x, 8, (0.25, 0.25), (1.0, 1.0)))
    found.append(next((tl for tl, w in windows.items() if np.allclose(out, w, atol=1e-6)), None))
  assert None not in found and len(set(found)) > 1


def test_random_erasing_rectangles():
  x = 1 + augment.to_float(uint8_image(16))  # no zeros, so erased pixels are the zeros
  n, area = 64, 16 * 16

  @jax.jit  # one compile for all the cases
  def cases(ks):
    erase = lambda p, **kw: jax.vmap(lambda k: augment.random_erasing(k, x, p, **kw))(ks)
    return erase(1.0), erase(1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0)), erase(0.5)

  always, exact, half = (np.asarray(o) for o in cases(keys(n)))
  boxes = set()
  for out in always:  # p = 1 always erases
    mask = np.all(out == 0, -1)
    assert mask.any() and np.all(out[mask] == 0)
    np.testing.assert_array_equal(out[~mask], np.asarray(x)[~mask])  # the rest is unchanged
    rows, cols = np.nonzero(mask)
    t, l, h, w = rows.min(), cols.min(), np.ptp(rows) + 1, np.ptp(cols) + 1
    assert mask.sum() == h * w  # a rectangle
    # Sides are rounded from sqrt(area·ratio), sqrt(area/ratio), so the drawn area (a fraction
    # in [0.02, 0.33]) and ratio (in [0.3, 3.3]) lie within half a pixel of each side.
    assert (h - 0.5) * (w - 0.5) <= 0.33 * area and (h + 0.5) * (w + 0.5) >= 0.02 * area
    assert (h - 0.5) / (w + 0.5) <= 3.3 and (h + 0.5) / (w - 0.5) >= 0.3
    boxes.add((t, l, h, w))
  assert len(boxes) > n // 2
  # Without rounding, the area is exact: a quarter, 8×8.
  np.testing.assert_array_equal(np.all(exact == 0, -1).sum((1, 2)), 64)
  assert 10 < np.all(half == 0, -1).any((1, 2)).sum() < n - 10  # p = 1/2
  np.testing.assert_array_equal(augment.random_erasing(keys(1)[0], x, 0.0), x)  # p = 0


def test_randaugment_pixel_ops_match_pil():
  u = uint8_image(32)
  u[..., 2] = 77  # a constant channel: equalize and autocontrast leave it alone
  x, pil = augment.to_float(u), Image.fromarray(u)
  at = lambda name, bin_: levels(op(x, OPS.index(name), bin_ / 30))
  # Posterize: 8 - round(bin / 7.5) bits; exact.
  np.testing.assert_array_equal(at('Posterize', 9), np.asarray(ImageOps.posterize(pil, 7)))
  np.testing.assert_array_equal(at('Posterize', 30), np.asarray(ImageOps.posterize(pil, 4)))
  # Solarize: threshold 1 - bin/30, i.e. 127.5 of 255 at bin 15; exact.
  np.testing.assert_array_equal(at('Solarize', 15), np.asarray(ImageOps.solarize(pil, 128)))
  # Equalize: torchvision copies PIL's formula; exact.
  np.testing.assert_array_equal(at('Equalize', 0), np.asarray(ImageOps.equalize(pil)))
  # AutoContrast: PIL truncates to uint8 where we keep floats: within 1 level.
  low = augment.to_float(40 + u // 2)
  diff = levels(op(low, OPS.index('AutoContrast'), 0.0)) - np.asarray(
      ImageOps.autocontrast(Image.fromarray(40 + u // 2)), int)
  assert np.abs(diff).max() <= 1
  # Sharpness 1 ± 0.9: PIL rounds the smoothed image and the blend to uint8: within 1 level.
  for sign in (1, -1):
    want = np.asarray(ImageEnhance.Sharpness(pil).enhance(1 + sign * 0.9), int)
    assert np.abs(at('Sharpness', 30 * sign) - want).max() <= 1


def test_randaugment_colour_ops_are_the_colour_adjustments():
  # torchvision's RandAugment calls adjust_brightness / adjust_saturation / adjust_contrast with
  # factor 1 + magnitude.
  x = augment.to_float(uint8_image(32))
  for name, adjust in (('Brightness', 'brightness'), ('Color', 'saturation'),
                       ('Contrast', 'contrast')):
    for level in (-1.0, -0.3, 0.3, 1.0):
      np.testing.assert_allclose(op(x, OPS.index(name), level),
                                 np_adjust(adjust, np.asarray(x), 1 + 0.9 * level), atol=1e-5)


def test_randaugment_geometric_ops():
  x = augment.to_float(uint8_image(32))
  # Shear by 0.3 (bin 30) about the top-left corner, as PIL's affine (1, 0.3, 0, 0, 1, 0). PIL
  # clamps at the border where we fill zeros, so compare where all four neighbours are inside.
  r, c = np.meshgrid(np.arange(32), np.arange(32), indexing='ij')
  for name, data, src in (('ShearX', (1, 0.3, 0, 0, 1, 0), c + 0.3 * (r + 0.5)),
                          ('ShearY', (1, 0, 0, 0.3, 1, 0), r + 0.3 * (c + 0.5))):
    want = pil_per_channel(x, lambda im: im.transform((32, 32), Image.AFFINE, data,
                                                      Image.BILINEAR))
    inside = src <= 31
    np.testing.assert_allclose(np.asarray(op(x, OPS.index(name), 1.0))[inside], want[inside],
                               atol=1e-5)
  # Translate: int(150/331 · 32 · 9/30) = 4 pixels, right / up, zero fill.
  out = np.asarray(op(x, OPS.index('TranslateX'), 0.3))
  np.testing.assert_allclose(out[:, 4:], x[:, :-4], atol=1e-6)
  assert not out[:, :4].any()
  out = np.asarray(op(x, OPS.index('TranslateY'), -0.3))
  np.testing.assert_allclose(out[:-4], x[4:], atol=1e-6)
  assert not out[-4:].any()


def test_randaugment_magnitude_zero_is_identity_for_identity_like_ops():
  # Not the identity at magnitude 0: Solarize (it inverts level 255) and Equalize. AutoContrast
  # is, on this image, whose channels all span levels 0 to 255.
  u = uint8_image(32)
  assert (u.min((0, 1)) == 0).all() and (u.max((0, 1)) == 255).all()
  x = augment.to_float(u)
  for name in OPS:
    out = op(x, OPS.index(name), 0.0)
    if name in ('Solarize', 'Equalize'):
      assert not np.allclose(out, x, atol=1e-3), name
    else:
      np.testing.assert_allclose(out, x, atol=1e-5, err_msg=name)
    if name not in ('Identity', 'AutoContrast'):  # and at bin 15 of 30 they all act
      assert not np.allclose(op(x, OPS.index(name), 0.5), x, atol=1e-3), name


def test_train_augment_with_rrc_randaugment_and_erasing():
  # Also RandAugment under jit and vmap (one compile serves both: they are the slow ones).
  c = cfg(resize=16, crop_padding=0, flip=False, rrc_scale=(0.5, 1.0), rrc_ratio=(1.0, 1.0),
          randaugment_ops=2, randaugment_magnitude=9, erasing_p=1.0, normalization='cifar10')
  fn = jax.jit(augment.make_train_augment(c))
  on = np.asarray(fn(keys(8), images()))
  np.testing.assert_array_equal(on, fn(keys(8), images()))
  assert not np.array_equal(on, fn(keys(8, seed=1), images()))
  assert on.shape == (8, 16, 16, 3) and on.dtype == np.float32 and np.isfinite(on).all()
  # Erasing writes 0 after normalising, which no normalised pixel is (black is -mean/std).
  erased = np.all(on == 0, -1)
  assert erased.any((1, 2)).all()
  mean, std = augment.NORMALIZATIONS['cifar10']
  before = (on * np.asarray(std) + np.asarray(mean))[~erased]  # in [0, 1] before normalising
  assert before.min() >= -1e-6 and before.max() <= 1 + 1e-6
  off = np.asarray(augment.make_eval_preprocess(c)(images()))  # what training gives, all off
  assert all(not np.allclose(a, b, atol=1e-3) for a, b in zip(on, off))


def test_colour_ops_match_torchvision():
  torch = pytest.importorskip('torch')
  F = pytest.importorskip('torchvision.transforms.functional')
  to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(a)).movedim(-1, -3)
  from_torch = lambda t: t.movedim(-3, -1).numpy()
  u = colour_images()
  for x in (u, u.astype(np.float32) / 255):
    for name, factors in COLOUR_FACTORS.items():
      out = np.asarray(ADJUST[name](x, jnp.asarray(factors, jnp.float32)))
      for got, factor in zip(out, factors):
        want = from_torch(getattr(F, 'adjust_' + name)(to_torch(x), factor))
        assert_close_to_reference(got, want.astype(np.float64), x)
  # ColorJitter: torchvision's ops in our order with our factors (its own draws use torch's RNG).
  ks, images = jitter_batch()
  out = np.asarray(JITTER(ks, images, JITTER_STRENGTHS))
  orders, factors = (np.asarray(a)[:16] for a in JITTER_PARAMS(keys(4000, seed=1),
                                                                JITTER_STRENGTHS))
  for got, im, o, f in zip(out, images, orders, factors.tolist()):
    t = to_torch(im)
    for i in o:
      t = getattr(F, 'adjust_' + JITTER_NAMES[i])(t, f[i])
    np.testing.assert_allclose(got, from_torch(t), atol=1e-5)
  # RandAugment's colour ops.
  x = augment.to_float(uint8_image(32))
  for name, adjust in (('Brightness', 'brightness'), ('Color', 'saturation'),
                       ('Contrast', 'contrast')):
    for level in (-1.0, 0.3):
      want = from_torch(getattr(F, 'adjust_' + adjust)(to_torch(np.asarray(x)), 1 + 0.9 * level))
      np.testing.assert_allclose(op(x, OPS.index(name), level), want, atol=1e-5)
