"""LoRA adapters in Hugging Face PEFT's layout, both ways, for a timm-layout ViT.

`peft.get_peft_model(timm_vit, LoraConfig(...)).save_pretrained(directory)` writes

  adapter_config.json         peft_type LORA, r, lora_alpha, target_modules, modules_to_save, ...
  adapter_model.safetensors   base_model.model.<module>.lora_A.weight [r, in] and
                              base_model.model.<module>.lora_B.weight [out, r] for each adapted
                              Linear (blocks.<i>.attn.qkv, .attn.proj, .mlp.fc1, .mlp.fc2), and
                              base_model.model.<module>.weight / .bias of each module PEFT saves
                              whole (modules_to_save: the head, the tuned LayerNorms)

and `peft.PeftModel.from_pretrained(timm_vit, directory)` reads it back. PEFT adds
scaling·B(A(x)) to each adapted Linear with scaling = lora_alpha / r: jaxlab's
(alpha/rank)·x·lora_a·lora_b with lora_a = Aᵀ and lora_b = Bᵀ. A head or LayerNorm saved whole
maps as jaxlab's timm loader maps it (kernel = weightᵀ, scale = weight).

`save_adapters(directory, model, params)` writes a jaxlab ViT's adapters so (rank, alpha and
targets from the model's LoraSpec, so they cannot disagree with the trained weights);
`load_adapters(directory, weights)` builds the ViT of `vit_with_peft` on the base `weights` with
the adapter's LoRA, head and norms, whether jaxlab or PEFT (PyTorch) wrote them.
"""

import json
import os
import re

import numpy as np

from jaxlab.io.pretrained import natural_key, read_safetensors, write_safetensors
from jaxlab.models.lora import LORA_LEAVES, TARGET_PATHS, lora_of
from jaxlab.params import flatten, unflatten
from jaxlab.peft import api

CONFIG, WEIGHTS = 'adapter_config.json', 'adapter_model.safetensors'
PREFIX = 'base_model.model.'
# jaxlab's LoRA targets and their timm module names inside a block.
TIMM_MODULES = {target: path.replace('/', '.') for target, path in TARGET_PATHS.items()}
_LORA_KEY = re.compile(r'blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.lora_(A|B)'
                       r'\.weight')
_SAVED_KEY = re.compile(r'(head|norm|blocks\.(\d+)\.norm[12])\.(weight|bias)')
# PEFT LoraConfig fields whose non-default values change what the adapter computes, with the
# value jaxlab's LoRA has.
_PLAIN_LORA = {'use_rslora': False, 'use_dora': False, 'fan_in_fan_out': False,
               'rank_pattern': {}, 'alpha_pattern': {}, 'bias': 'none', 'lora_bias': False}


def _peft_key(path):
  """(PEFT's key, without its prefix, of the jaxlab ViT parameter at `path`; whether the array
  is transposed between the two) for what a PEFT LoRA adapter holds (LoRA pairs, the head,
  LayerNorms), else None: the one mapping both directions use."""
  parts = path.split('/')
  if parts[-1] in LORA_LEAVES and parts[0].startswith('blocks_'):
    module = f'blocks.{parts[0][len("blocks_"):]}.{".".join(parts[1:-1])}'
    return f'{module}.lora_{"A" if parts[-1] == "lora_a" else "B"}.weight', True
  if path in ('head/kernel', 'head/bias'):
    return f'head.{"weight" if parts[-1] == "kernel" else "bias"}', parts[-1] == 'kernel'
  if re.fullmatch(r'(blocks_\d+/norm[12]|norm)/(scale|bias)', path):
    module = '.'.join(parts[:-1]).replace('blocks_', 'blocks.')
    return f'{module}.{"weight" if parts[-1] == "scale" else "bias"}', False
  return None


