"""Flax Linen models. `build(model_cfg, num_classes)` picks one by name."""

import jax.numpy as jnp

from jaxlab.models.lenet import LeNet5
from jaxlab.models.resmlp import ResMLP
from jaxlab.models.vit import VARIANTS, ViT

MODELS = ('lenet5', 'vit', 'resmlp')


def vit_arch(model_cfg):
  """ViT keyword arguments from a config: a named variant, or the explicit fields when variant=''."""
  if model_cfg.variant:
    if model_cfg.variant not in VARIANTS:
      raise ValueError(f'unknown model.variant {model_cfg.variant!r}; choose one of '
                       f'{", ".join(VARIANTS)} or "" with explicit patch/width/depth/heads/mlp_dim')
    patch, width, depth, heads, mlp_dim = VARIANTS[model_cfg.variant]
  else:
    patch, width, depth, heads = model_cfg.patch, model_cfg.width, model_cfg.depth, model_cfg.heads
    mlp_dim = model_cfg.mlp_dim
  return dict(patch=patch, width=width, depth=depth, heads=heads, mlp_dim=mlp_dim,
              image_size=model_cfg.image_size, gelu_approximate=model_cfg.gelu_approximate,
              dtype=jnp.dtype(model_cfg.dtype))


def build(model_cfg, num_classes, **kw):
  """The model named by `model_cfg.name`, sized for `num_classes` (kw: e.g. a ViT's lora)."""
  if model_cfg.name == 'lenet5':
    return LeNet5(num_classes=num_classes)
  if model_cfg.name == 'resmlp':
    return ResMLP(num_classes, model_cfg.width, model_cfg.depth, kw.get('rule', 'bp'))
  if model_cfg.name == 'vit':
    return ViT(num_classes=num_classes, **vit_arch(model_cfg), **kw)
  raise ValueError(f'unknown model {model_cfg.name!r}; choose one of {", ".join(MODELS)}')
