"""Augmentation on the device, inside the jitted step.

Every operation works on one image (H, W, C) with its own PRNG key, so a batch
is augmented by `vmap` over per-example keys. The trainer derives each
example's key from its position in the global batch, which makes the result
independent of how the batch is sharded over devices.
"""

import math

import jax
import jax.numpy as jnp

# Per-channel (mean, std) of pixels in [0, 1].
NORMALIZATIONS = {
    'none': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # Inputs in [-1, 1]: what the AugReg/timm ViT weights were trained with.
    'half': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def to_float(image):
  """uint8 pixels to float32 in [0, 1]."""
  return image.astype(jnp.float32) / 255.0


def resize(image, size):
  """Bilinear resize of one (H, W, C) image to (size, size, C)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return jax.image.resize(image, (size, size, image.shape[2]), method='bilinear',
                          antialias=False)


def random_crop(key, image, padding):
  """Zero-pad by `padding` on each side, then crop the original size at a random offset."""
  if padding <= 0:
    return image
  h, w, c = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, c))


def random_flip(key, image):
  """Mirror left-right with probability 1/2."""
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


def _sample(image, rows, cols, order=1):
  """Bilinear (order 1) or nearest (order 0) samples of `image` at float coordinates
  (rows, cols); zero outside."""
  coords = jnp.stack([rows, cols])
  return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], coords, order=order,
                                                      mode='constant', cval=0.0)
                    for c in range(image.shape[-1])], axis=-1)


def _sample_per_channel(image, rows, cols, order=1):
  """`_sample`, vmapped over the channels rather than looping: the same numbers up to XLA's
  fusion under jit, and several times faster to compile. The older ops keep `_sample` so that
  their jitted results stay bit-identical."""
  one = lambda channel: _sample(channel[..., None], rows, cols, order)[..., 0]
  return jax.vmap(one, in_axes=-1, out_axes=-1)(image)


def _grid(image):
  h, w = image.shape[:2]
  return jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                      indexing='ij')


def _rotation_coords(image, degrees):
  """Where each output pixel of `rotate(image, degrees)` samples from: (rows, cols)."""
  h, w = image.shape[:2]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  t = -jnp.deg2rad(degrees)  # counter-clockwise as displayed (rows down), like np.rot90
  r, c = _grid(image)
  # Inverse map: where each output pixel comes from.
  src_r = cy + (r - cy) * jnp.cos(t) - (c - cx) * jnp.sin(t)
  src_c = cx + (r - cy) * jnp.sin(t) + (c - cx) * jnp.cos(t)
  return src_r, src_c


def rotate(image, degrees):
  """Rotate by `degrees` (counter-clockwise) about the centre, bilinear, zero fill."""
  return _sample(image, *_rotation_coords(image, degrees))


def random_rotation(key, image, max_degrees):
  """Rotate by an angle drawn uniformly from [-max_degrees, max_degrees]."""
  return rotate(image, jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees))


def _homography(src, dst):
  """3×3 H with H·[dst, 1] ∝ [src, 1] for four (x, y) point pairs."""
  rows = []
  for (x, y), (u, v) in zip(dst, src):
    rows.append(jnp.array([x, y, 1, 0, 0, 0, -u * x, -u * y]))
    rows.append(jnp.array([0, 0, 0, x, y, 1, -v * x, -v * y]))
  a = jnp.stack(rows)
  b = jnp.reshape(src, (-1,))
  return jnp.append(jnp.linalg.solve(a, b), 1.0).reshape(3, 3)


def random_perspective(key, image, distortion, p):
  """torchvision's RandomPerspective: with probability p, move each corner inwards by up to
  distortion·half the side, and warp the image so the corners land there (bilinear, zero fill)."""
  if distortion <= 0 or p <= 0:
    return image
  h, w = image.shape[:2]
  apply_key, corner_key = jax.random.split(key)
  half = jnp.array([w / 2, h / 2]) * distortion
  corners = jnp.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], jnp.float32)
  inward = jnp.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], jnp.float32)
  moved = corners + inward * jax.random.uniform(corner_key, (4, 2)) * half
  hom = _homography(corners, moved)  # output (moved) -> input (original) coordinates
  r, c = _grid(image)
  pts = jnp.stack([c, r, jnp.ones_like(r)], axis=-1) @ hom.T
  warped = _sample(image, pts[..., 1] / pts[..., 2], pts[..., 0] / pts[..., 2])
  return jnp.where(jax.random.bernoulli(apply_key, p), warped, image)


# torchvision's colour adjustments (transforms/_functional_tensor.py), on uint8 or float images
# [..., H, W, 3]. For uint8 they follow torchvision's uint8 path: the grayscale and each blend are
# computed in float32 and truncated to uint8, and adjust_hue goes through float in [0, 1]. The
# truncations are floors in float32 (the values are >= 0): XLA on CPU (jaxlib 0.10.2) drops the
# rounding of a float -> uint8 -> float round trip that feeds a fused reduction, as the contrast
# mean would.


def _check_rgb(images):
  images = jnp.asarray(images)
  if images.ndim < 3 or images.shape[-1] != 3:
    raise ValueError(f'expected images [..., H, W, 3], got shape {images.shape}')
  return images


def _check_factor(name, factor, lo, hi):
  """torchvision's range checks, where the factor is a Python number (a traced one is not)."""
  if isinstance(factor, (int, float)) and not lo <= factor <= hi:
    raise ValueError(f'{name} factor {factor} is not in [{lo}, {hi}]')


def _grayscale(images):
  """torchvision's rgb_to_grayscale, [..., H, W]: 0.2989 R + 0.587 G + 0.114 B, in the images'
  float dtype, or for uint8 in float32 truncated to whole levels (torch's .to(uint8))."""
  uint8 = images.dtype == jnp.uint8
  x = images.astype(jnp.float32) if uint8 else images
  gray = 0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  return jnp.floor(gray) if uint8 else gray


def _blend(images, other, factor):
  """torchvision's _blend: factor·images + (1 - factor)·other, clipped to [0, 1] ([0, 255] for
  uint8, then truncated), in the images' dtype."""
  uint8 = images.dtype == jnp.uint8
  x = images.astype(jnp.float32) if uint8 else images
  out = jnp.clip(factor * x + (1 - factor) * other, 0, 255 if uint8 else 1)
  return (jnp.floor(out) if uint8 else out).astype(images.dtype)


def adjust_brightness(images, factor):
  """torchvision's adjust_brightness: blend with black, i.e. factor·images, clipped."""
  images = _check_rgb(images)
  _check_factor('brightness', factor, 0, math.inf)
  return _blend(images, jnp.zeros((), jnp.float32), factor)


def adjust_contrast(images, factor):
  """torchvision's adjust_contrast: blend with the mean over each image of its grayscale (for
  uint8, the mean of the truncated uint8 grayscale, in float32), clipped."""
  images = _check_rgb(images)
  _check_factor('contrast', factor, 0, math.inf)
  mean = jnp.mean(_grayscale(images), axis=(-2, -1), keepdims=True)
  return _blend(images, mean[..., None], factor)


def adjust_saturation(images, factor):
  """torchvision's adjust_saturation: blend with the grayscale image, pixel by pixel, clipped.
  Factor 0 is the grayscale image."""
  images = _check_rgb(images)
  _check_factor('saturation', factor, 0, math.inf)
  return _blend(images, _grayscale(images)[..., None], factor)


def _rgb_to_hsv(x):
  """torchvision's _rgb2hsv of float RGB [..., 3] in [0, 1]: (h, s, v), h in [0, 1)."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc, minc = jnp.max(x, axis=-1), jnp.min(x, axis=-1)
  eqc = maxc == minc  # gray: s = h = 0, without dividing by 0
  cr = maxc - minc
  s = cr / jnp.where(eqc, 1, maxc)
  div = jnp.where(eqc, 1, cr)
  rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
  h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  return jnp.fmod(h / 6.0 + 1.0, 1.0), s, maxc


def _hsv_to_rgb(h, s, v):
  """torchvision's _hsv2rgb: RGB [..., 3] from h in [0, 1], s, v."""
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(jnp.int32) % 6
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  pick = lambda *sextant: jnp.select([i == k for k in range(6)], sextant)
  return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)],
                   axis=-1)


