"""Flax Linen models. `model_from_config(model_cfg, num_classes)` picks one by name."""

import jax.numpy as jnp

from jaxlab.models.hyper_connections import HyperSpec
from jaxlab.models.lenet import LeNet5
from jaxlab.models.resmlp import ResMLP
from jaxlab.models.vit import VARIANTS, ViT, attention_implementation

MODELS = ('lenet5', 'vit', 'resmlp')
RESIDUALS = ('plain', 'static', 'dynamic')
# Sinkhorn iterations of each hyper-connection variant when model.hc.iterations is 0 (the mHC
# reference code's: docs/references.md).
DEFAULT_ITERATIONS = {'static': 10, 'dynamic': 20}


def residual_spec(model_cfg):
  """The HyperSpec of `model_cfg.residual` ('static' | 'dynamic' with `model_cfg.hc`), or None
  for plain residual connections (also when the config has no such field)."""
  kind = model_cfg.get('residual', 'plain')
  if kind not in RESIDUALS:
    raise ValueError(f'unknown model.residual {kind!r}; choose one of {", ".join(RESIDUALS)}')
  if kind == 'plain':
    return None
  hc = model_cfg.hc
  return HyperSpec(kind=kind, streams=hc.streams, tau=hc.tau,
                   iterations=hc.iterations or DEFAULT_ITERATIONS[kind], reduce=hc.reduce)


def vit_arch(model_cfg, attention=None):
  """ViT keyword arguments from a config: a named variant, or the explicit fields when variant=''.

  The attention is model.attention ('auto' | 'xla' | 'cudnn', absent: 'xla') resolved for the
  default device (vit.attention_implementation), or `attention` when given."""
  if model_cfg.variant:
    if model_cfg.variant not in VARIANTS:
      raise ValueError(f'unknown model.variant {model_cfg.variant!r}; choose one of '
                       f'{", ".join(VARIANTS)} or "" with explicit patch/width/depth/heads/mlp_dim')
    patch, width, depth, heads, mlp_dim = VARIANTS[model_cfg.variant]
  else:
    patch, width, depth, heads = model_cfg.patch, model_cfg.width, model_cfg.depth, model_cfg.heads
    mlp_dim = model_cfg.mlp_dim
  dtype = jnp.dtype(model_cfg.dtype)
  attention = attention or attention_implementation(model_cfg.get('attention', 'xla'), dtype,
                                                    width // heads)
  return dict(patch=patch, width=width, depth=depth, heads=heads, mlp_dim=mlp_dim,
              image_size=model_cfg.image_size, gelu_approximate=model_cfg.gelu_approximate,
              dtype=dtype, attention=attention, pos=model_cfg.get('pos', 'learned'),
              rope_base=model_cfg.get('rope_base', 100.0), residual=residual_spec(model_cfg),
              remat=model_cfg.get('remat', False),
              weight_init=model_cfg.get('weight_init', 'default'),
              drop_path_rate=model_cfg.get('drop_path_rate', 0.0))


def model_from_config(model_cfg, num_classes, **kw):
  """The model named by `model_cfg.name`, sized for `num_classes` (kw: e.g. a ViT's lora)."""
  if model_cfg.name == 'lenet5':
    return LeNet5(num_classes=num_classes, conv_impl=model_cfg.get('conv_impl', 'auto'))
  if model_cfg.name == 'resmlp':
    return ResMLP(num_classes, model_cfg.width, model_cfg.depth, kw.get('rule', 'bp'))
  if model_cfg.name == 'vit':
    return ViT(num_classes=num_classes, **vit_arch(model_cfg), **kw)
  raise ValueError(f'unknown model {model_cfg.name!r}; choose one of {", ".join(MODELS)}')
