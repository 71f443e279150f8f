"""Augmentation on the device, inside the jitted step.

Every operation works on one image (H, W, C) with its own PRNG key, so a batch
is augmented by `vmap` over per-example keys. The trainer derives each
example's key from its position in the global batch, which makes the result
independent of how the batch is sharded over devices.
"""

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


def _sample(image, rows, cols):
  """Bilinear samples of `image` at float coordinates (rows, cols); zero outside."""
  coords = jnp.stack([rows, cols])
  return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], coords, order=1,
                                                      mode='constant', cval=0.0)
                    for c in range(image.shape[-1])], axis=-1)


def _grid(image):
  h, w = image.shape[:2]
  return jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                      indexing='ij')


def rotate(image, degrees):
  """Rotate by `degrees` (counter-clockwise) about the centre, bilinear, zero fill."""
  h, w = image.shape[:2]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  t = -jnp.deg2rad(degrees)  # counter-clockwise as displayed (rows down), like np.rot90
  r, c = _grid(image)
  # Inverse map: where each output pixel comes from.
  src_r = cy + (r - cy) * jnp.cos(t) - (c - cx) * jnp.sin(t)
  src_c = cx + (r - cy) * jnp.sin(t) + (c - cx) * jnp.cos(t)
  return _sample(image, src_r, src_c)


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


_GRAY = jnp.array([0.299, 0.587, 0.114])


def adjust_color(image, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0):
  """Brightness, contrast, saturation factors and a hue shift (fraction of a turn), clipped to
  [0, 1] after each, in torchvision's definitions (hue as a rotation in YIQ space)."""
  x = jnp.clip(image * brightness, 0, 1)
  mean = jnp.mean(x @ _GRAY)
  x = jnp.clip((x - mean) * contrast + mean, 0, 1)
  gray = (x @ _GRAY)[..., None]
  x = jnp.clip((x - gray) * saturation + gray, 0, 1)
  to_yiq = jnp.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
  t = 2 * jnp.pi * hue
  rot = jnp.array([[1, 0, 0], [0, jnp.cos(t), -jnp.sin(t)], [0, jnp.sin(t), jnp.cos(t)]])
  x = x @ (jnp.linalg.inv(to_yiq) @ rot @ to_yiq).T
  return jnp.clip(x, 0, 1)


def random_color_jitter(key, image, strengths):
  """ColorJitter(brightness, contrast, saturation, hue): factors U[1-s, 1+s], hue U[-h, h]."""
  b, c, s, h = strengths
  kb, kc, ks, kh = jax.random.split(key, 4)
  factor = lambda k, v: jax.random.uniform(k, (), minval=1 - v, maxval=1 + v)
  return adjust_color(image, factor(kb, b), factor(kc, c), factor(ks, s),
                      jax.random.uniform(kh, (), minval=-h, maxval=h))


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
  crop), `flip` (bool), and optionally `rotation` (max degrees), `perspective`
  and `perspective_p`, `color_jitter` (brightness, contrast, saturation, hue),
  then `normalization` (a key of NORMALIZATIONS). Order as in the seeds'
  torchvision pipelines: resize, crop, flip, rotation, perspective, colour
  jitter, normalise.
  """
  _check(aug_cfg)
  rotation = aug_cfg.get('rotation', 0.0)
  perspective = aug_cfg.get('perspective', 0.0)
  jitter = tuple(aug_cfg.get('color_jitter', (0.0, 0.0, 0.0, 0.0)))

  def one(key, image):
    x = to_float(image)
    if aug_cfg.resize:
      x = resize(x, aug_cfg.resize)
    crop_key, flip_key, rot_key, persp_key, color_key = jax.random.split(key, 5)
    x = random_crop(crop_key, x, aug_cfg.crop_padding)
    if aug_cfg.flip:
      x = random_flip(flip_key, x)
    if rotation:
      x = random_rotation(rot_key, x, rotation)
    if perspective:
      x = random_perspective(persp_key, x, perspective, aug_cfg.get('perspective_p', 0.5))
    if any(jitter):
      x = random_color_jitter(color_key, x, jitter)
    return normalize(x, aug_cfg.normalization)

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