def adjust_hue(images, factor):
  """torchvision's adjust_hue: to HSV, h = (h + factor) mod 1, back to RGB; factor in
  [-0.5, 0.5] (a fraction of a turn). uint8 images go through float in [0, 1] (x / 255) and back
  as torchvision's convert_image_dtype does it: truncating x·(256 - 1e-3)."""
  images = _check_rgb(images)
  _check_factor('hue', factor, -0.5, 0.5)
  uint8 = images.dtype == jnp.uint8
  x = images.astype(jnp.float32) / 255.0 if uint8 else images
  h, s, v = _rgb_to_hsv(x)
  out = _hsv_to_rgb(jnp.mod(h + factor, 1.0), s, v)
  if uint8:
    return jnp.floor(out * (255 + 1.0 - 1e-3)).astype(jnp.uint8)
  return out.astype(images.dtype)


# ColorJitter's adjustments, in torchvision's numbering (the indices of its randperm(4)).
COLOR_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
HUE = 3  # its index in COLOR_JITTER_OPS


def _jitter_ranges(strengths):
  """torchvision's ColorJitter ranges for (brightness, contrast, saturation, hue) strengths:
  [max(0, 1 - s), 1 + s] for the first three and [-h, h] for hue; None where the strength is 0."""
  if len(strengths) != 4 or any(v < 0 for v in strengths):
    raise ValueError(f'color jitter strengths must be 4 non-negative numbers, got {strengths}')
  if strengths[3] > 0.5:
    raise ValueError(f'color jitter hue strength must be at most 0.5, got {strengths[3]}')
  ranges = [(max(0.0, 1.0 - v), 1.0 + v) for v in strengths[:3]] + [(-strengths[3], strengths[3])]
  return [r if v else None for r, v in zip(ranges, strengths)]