def peft_arrays(trainable, lora):
  """({PEFT key: array}, adapter_config dict) of a ViT's trained leaves `trainable` (LoRA pairs,
  the head, tuned norms: jaxlab paths) with LoraSpec `lora`. ValueError for a leaf PEFT's LoRA
  adapter has no place for (a tuned kernel of the backbone: export the whole model instead)."""
  arrays, targets, saved, rank, others = {}, set(), set(), None, []
  for path, value in flatten(trainable).items():
    found = _peft_key(path)
    if found is None:
      others.append(path)
      continue
    key, transposed = found
    value = np.asarray(value)
    arrays[PREFIX + key] = np.ascontiguousarray(value.T if transposed else value)
    if '.lora_' in key:
      targets.add(key.split('.lora_')[0])
      rank = value.shape[1] if path.endswith('lora_a') else value.shape[0]
    else:
      saved.add(key.rsplit('.', 1)[0])
  if others:
    raise ValueError(f'PEFT\'s LoRA adapter has no place for {len(others)} trained leaves '
                     f'({", ".join(sorted(others)[:4])}{" ..." if len(others) > 4 else ""}): the '
                     'method tunes the backbone itself; export the whole model (--format=timm)')
  if not targets:
    raise ValueError('no LoRA layers among the trained leaves: a PEFT LoRA adapter needs at least '
                     'one; export the whole model (--format=timm) or jaxlab\'s --format=adapters')
  if lora is None:
    raise ValueError('the params hold LoRA layers and the model has none: give the ViT they '
                     'belong to (its LoraSpec gives r and lora_alpha)')
  if rank != lora.rank:
    raise ValueError(f'the LoRA leaves have rank {rank}, the model\'s LoraSpec {lora.rank}: '
                     'these params are not this model\'s')
  config = dict(peft_type='LORA', task_type=None, base_model_name_or_path=None, revision=None,
                r=int(lora.rank), lora_alpha=float(lora.alpha), lora_dropout=float(lora.dropout),
                target_modules=sorted(targets, key=natural_key),
                modules_to_save=sorted(saved, key=natural_key), init_lora_weights=True,
                inference_mode=True, layers_to_transform=None, layers_pattern=None,
                **_PLAIN_LORA)
  return arrays, config


def save_adapters(directory, model, params, labels=None, base_model_name_or_path=None):
  """Write `params`' adapters to `directory` in PEFT's layout (adapter_config.json,
  adapter_model.safetensors); returns the config written.

  model: the ViT the params belong to (as `vit_with_peft` returns it): its LoraSpec gives r,
    lora_alpha and lora_dropout. params: the trained leaves, or the whole tree with `labels`
    (then the leaves not labelled frozen). base_model_name_or_path: recorded for PEFT (e.g.
    'timm/vit_small_patch16_224.augreg_in21k_ft_in1k').
  """
  if labels is not None:
    flat_labels = flatten(labels)
    params = unflatten({k: v for k, v in flatten(params).items()
                        if flat_labels[k] not in (None, 'frozen')})
  arrays, config = peft_arrays(params, lora_of(model))
  config['base_model_name_or_path'] = base_model_name_or_path
  os.makedirs(directory, exist_ok=True)
  write_safetensors(os.path.join(directory, WEIGHTS), arrays, metadata={'format': 'pt'})
  with open(os.path.join(directory, CONFIG), 'w') as f:
    json.dump(config, f, indent=2, sort_keys=True)
  return config


def read_adapters(directory):
  """(adapter_config dict, {key without PEFT's prefix: array}) of a PEFT LoRA adapter
  directory; ValueError for what jaxlab's LoRA cannot compute the same way."""
  path = os.path.join(directory, CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory}: no {CONFIG} (a PEFT adapter directory has '
                            f'{CONFIG} and {WEIGHTS})')
  with open(path) as f:
    config = json.load(f)
  if config.get('peft_type') != 'LORA':
    raise ValueError(f'{path}: peft_type {config.get("peft_type")!r}; jaxlab reads LORA adapters')
  for field, plain in _PLAIN_LORA.items():
    if config.get(field, plain) not in (plain, None):
      raise ValueError(f'{path}: {field}={config[field]!r}; jaxlab\'s LoRA is plain LoRA '
                       f'({field}={plain!r})')
  weights = os.path.join(directory, WEIGHTS)
  if not os.path.isfile(weights):
    raise FileNotFoundError(f'{directory}: no {WEIGHTS} (PEFT\'s .bin files are not read: '
                            'save with safe_serialization=True, PEFT\'s default)')
  arrays = {}
  for key, value in read_safetensors(weights).items():
    if not key.startswith(PREFIX):
      raise ValueError(f'{weights}: key {key!r} is not under {PREFIX!r}')
    arrays[key[len(PREFIX):]] = np.asarray(value)
  return config, arrays


def _method(lora_blocks, norms, depth):
  """(method, policy, explicit blocks) of jaxlab's that tunes these LoRA blocks and norms."""
  all_norms = {f'blocks.{i}.norm{n}' for i in range(depth) for n in (1, 2)} | {'norm'}
  if set(lora_blocks) == set(range(depth)):
    if not norms:
      return 'lora', 'deep_lora', ()
    if norms == all_norms:
      return 'hybrid_parallel', 'deep_lora', ()
  own = {f'blocks.{i}.norm{n}' for i in range(depth) if i not in lora_blocks for n in (1, 2)}
  if norms == own:
    return 'hybrid_layerwise', 'explicit', tuple(sorted(lora_blocks))
  raise ValueError(f'LoRA in blocks {sorted(lora_blocks)} with the norms {sorted(norms)} tuned '
                   'is none of jaxlab\'s methods (lora, hybrid_parallel, hybrid_layerwise: LoRA '
                   'blocks plus the other blocks\' own norms)')


