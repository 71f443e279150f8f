"""A PEFT ViT from pretrained weights (or none) in one call, no config needed.

    model, params, labels = vit_with_peft('vit_small_patch16_224.safetensors', num_classes=100,
                                          method='lora', rank=8, image_size=32, patch=4)

`labels` is the label tree of `params` (head, norm, lora, base or frozen, from
jaxlab.peft.methods.rules): split the params with jaxlab.params.split
and differentiate only the trainable part; feed the labels of that part to
jaxlab.make_optimizer or optax.partition. The config path
(jaxlab.experiments.peft.make_task) builds its model with the same `peft_vit`.
"""

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxlab.io import pretrained as pt
from jaxlab.io.pretrained import graft
from jaxlab.models.lora import LORA_TARGETS, LoraSpec
from jaxlab.models.vit import VARIANTS, ViT, init_vit
from jaxlab.params import label_tree, run_keys
from jaxlab.peft import methods

ARCH_FIELDS = ('patch', 'width', 'depth', 'heads', 'mlp_dim')  # the order of VARIANTS' tuples
FIXED = ('width', 'depth', 'heads', 'mlp_dim')  # what pretrained weights fix (patch and image
                                                 # size are resampled)


HEAD_INITS = ('timm', 'uniform')


def fresh_head(params, head_init, seed):
  """`params` with the head drawn as `head_init` says.

  timm: the kernel N(0, 0.02²) truncated at ±2 (±100σ: timm's `trunc_normal_(std=.02)`),
  the bias 0 — the head timm's `create_model(name, pretrained=True, num_classes=100)` gives,
  as the PEFT source code (Tony-lyu/CV, src/week4/train.py) built it: its `init_weights`
  runs before the checkpoint's head is dropped. uniform: `ViT.init`'s head, kernel and bias
  U(±1/sqrt(width)) (PyTorch nn.Linear's default). Drawn from the run's init key, folded.
  """
  if head_init not in HEAD_INITS:
    raise ValueError(f'unknown head init {head_init!r}; choose one of {", ".join(HEAD_INITS)}')
  if head_init == 'uniform':
    return params
  kernel = params['head']['kernel']
  key = jax.random.fold_in(run_keys(seed)[0], 1)
  draw = 0.02 * jax.random.truncated_normal(key, -100.0, 100.0, kernel.shape, jnp.float32)
  head = {'kernel': draw.astype(kernel.dtype), 'bias': jnp.zeros_like(params['head']['bias'])}
  return {**params, 'head': head}


def lora_targets(attn_only=False):
  """The layers LoRA adapts: qkv, proj, fc1, fc2, or with attn_only the attention's two."""
  return ('qkv', 'proj') if attn_only else LORA_TARGETS


def lora_spec(method, depth, policy='deep_lora', rank=8, alpha=16.0, dropout=0.0, lora_blocks=(),
              targets=LORA_TARGETS):
  """(blocks with LoRA, LoraSpec or None) of a PEFT method and layer policy."""
  blocks = methods.lora_blocks(method, depth, policy, tuple(lora_blocks))
  return blocks, (LoraSpec(rank, alpha, dropout, blocks, tuple(targets)) if blocks else None)


def peft_vit(arch, num_classes, method='lora', policy='deep_lora', rank=8, alpha=16.0,
             dropout=0.0, lora_blocks=(), targets=LORA_TARGETS, seed=0, pretrained=None,
             head_init='timm'):
  """(model, params, rules): the ViT of `arch` (ViT keyword arguments) with the method's LoRA,
  initialised from `seed` (`init_vit`; the head as `fresh_head` draws it for `head_init`), its
  backbone grafted from `pretrained` (a jaxlab param tree, e.g. of
  jaxlab.io.pretrained.timm_to_params; None keeps the random init), and the method's
  partition rules. Both vit_with_peft and the config path build with this."""
  if arch['image_size'] % arch['patch']:
    raise ValueError(f'patch {arch["patch"]} does not divide image_size {arch["image_size"]}')
  blocks, lora = lora_spec(method, arch['depth'], policy, rank, alpha, dropout, lora_blocks,
                           targets)
  model = ViT(num_classes=num_classes, **arch, lora=lora)
  params = fresh_head(init_vit(model, seed), head_init, seed)
  if pretrained is not None:
    params = graft(params, pretrained)
  return model, params, methods.rules(method, arch['depth'], blocks)


def read_weights(weights, heads=None):
  """(arch, params) of pretrained weights: a timm state dict or .safetensors path, a
  big_vision / AugReg npz mapping or .npz path, or a jaxlab ViT param tree; arch holds what
  they fix (image_size, patch, width, depth, heads, mlp_dim, num_classes). A hub name
  ('timm/vit_small_patch16_224.augreg_in21k_ft_in1k') is its model.safetensors, through the
  shared Hugging Face cache (jaxlab.io.pretrained.hub_file)."""
  if pt.hub_name(weights):
    return pt.timm_to_params(pt.read_safetensors(pt.hub_file(weights)), heads=heads)
  if isinstance(weights, (str, os.PathLike)):
    path = os.fspath(weights)
    if path.endswith('.safetensors'):
      return pt.timm_to_params(pt.read_safetensors(path), heads=heads)
    if path.endswith('.npz'):
      return pt.big_vision_to_params(pt.load_npz(path), heads=heads)
    raise ValueError(f'{path}: expected a timm .safetensors or a big_vision .npz file')
  if not isinstance(weights, Mapping):
    raise TypeError(f'weights must be None, a path or a mapping, not {type(weights).__name__}')
  keys = [str(k) for k in weights]
  if 'patch_embed.proj.weight' in keys:
    return pt.timm_to_params(weights, heads=heads)
  if 'patch_embed' in keys and isinstance(weights['patch_embed'], Mapping):
    return _jaxlab_arch(weights, heads), weights
  prefix = next((k[:-len('embedding/kernel')] for k in keys if k.endswith('embedding/kernel')),
                None)
  if prefix is not None:
    return pt.big_vision_to_params(weights, heads=heads, prefix=prefix)
  raise ValueError('weights are neither a timm state dict (patch_embed.proj.weight), a '
                   'big_vision npz (embedding/kernel) nor a jaxlab ViT param tree (patch_embed)')