def color_jitter_params(key, strengths):
  """torchvision's ColorJitter.get_params: (order, factors). `order` [4] is a uniformly random
  permutation of the ops' indices in COLOR_JITTER_OPS (fn_idx); `factors` [4] are brightness,
  contrast and saturation ~ U[max(0, 1 - s), 1 + s] and hue ~ U[-h, h] (the neutral 1, 1, 1, 0
  where a strength is 0; those ops are skipped)."""
  ranges = _jitter_ranges(strengths)
  # One draw for everything (see random_resized_crop); the order sorts 4 uniforms.
  u = jax.random.uniform(key, (8,))
  neutral = (1.0, 1.0, 1.0, 0.0)
  lo, hi = (jnp.asarray([n if r is None else r[j] for n, r in zip(neutral, ranges)])
            for j in (0, 1))
  return jnp.argsort(u[4:]), lo + (hi - lo) * u[:4]


def random_color_jitter(key, image, strengths):
  """torchvision's ColorJitter(brightness, contrast, saturation, hue) on one image (uint8 or
  float in [0, 1]): the factors and the order of color_jitter_params(key, strengths), the ops
  with strength 0 skipped."""
  order, factors = color_jitter_params(key, strengths)
  active = [i for i, r in enumerate(_jitter_ranges(strengths)) if r is not None]
  if not active:
    return image
  if len(active) == 1:
    return COLOR_JITTER_OPS[active[0]](image, factors[active[0]])
  position = jnp.argsort(order)  # where each op comes in `order`
  cheap = [i for i in active if i != HUE]
  # Under vmap a switch evaluates every branch, so hue (the costly HSV round trip) runs once,
  # between the cheap ops that come before it and those after it: each of those two passes
  # steps through the cheap ops in their drawn order, the ones on the other side of hue
  # replaced by the identity.
  branches = [lambda x, i=i: COLOR_JITTER_OPS[i](x, factors[i]) for i in cheap]
  branches.append(lambda x: x)
  steps = jnp.argsort(position[jnp.asarray(cheap)])  # cheap ops (indices into cheap) in order

  before = position[jnp.asarray(cheap)] < position[HUE]  # per cheap op

  def cheap_pass(x, before_hue):
    def one(j, x):
      op = steps[j]
      return jax.lax.switch(jnp.where(before[op] == before_hue, op, len(cheap)), branches, x)
    return jax.lax.fori_loop(0, len(cheap), one, x)

  if HUE not in active:
    return jax.lax.fori_loop(0, len(cheap), lambda j, x: jax.lax.switch(steps[j], branches, x),
                             image)
  image = cheap_pass(image, True)
  image = COLOR_JITTER_OPS[HUE](image, factors[HUE])
  return cheap_pass(image, False)