def load_adapters(directory, weights, **vit_kw):
  """(model, params, labels) of `vit_with_peft` on the base `weights` (any form it takes: a timm
  state dict or .safetensors, a big_vision .npz, a jaxlab tree) with the LoRA layers, head and
  tuned norms of the PEFT adapter in `directory`: method, rank, alpha and targets come from the
  adapter, the head's classes from its weights. Other keywords go to vit_with_peft."""
  config, arrays = read_adapters(directory)
  lora, saved, unknown = {}, {}, []
  for key, value in arrays.items():
    if m := _LORA_KEY.fullmatch(key):
      lora.setdefault(int(m.group(1)), {})[(m.group(2), m.group(3))] = value
    elif _SAVED_KEY.fullmatch(key):
      saved[key] = value
    else:
      unknown.append(key)
  if unknown:
    raise ValueError(f'{directory}: {len(unknown)} adapter weights jaxlab\'s ViT has no place '
                     f'for: {", ".join(sorted(unknown)[:4])}{" ..." if len(unknown) > 4 else ""} '
                     '(jaxlab adapts the blocks\' attn.qkv, attn.proj, mlp.fc1 and mlp.fc2; a '
                     'target_modules of bare names also matches patch_embed.proj: name them '
                     'as blocks.<i>.attn.qkv, ... or with a regular expression)')
  if not lora:
    raise ValueError(f'{directory}: no LoRA weights (lora_A / lora_B) in {WEIGHTS}')
  names = {v: k for k, v in TIMM_MODULES.items()}
  targets = {i: {names[module] for module, _ in pairs} for i, pairs in lora.items()}
  first = sorted(targets)[0]
  if any(t != targets[first] for t in targets.values()):
    raise ValueError(f'{directory}: LoRA targets differ between blocks '
                     f'({ {i: sorted(t) for i, t in sorted(targets.items())} }); jaxlab\'s LoRA '
                     'adapts the same layers in every LoRA block')
  for i, pairs in lora.items():
    for module in {m for m, _ in pairs}:
      if (module, 'A') not in pairs or (module, 'B') not in pairs:
        raise ValueError(f'{directory}: blocks.{i}.{module} has only half a LoRA pair')
  rank = {a.shape[0] for pairs in lora.values() for (_, kind), a in pairs.items() if kind == 'A'}
  if len(rank) != 1 or ('r' in config and rank != {int(config['r'])}):
    raise ValueError(f'{directory}: LoRA ranks {sorted(rank)} in the weights, r={config.get("r")} '
                     'in the config')
  if 'head.weight' not in saved:
    raise ValueError(f'{directory}: no head in the adapter (modules_to_save "head"): jaxlab\'s '
                     'PEFT methods always train a fresh head')
  fixed, base = api.read_weights(weights, heads=vit_kw.pop('heads', None))
  depth = fixed['depth']
  norms = {key.rsplit('.', 1)[0] for key in saved if not key.startswith('head.')}
  method, policy, blocks = _method(set(lora), norms, depth)
  model, params, labels = api.vit_with_peft(
      base, num_classes=saved['head.weight'].shape[0], method=method, policy=policy,
      rank=rank.pop(), alpha=float(config.get('lora_alpha', 8)),
      dropout=float(config.get('lora_dropout') or 0.0), lora_blocks=blocks,
      targets=tuple(t for t in TIMM_MODULES if t in targets[first]), heads=fixed['heads'],
      **vit_kw)
  flat = flatten(params)
  used = set()
  for path in flat:
    found = _peft_key(path)
    if found is None or found[0] not in arrays:
      continue
    key, transposed = found
    value = arrays[key].T if transposed else arrays[key]
    if tuple(np.shape(flat[path])) != value.shape:
      raise ValueError(f'{directory}: {key} {value.shape} does not fit the base ViT\'s {path} '
                       f'{tuple(np.shape(flat[path]))}')
    flat[path] = np.asarray(value, dtype=np.asarray(flat[path]).dtype)
    used.add(key)
  if set(arrays) - used:
    raise ValueError(f'{directory}: {", ".join(sorted(set(arrays) - used)[:4])} have no place '
                     'in the ViT built on these weights')
  return model, unflatten(flat), labels
