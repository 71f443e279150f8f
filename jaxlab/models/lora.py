"""LoRA: which layers of a ViT get adapters (LoraSpec), and folding them into the kernels they adapt.

A LoRA layer computes x·W + b + (alpha/rank)·x·A·B (jaxlab.models.vit.LoraDense), so
W' = W + (alpha/rank)·A·B gives the same outputs from a plain Dense. alpha is not stored in
the parameters: `merge_lora` takes it from the model the parameters belong to (its LoraSpec),
which also says which layers hold LoRA and at which rank, so a merge with the wrong alpha, or
of another model's parameters, is an error rather than wrong weights.
"""

import dataclasses

import numpy as np

from jaxlab.params import flatten, unflatten

LORA_TARGETS = ('qkv', 'proj', 'fc1', 'fc2')


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  """LoRA on `targets` of the blocks in `blocks`: y = xW + b + (alpha/rank)·dropout(x)·A·B."""
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  blocks: tuple[int, ...] = ()
  targets: tuple[str, ...] = LORA_TARGETS


LORA_LEAVES = ('lora_a', 'lora_b')


def has_lora(params):
  """Whether any layer of `params` carries a LoRA pair."""
  return any(path.rsplit('/', 1)[-1] in LORA_LEAVES for path in flatten(params))


# Where each target sits in a ViT block (jaxlab.models.vit).
TARGET_PATHS = {'qkv': 'attn/qkv', 'proj': 'attn/proj', 'fc1': 'mlp/fc1', 'fc2': 'mlp/fc2'}


def lora_of(model):
  """The LoraSpec of `model`: a ViT (its `lora` field), a LoraSpec, or None (no LoRA)."""
  spec = getattr(model, 'lora', model)
  if spec is not None and not isinstance(spec, LoraSpec):
    raise TypeError(f'expected the model the params belong to (a ViT), its LoraSpec or None, '
                    f'not {type(model).__name__}')
  return spec


def merge_lora(params, model):
  """`params` with every LoRA pair folded into its base kernel and removed.

  model: the ViT the params belong to (as vit_with_peft returns it) or its LoraSpec: its
  alpha scales the adapters, and the params' LoRA layers must be the ones it names (blocks ×
  targets) at its rank (ValueError otherwise). Each layer holding `lora_a` (in, r) and `lora_b`
  (r, out) beside `kernel` (in, out) gets kernel + (alpha / r)·lora_a·lora_b, computed in
  float64 and cast back to the kernel's dtype; the result is a plain ViT's parameter tree
  (numpy arrays) that `ViT(lora=None)` applies with the same logits. Layers without LoRA are
  unchanged. Raises ValueError for a half pair or shapes that do not chain.
  """
  spec = lora_of(model)
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  layers = {path.rsplit('/', 1)[0] for path in flat if path.rsplit('/', 1)[-1] in LORA_LEAVES}
  if layers and spec is None:
    raise ValueError('the params hold LoRA layers and the model has none: give the model they '
                     'were trained with (its LoraSpec holds alpha)')
  if spec is not None:
    named = {f'blocks_{i}/{TARGET_PATHS[t]}' for i in spec.blocks for t in spec.targets}
    if layers != named:
      odd = sorted(layers ^ named)
      raise ValueError(f'the params\' LoRA layers are not the model\'s (differ at '
                       f'{", ".join(odd[:4])}{" ..." if len(odd) > 4 else ""}): give the model '
                       'they were trained with')
    ranks = {flat[f'{layer}/lora_a'].shape[-1] for layer in layers if f'{layer}/lora_a' in flat}
    if ranks - {spec.rank}:
      raise ValueError(f'the params\' LoRA rank is {sorted(ranks)}, the model\'s {spec.rank}: '
                       'give the model they were trained with')
  alpha = spec.alpha if spec is not None else 0.0
  for layer in sorted(layers):
    a, b, w = (flat.get(f'{layer}/{leaf}') for leaf in ('lora_a', 'lora_b', 'kernel'))
    if a is None or b is None or w is None:
      missing = [leaf for leaf, x in zip(('lora_a', 'lora_b', 'kernel'), (a, b, w)) if x is None]
      raise ValueError(f'{layer}: LoRA layer without {", ".join(missing)}')
    if a.shape[1] != b.shape[0] or (a.shape[0], b.shape[1]) != w.shape:
      raise ValueError(f'{layer}: lora_a {a.shape} · lora_b {b.shape} does not match kernel '
                       f'{w.shape}')
    delta = (float(alpha) / a.shape[1]) * (a.astype(np.float64) @ b.astype(np.float64))
    flat[f'{layer}/kernel'] = (w.astype(np.float64) + delta).astype(w.dtype)
    del flat[f'{layer}/lora_a'], flat[f'{layer}/lora_b']
  return unflatten(flat)