# torchvision's number of box draws in RandomResizedCrop and RandomErasing.
_TRIES = 10


def _box_sides(u, h, w, scale, ratio):
  """torchvision's box draws from uniforms u [2, tries]: areas (fraction U[scale] of h·w) and
  aspect ratios (log-uniform in `ratio`); returns the rounded sides (sqrt(area·aspect),
  sqrt(area/aspect)), int32 arrays of length `tries`."""
  area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
  lo, hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(lo + (hi - lo) * u[1])
  side = lambda v: jnp.round(jnp.sqrt(v)).astype(jnp.int32)  # half to even, like round()
  return side(area * aspect), side(area / aspect)


def _offset(u, room):
  """A uniform integer in [0, room] from u in [0, 1)."""
  return jnp.minimum(jnp.floor(u * (room + 1)).astype(jnp.int32), room)


def resized_crop(image, top, left, height, width, size):
  """The box (top, left, height, width), which may be traced, resized bilinearly to `size` (an int
  or (h, w)): torchvision's F.resized_crop without antialiasing (half-pixel centres, samples
  clamped to the box, so nothing from outside it leaks in)."""
  out_h, out_w = (size, size) if isinstance(size, int) else size

  def coords(start, extent, n):
    x = (jnp.arange(n, dtype=jnp.float32) + 0.5) * (extent / n) - 0.5
    return start + jnp.clip(x, 0, extent - 1)

  rows, cols = jnp.meshgrid(coords(top, height, out_h), coords(left, width, out_w),
                            indexing='ij')
  return _sample_per_channel(image, rows, cols)


