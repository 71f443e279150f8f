"""LoRA: which layers of a ViT get adapters (LoraSpec), and folding them into the kernels they adapt.

A LoRA layer computes x·W + b + (alpha/rank)·x·A·B (jaxlab.models.vit.LoraDense), so
W' = W + (alpha/rank)·A·B gives the same outputs from a plain Dense. The rank is read
from A's shape; alpha is not stored in the parameters and must be the one the model
was built with (jaxlab's default and the reference code's is 16).
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


def merge_lora(params, alpha=16.0):
  """`params` with every LoRA pair folded into its base kernel and removed.

  Each layer holding `lora_a` (in, r) and `lora_b` (r, out) beside `kernel` (in, out)
  gets kernel + (alpha / r)·lora_a·lora_b, computed in float64 and cast back to the
  kernel's dtype; the result is a plain ViT's parameter tree (numpy arrays) that
  `ViT(lora=None)` applies with the same logits. Layers without LoRA are unchanged.
  Raises ValueError for a half pair or shapes that do not chain.
  """
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  layers = {path.rsplit('/', 1)[0] for path in flat if path.rsplit('/', 1)[-1] in LORA_LEAVES}
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
