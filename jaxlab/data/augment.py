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
  crop), `flip` (bool), `normalization` (a key of NORMALIZATIONS). Order:
  resize, crop, flip, normalise, as in the seeds' torchvision pipelines.
  """
  _check(aug_cfg)

  def one(key, image):
    x = to_float(image)
    if aug_cfg.resize:
      x = resize(x, aug_cfg.resize)
    crop_key, flip_key = jax.random.split(key)
    x = random_crop(crop_key, x, aug_cfg.crop_padding)
    if aug_cfg.flip:
      x = random_flip(flip_key, x)
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
