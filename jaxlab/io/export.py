"""A jaxlab ViT's parameters in other libraries' layouts: timm state dicts and big_vision npz.

`to_timm` and `to_big_vision` are the exact inverses of jaxlab.io.pretrained's
`timm_to_params` and `big_vision_to_params` (same name mapping, docs/references.md): loading
what they return gives back the same arrays, bit for bit. LoRA pairs are merged
into their kernels first (jaxlab.peft.merge.merge_lora, with the `alpha` the model
was built with). Models that timm's and big_vision's plain ViT cannot hold (RoPE
instead of a position embedding, hyper-connections) are refused with the
parameters that have no place there.
"""

import numpy as np

from jaxlab.peft.merge import has_lora, merge_lora
from jaxlab.peft.partition import flatten

_BLOCK_LEAVES = ('norm1/scale', 'norm1/bias', 'attn/qkv/kernel', 'attn/qkv/bias',
                 'attn/proj/kernel', 'attn/proj/bias', 'norm2/scale', 'norm2/bias',
                 'mlp/fc1/kernel', 'mlp/fc1/bias', 'mlp/fc2/kernel', 'mlp/fc2/bias')
_TOP_LEAVES = ('patch_embed/kernel', 'patch_embed/bias', 'cls_token', 'pos_embed',
               'norm/scale', 'norm/bias', 'head/kernel', 'head/bias')


def _plain_vit(params, alpha):
  """{path: np.ndarray} of a plain ViT (LoRA merged); the depth; or a ValueError naming the
  leaves a plain ViT has no place for, or the ones it misses."""
  if has_lora(params):
    params = merge_lora(params, alpha)
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  depth = 1 + max((int(k.split('/')[0][len('blocks_'):]) for k in flat
                   if k.startswith('blocks_')), default=-1)
  expected = set(_TOP_LEAVES) | {f'blocks_{i}/{leaf}' for i in range(depth)
                                 for leaf in _BLOCK_LEAVES}
  extra = sorted(set(flat) - expected)
  missing = sorted(expected - set(flat))
  if extra or missing or depth == 0:
    parts = []
    if extra:
      parts.append(f'no place for {len(extra)} parameter(s): {", ".join(extra[:6])}'
                   + (' ...' if len(extra) > 6 else ''))
    if missing:
      parts.append(f'missing {", ".join(missing[:6])}' + (' ...' if len(missing) > 6 else ''))
    raise ValueError('not a plain ViT (class token, learned position embedding, pre-LN blocks '
                     'with fused qkv, head; as timm vit_*_patch*): ' + '; '.join(parts or
                                                                                ['no blocks']))
  return flat, depth


def to_timm(params, alpha=16.0):
  """{timm name: np.ndarray} of a jaxlab ViT, in timm VisionTransformer's layout.

  For ViT-S/16 at 224 px this is `vit_small_patch16_224`'s state dict (with the head's
  num_classes); `timm.create_model(name, num_classes=C).load_state_dict(...)` takes it
  after `torch.from_numpy`. Linear kernels (in, out) become (out, in) weights, the
  patch embedding HWIO becomes OIHW. Arrays keep their dtype.
  """
  flat, depth = _plain_vit(params, alpha)
  sd = {
      'patch_embed.proj.weight': flat['patch_embed/kernel'].transpose(3, 2, 0, 1),  # HWIO->OIHW
      'patch_embed.proj.bias': flat['patch_embed/bias'],
      'cls_token': flat['cls_token'],
      'pos_embed': flat['pos_embed'],
      'norm.weight': flat['norm/scale'],
      'norm.bias': flat['norm/bias'],
      'head.weight': flat['head/kernel'].T,
      'head.bias': flat['head/bias'],
  }
  for i in range(depth):
    j, t = f'blocks_{i}', f'blocks.{i}'
    for src, dst in (('norm1', 'norm1'), ('norm2', 'norm2')):
      sd[f'{t}.{dst}.weight'] = flat[f'{j}/{src}/scale']
      sd[f'{t}.{dst}.bias'] = flat[f'{j}/{src}/bias']
    for src, dst in (('attn/qkv', 'attn.qkv'), ('attn/proj', 'attn.proj'),
                     ('mlp/fc1', 'mlp.fc1'), ('mlp/fc2', 'mlp.fc2')):
      sd[f'{t}.{dst}.weight'] = flat[f'{j}/{src}/kernel'].T
      sd[f'{t}.{dst}.bias'] = flat[f'{j}/{src}/bias']
  return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def to_big_vision(params, heads=None, alpha=16.0):
  """{npz name: np.ndarray} of a jaxlab ViT, in big_vision's (AugReg) ViT layout.

  `heads` splits the fused qkv into query/key/value kernels (width, heads, head_dim); it
  is not recorded in the parameters, so it defaults to width // 64 (every standard ViT,
  as jaxlab.io.pretrained assumes for timm). `np.savez(path, **to_big_vision(params))`
  writes a file that `jaxlab.models.vit.from_big_vision` and big_vision load.
  """
  flat, depth = _plain_vit(params, alpha)
  width = flat['cls_token'].shape[-1]
  if heads is None:
    if width % 64:
      raise ValueError(f'width {width} is not a multiple of 64; pass heads=')
    heads = width // 64
  if width % heads:
    raise ValueError(f'heads={heads} does not divide width {width}')
  head_dim = width // heads
  out = {
      'embedding/kernel': flat['patch_embed/kernel'],
      'embedding/bias': flat['patch_embed/bias'],
      'cls': flat['cls_token'],
      'Transformer/posembed_input/pos_embedding': flat['pos_embed'],
      'Transformer/encoder_norm/scale': flat['norm/scale'],
      'Transformer/encoder_norm/bias': flat['norm/bias'],
      'head/kernel': flat['head/kernel'],
      'head/bias': flat['head/bias'],
  }
  for i in range(depth):
    j, b = f'blocks_{i}', f'Transformer/encoderblock_{i}/'
    a = b + 'MultiHeadDotProductAttention_1/'
    out[b + 'LayerNorm_0/scale'] = flat[f'{j}/norm1/scale']
    out[b + 'LayerNorm_0/bias'] = flat[f'{j}/norm1/bias']
    out[b + 'LayerNorm_2/scale'] = flat[f'{j}/norm2/scale']
    out[b + 'LayerNorm_2/bias'] = flat[f'{j}/norm2/bias']
    qkv_k, qkv_b = flat[f'{j}/attn/qkv/kernel'], flat[f'{j}/attn/qkv/bias']
    for n, name in enumerate(('query', 'key', 'value')):  # [q | k | v], each (width, width)
      out[a + f'{name}/kernel'] = qkv_k[:, n * width:(n + 1) * width].reshape(
          width, heads, head_dim)
      out[a + f'{name}/bias'] = qkv_b[n * width:(n + 1) * width].reshape(heads, head_dim)
    out[a + 'out/kernel'] = flat[f'{j}/attn/proj/kernel'].reshape(heads, head_dim, width)
    out[a + 'out/bias'] = flat[f'{j}/attn/proj/bias']
    for src, dst in (('fc1', 'Dense_0'), ('fc2', 'Dense_1')):
      out[b + f'MlpBlock_3/{dst}/kernel'] = flat[f'{j}/mlp/{src}/kernel']
      out[b + f'MlpBlock_3/{dst}/bias'] = flat[f'{j}/mlp/{src}/bias']
  return {k: np.ascontiguousarray(v) for k, v in out.items()}