def _crop_box(u, h, w, scale, ratio):
  """torchvision's RandomResizedCrop.get_params from uniforms u [2·tries + 2]: (top, left,
  height, width) of the first of the tries that fits, at a uniform position; if none fits, the
  central crop of the closest aspect ratio."""
  bw, bh = _box_sides(u[:-2].reshape(2, -1), h, w, scale, ratio)
  fits = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
  first = jnp.argmax(fits)  # index of the first True
  if w / h < min(ratio):  # the fallback, static given the shapes
    fh, fw = int(round(w / min(ratio))), w
  elif w / h > max(ratio):
    fh, fw = h, int(round(h * max(ratio)))
  else:
    fh, fw = h, w
  found = fits.any()
  bh, bw = jnp.where(found, bh[first], fh), jnp.where(found, bw[first], fw)
  top = jnp.where(found, _offset(u[-2], h - bh), (h - fh) // 2)
  left = jnp.where(found, _offset(u[-1], w - bw), (w - fw) // 2)
  return top, left, bh, bw


def random_resized_crop(key, image, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop: a box with area fraction U[scale] and aspect ratio
  (width/height) log-uniform in `ratio`, at a uniform position inside the image, resized
  bilinearly to `size` (int or (h, w)). The first of 10 draws that fits is used (all are drawn,
  so shapes are static); if none fits, the central crop of the closest aspect ratio."""
  # One draw for everything: each separate draw adds noticeably to the compile time.
  u = jax.random.uniform(key, (2 * _TRIES + 2,))
  return resized_crop(image, *_crop_box(u, *image.shape[:2], scale, ratio), size)


def adjust_sharpness(image, factor):
  """torchvision's adjust_sharpness: blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13
  (border pixels kept), clipped to [0, 1]. factor 0 is the smoothed image, 1 the image."""
  h, w = image.shape[:2]
  if h <= 2 or w <= 2:
    return image
  weights = ((1, 1, 1), (1, 5, 1), (1, 1, 1))
  smooth = sum(weights[i][j] * image[i:h - 2 + i, j:w - 2 + j]
               for i in range(3) for j in range(3)) / 13
  degenerate = image.at[1:-1, 1:-1].set(smooth)
  return jnp.clip(factor * image + (1 - factor) * degenerate, 0, 1)


def _levels(image):
  """The 8-bit levels (float) of an image in [0, 1]."""
  return jnp.round(image * 255)


def posterize(image, bits):
  """PIL/torchvision posterize: keep the top `bits` (may be traced) of each 8-bit level."""
  step = 2.0 ** (8 - bits)
  return jnp.floor(_levels(image) / step) * step / 255


def solarize(image, threshold):
  """Invert the pixels >= threshold (in [0, 1]), like torchvision's solarize."""
  return jnp.where(image >= threshold, 1 - image, image)


def autocontrast(image):
  """torchvision's autocontrast: stretch each channel linearly to span [0, 1]; a constant
  channel is left alone."""
  lo, hi = image.min(axis=(0, 1)), image.max(axis=(0, 1))
  flat = hi <= lo
  scale = jnp.where(flat, 1.0, 1 / jnp.where(flat, 1.0, hi - lo))
  return jnp.clip((image - jnp.where(flat, 0.0, lo)) * scale, 0, 1)


def equalize(image):
  """torchvision's (and PIL's) equalize of each channel's 256-level histogram; a channel whose
  histogram is too concentrated (step 0) keeps its levels. Returns the image on 256 levels."""
  h, w, c = image.shape
  levels = _levels(image).astype(jnp.int32).reshape(h * w, c)

  def channel(v):
    hist = jnp.bincount(v, length=256)
    step = (v.size - hist[v.max()]) // 255  # all pixels but those of the top level, / 255
    lut = (jnp.cumsum(hist) + step // 2) // jnp.maximum(step, 1)
    lut = jnp.clip(jnp.concatenate([jnp.zeros(1, lut.dtype), lut[:-1]]), 0, 255)
    return jnp.where(step == 0, v, lut[v])

  return jax.vmap(channel, in_axes=1, out_axes=1)(levels).reshape(h, w, c) / 255.0


# torchvision's RandAugment op set, in its order.
RANDAUGMENT_OPS = ('Identity', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate',
                   'Brightness', 'Color', 'Contrast', 'Sharpness', 'Posterize', 'Solarize',
                   'AutoContrast', 'Equalize')


# Which branch of randaugment_op serves each of RANDAUGMENT_OPS.
_RANDAUGMENT_BRANCH = (0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 4, 5, 6, 7)


def randaugment_op(image, index, level, order=1):
  """Apply RANDAUGMENT_OPS[index] (may be traced) to a float image in [0, 1]. `level` is the
  signed magnitude bin / (num_bins - 1), in [-1, 1], mapped to torchvision's ranges: shear 0.3
  (about the top-left corner, as torchvision's), translate 150/331 of the side (whole pixels),
  rotate 30°, factors 1 ± 0.9; the unsigned ops use |level|: posterize 8 - round(4·|level|)
  bits, solarize threshold 1 - |level|. Geometric ops are bilinear (order 1) or nearest
  (order 0) with zero fill."""
  h, w = image.shape[:2]
  m = jnp.abs(level)
  r, c = _grid(image)

  # lax.switch runs one branch, but under vmap (batched index) it computes all of them, so the
  # geometric ops share one (costly) bilinear sampling and the colour ops one branch.
  def geometric(x):  # where each output pixel samples from
    rows, cols = jax.lax.switch(index - 1, (
        lambda: (r, c + 0.3 * level * (r + 0.5)),  # ShearX
        lambda: (r + 0.3 * level * (c + 0.5), c),  # ShearY
        lambda: (r, c - jnp.trunc(level * 150 / 331 * w)),  # TranslateX (int() in torchvision)
        lambda: (r - jnp.trunc(level * 150 / 331 * h), c),  # TranslateY
        lambda: _rotation_coords(x, 30 * level)))  # Rotate
    return _sample_per_channel(x, rows, cols, order)

  def colour(x):  # factor 1 ± 0.9 for the op drawn; the neutral 1 of the others is the identity
    factor = lambda name: jnp.where(index == RANDAUGMENT_OPS.index(name), 1 + 0.9 * level, 1.0)
    x = adjust_brightness(x, factor('Brightness'))
    x = adjust_saturation(x, factor('Color'))
    return adjust_contrast(x, factor('Contrast'))

  branches = (lambda x: x, geometric, colour,
              lambda x: adjust_sharpness(x, 1 + 0.9 * level),
              lambda x: posterize(x, 8 - jnp.round(4 * m)),
              lambda x: solarize(x, 1 - m),
              autocontrast, equalize)
  return jax.lax.switch(jnp.asarray(_RANDAUGMENT_BRANCH)[index], branches, image)


def rand_augment(key, image, num_ops=2, magnitude=9, num_bins=31, order=1):
  """torchvision's RandAugment on a float image in [0, 1]: `num_ops` times, an op drawn uniformly
  from RANDAUGMENT_OPS at bin `magnitude` of `num_bins`, negated with probability 1/2 where the
  op is signed. Geometric ops are bilinear (order 1) or nearest (order 0: torchvision's default
  interpolation) with fill 0; the result stays in [0, 1]."""
  level = magnitude / (num_bins - 1)

  def step(i, x):
    u = jax.random.uniform(jax.random.fold_in(key, i), (2,))
    index = _offset(u[0], len(RANDAUGMENT_OPS) - 1)
    sign = jnp.where(u[1] < 0.5, -1.0, 1.0)
    return randaugment_op(x, index, sign * level, order)

  return jax.lax.fori_loop(0, num_ops, step, image)  # one traced copy of the switch


def random_erasing(key, image, p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0):
  """torchvision's RandomErasing (meant for normalised images): with probability p (a Python
  number), set a rectangle to `value`: area fraction U[scale], aspect ratio (height/width)
  log-uniform in `ratio`, the first of 10 draws that fits strictly inside, at a uniform position.
  If none fits, the image is unchanged. Done with a mask, so shapes are static."""
  if p <= 0:
    return image
  h, w = image.shape[:2]
  u = jax.random.uniform(key, (2 * _TRIES + 3,))  # one draw: see random_resized_crop
  bh, bw = _box_sides(u[:-3].reshape(2, -1), h, w, scale, ratio)
  fits = (bh < h) & (bw < w)
  first = jnp.argmax(fits)
  bh, bw = bh[first], bw[first]
  top, left = _offset(u[-3], h - bh), _offset(u[-2], w - bw)
  rows, cols = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
  inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
  erase = (u[-1] < p) & fits.any()
  return jnp.where(inside & erase, jnp.asarray(value, image.dtype), image)


def mix_params(key, shape, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5):
  """The draws of timm's Mixup for one batch of images `shape` [B, H, W, C] (mode 'batch'),
  as its _params_per_batch and rand_bbox make them: whether to mix (probability prob), CutMix
  rather than mixup (switch_prob when both alphas are on), lam ~ Beta(alpha, alpha), and a box
  centre (cy, cx) uniform over the image. A dict of scalars."""
  k_apply, k_switch, k_mixup, k_cutmix, k_cy, k_cx = jax.random.split(key, 6)
  apply = jax.random.uniform(k_apply) < prob
  if mixup_alpha > 0 and cutmix_alpha > 0:
    cutmix = jax.random.uniform(k_switch) < switch_prob
  else:
    cutmix = jnp.asarray(cutmix_alpha > 0)
  beta = lambda k, a: jax.random.beta(k, a, a) if a > 0 else jnp.float32(1.0)
  lam = jnp.where(cutmix, beta(k_cutmix, cutmix_alpha), beta(k_mixup, mixup_alpha))
  h, w = shape[1], shape[2]
  return {'apply': apply, 'cutmix': cutmix & apply, 'lam': jnp.where(apply, lam, 1.0),
          'cy': jax.random.randint(k_cy, (), 0, h), 'cx': jax.random.randint(k_cx, (), 0, w)}


def mix_images(images, params):
  """(mixed images, lam) of timm's Mixup._mix_batch with the draws `params` (mix_params): each
  image mixed with its mirror in the batch (images[::-1]); mixup lam·x + (1 − lam)·x_mirror;
  CutMix pastes the mirror's box of sides int(H·√(1 − lam)), int(W·√(1 − lam)) around (cy, cx)
  (rows cy − cut_h // 2 to cy + (cut_h + 1) // 2, timm 1.0's rand_bbox), clipped to the image,
  and lam becomes 1 − box area / image area (correct_lam).
  The targets are then lam·y + (1 − lam)·y_mirror."""
  h, w = images.shape[1], images.shape[2]
  lam, cy, cx = params['lam'], params['cy'], params['cx']
  mirror = images[::-1]
  mixed = images * lam.astype(images.dtype) + mirror * (1.0 - lam).astype(images.dtype)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(h * ratio).astype(jnp.int32)
  cut_w = jnp.floor(w * ratio).astype(jnp.int32)
  yl, yh = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + (cut_h + 1) // 2, 0, h)
  xl, xh = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + (cut_w + 1) // 2, 0, w)
  rows, cols = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
  box = (rows >= yl) & (rows < yh) & (cols >= xl) & (cols < xh)
  cut = jnp.where(box[None], mirror, images)
  lam_cut = 1.0 - ((yh - yl) * (xh - xl)).astype(jnp.float32) / (h * w)
  out = jnp.where(params['cutmix'], cut, jnp.where(params['apply'], mixed, images))
  return out, jnp.where(params['cutmix'], lam_cut, lam)


def mixing(aug_cfg):
  """(mixup_alpha, cutmix_alpha, prob, switch_prob) of `aug_cfg`, or None when both alphas are
  0 (off)."""
  mixup, cutmix = aug_cfg.get('mixup_alpha', 0.0), aug_cfg.get('cutmix_alpha', 0.0)
  if not (mixup or cutmix):
    return None
  return (float(mixup), float(cutmix), float(aug_cfg.get('mix_prob', 1.0)),
          float(aug_cfg.get('mix_switch_prob', 0.5)))


def normalize(image, name):
  """(image - mean) / std with the named per-channel statistics."""
  mean, std = NORMALIZATIONS[name]
  return (image - jnp.asarray(mean)) / jnp.asarray(std)


def _check(aug_cfg):
  if aug_cfg.normalization not in NORMALIZATIONS:
    raise ValueError(f'unknown augment.normalization {aug_cfg.normalization!r}; '
                     f'choose one of {sorted(NORMALIZATIONS)}')


def make_train_augment(aug_cfg):
  """A function (keys [B], uint8 images [B, H, W, C]) -> float32 images.

  Fields of `aug_cfg`: `resize` (0 keeps the size), `crop_padding` (0: no
  crop), `flip` (bool), `normalization` (a key of NORMALIZATIONS), and
  optionally (missing = off):
    `rrc_scale` (area fraction range of a random resized crop back to the
      size after `resize`; it replaces the padded crop; (0, 0) = off) and
      `rrc_ratio` (width/height range, default (3/4, 4/3));
    `rotation` (max degrees); `perspective` and `perspective_p`;
    `randaugment_ops` (0 = off) and `randaugment_magnitude` (default 9 of 31 bins);
    `color_jitter` (brightness, contrast, saturation, hue strengths of torchvision's
      ColorJitter: its factor ranges, the four ops in a random order per image);
    `erasing_p` (probability of random erasing, after normalising).
  Order as in torchvision pipelines: resize, random resized crop or padded
  crop, flip, rotation, perspective, RandAugment, colour jitter, normalise,
  random erasing.
  """
  _check(aug_cfg)
  rotation = aug_cfg.get('rotation', 0.0)
  perspective = aug_cfg.get('perspective', 0.0)
  jitter = tuple(aug_cfg.get('color_jitter', (0.0, 0.0, 0.0, 0.0)))
  rrc_scale = tuple(aug_cfg.get('rrc_scale', (0.0, 0.0)))
  rrc_ratio = tuple(aug_cfg.get('rrc_ratio', (3 / 4, 4 / 3)))
  ra_ops = aug_cfg.get('randaugment_ops', 0)
  ra_magnitude = aug_cfg.get('randaugment_magnitude', 9)
  # randaugment_interpolation: 'bilinear' (default) | 'nearest' (torchvision RandAugment()'s).
  ra_order = {'bilinear': 1, 'nearest': 0}[aug_cfg.get('randaugment_interpolation', 'bilinear')]
  erasing_p = aug_cfg.get('erasing_p', 0.0)

  def one(key, image):
    x = to_float(image)
    if aug_cfg.resize:
      x = resize(x, aug_cfg.resize)
    crop_key, flip_key, rot_key, persp_key, color_key = jax.random.split(key, 5)
    # Keys of the newer options come from a separate branch, so the draws of the older
    # options (and so existing runs) are unchanged.
    rrc_key, ra_key, erase_key = jax.random.split(jax.random.fold_in(key, 1), 3)
    if any(rrc_scale):
      x = random_resized_crop(rrc_key, x, x.shape[:2], rrc_scale, rrc_ratio)
    else:
      x = random_crop(crop_key, x, aug_cfg.crop_padding)
    if aug_cfg.flip:
      x = random_flip(flip_key, x)
    if rotation:
      x = random_rotation(rot_key, x, rotation)
    if perspective:
      x = random_perspective(persp_key, x, perspective, aug_cfg.get('perspective_p', 0.5))
    if ra_ops:
      x = rand_augment(ra_key, x, ra_ops, ra_magnitude, order=ra_order)
    if any(jitter):
      x = random_color_jitter(color_key, x, jitter)
    x = normalize(x, aug_cfg.normalization)
    if erasing_p:
      x = random_erasing(erase_key, x, erasing_p)
    return x

  return jax.vmap(one)


def make_eval_preprocess(aug_cfg):
  """A function uint8 images [B, H, W, C] -> float32 images: the deterministic steps only."""
  _check(aug_cfg)

  def one(image):
    x = to_float(image)
    if aug_cfg.resize:
      x = resize(x, aug_cfg.resize)
    return normalize(x, aug_cfg.normalization)

  return jax.vmap(one)