def _jaxlab_arch(params, heads):
  """What a jaxlab ViT param tree fixes, read from its shapes (heads: given, else width // 64)."""
  kernel = params['patch_embed']['kernel']
  patch, width = int(kernel.shape[0]), int(kernel.shape[-1])
  depth = sum(1 for k in params if k.startswith('blocks_'))
  grid = int(round((params['pos_embed'].shape[1] - 1) ** 0.5))
  if heads is None:
    if width % 64:
      raise ValueError(f'width {width} is not a multiple of 64; pass heads= explicitly')
    heads = width // 64
  return dict(num_classes=int(params['head']['kernel'].shape[-1]), image_size=grid * patch,
              patch=patch, width=width, depth=depth, heads=int(heads),
              mlp_dim=int(params['blocks_0']['mlp']['fc1']['kernel'].shape[-1]))


def vit_with_peft(weights, num_classes, method='lora', policy='deep_lora', rank=8, alpha=16.0, *,
                  image_size=None, variant=None, patch=None, width=None, depth=None, heads=None,
                  mlp_dim=None, seed=0, dtype=jnp.float32, lora_blocks=(), attn_only=False,
                  targets=None, dropout=0.0, head_init='timm', **vit_kw):
  """(model, params, labels): a ViT with a PEFT method, ready to fine-tune.

  weights: a timm ViT state dict or the path of its .safetensors file, a Hugging Face hub name
    of timm weights ('timm/vit_small_patch16_224.augreg_in21k_ft_in1k': the shared hub cache,
    offline when it holds them), a big_vision / AugReg npz mapping or .npz path, a jaxlab ViT
    param tree, or None for a random init.
    With weights, the architecture comes from them (timm files do not store the number of
    heads: it is width // 64 unless `heads=` says otherwise); width, depth, heads and
    mlp_dim given here must agree. Without, give `variant` (one of
    jaxlab.models.vit.VARIANTS, e.g. 'S/16') and/or patch, width, depth, heads, mlp_dim.
  num_classes: the head's classes; the head is always fresh: head_init 'timm' (default) draws
    it as timm's create_model(..., num_classes=...) does, trunc-normal(0.02) kernel and zero
    bias; 'uniform' as ViT.init does, U(±1/sqrt(width)) (see fresh_head).
  image_size, patch: the input size (default: the weights', else 224) and patch size
    (default: the weights' or the variant's). A position embedding of another grid is
    resampled bilinearly, a patch kernel of another size by FlexiViT's pseudo-inverse
    resize (jaxlab.io.pretrained); the class token is kept.
  method: full | linear | norm | lora | hybrid_parallel | hybrid_layerwise; policy (for
    hybrid_layerwise): deep_lora | even_lora | odd_lora | explicit (with lora_blocks).
  rank, alpha, dropout: LoRA's; targets: the layers it adapts (default qkv, proj, fc1, fc2;
    attn_only=True: qkv and proj).
  seed: the init key of the fresh leaves (head, LoRA; the whole model without weights).
  dtype: the computation dtype (params stay float32); other keywords go to ViT.

  labels: the label tree of params ('head', 'norm', 'lora', 'base' or 'frozen').
  """
  given = dict(patch=patch, width=width, depth=depth, heads=heads, mlp_dim=mlp_dim)
  if variant is not None:
    if variant not in VARIANTS:
      raise ValueError(f'unknown variant {variant!r}; choose one of {", ".join(VARIANTS)}')
    for k, v in zip(ARCH_FIELDS, VARIANTS[variant]):
      given[k] = v if given[k] is None else given[k]
  pretrained = None
  if weights is None:
    missing = [k for k in ARCH_FIELDS if given[k] is None]
    if missing:
      raise ValueError(f'without weights, give variant= (one of {", ".join(VARIANTS)}) or '
                       f'{", ".join(missing)}')
    arch = dict(given, image_size=224 if image_size is None else image_size)
  else:
    fixed, pretrained = read_weights(weights, heads=given['heads'])
    clash = {k: (fixed[k], given[k]) for k in FIXED if given[k] is not None and given[k] != fixed[k]}
    if clash:
      raise ValueError('the weights fix ' + ', '.join(f'{k}={a!r} (got {b!r})'
                                                      for k, (a, b) in clash.items())
                       + '; image_size and patch may differ (resampled)')
    arch = {k: fixed[k] for k in ARCH_FIELDS}
    arch['patch'] = fixed['patch'] if given['patch'] is None else given['patch']
    arch['image_size'] = fixed['image_size'] if image_size is None else image_size
  arch = {k: int(v) for k, v in arch.items()}
  if targets is None:
    targets = lora_targets(attn_only)
  model, params, rules = peft_vit(
      dict(arch, dtype=jnp.dtype(dtype), **vit_kw), num_classes, method, policy, rank, alpha,
      dropout, lora_blocks, targets, seed, pretrained, head_init)
  return model, params, label_tree(params, rules)
