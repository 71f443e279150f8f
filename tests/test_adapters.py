"""LoRA adapters in Hugging Face PEFT's layout, both ways (jaxlab.save_adapters, load_adapters).

Always: the files' contents (PEFT's key names, shapes and config fields) and the round trip
through them. With torch, timm and peft installed: PEFT loads jaxlab's adapters onto timm's ViT
with jaxlab's logits, and adapters PEFT trained and saved load into jaxlab with PEFT's logits.
"""

import json
import os

import numpy as np
import pytest

import jaxlab
from jaxlab.io.pretrained import read_safetensors, to_timm, write_safetensors
from jaxlab.params import flatten, unflatten
from jaxlab.peft import adapters

ARCH = dict(image_size=32, patch=8, width=64, depth=3, heads=2, mlp_dim=128)
PREFIX = 'base_model.model.'


def tuned(method='hybrid_layerwise', **kw):
  """(model, params, labels, base) of a tiny ViT whose trained leaves are all nonzero (LoRA B
  starts at zero), and its backbone alone (the LoRA leaves dropped)."""
  model, params, labels = jaxlab.vit_with_peft(None, 5, method=method, rank=4, alpha=8.0,
                                               **ARCH, **kw)
  rng = np.random.default_rng(0)
  flat_labels = flatten(labels)
  flat = {k: (np.asarray(v) + (0.1 * rng.standard_normal(np.shape(v)) if flat_labels[k] not in
                               (None, 'frozen') else 0)).astype(np.float32)
          for k, v in flatten(params).items()}
  base = unflatten({k: v for k, v in flat.items() if '/lora_' not in k})
  return model, unflatten(flat), labels, base


def images(n=2):
  return np.random.default_rng(1).standard_normal((n, 32, 32, 3)).astype(np.float32)


def logits(model, params, x):
  return np.asarray(model.apply({'params': params}, x))


def test_saved_files_are_peft_layout_and_load_back(tmp_path):
  model, params, labels, base = tuned(policy='explicit', lora_blocks=(1, 2))
  config = jaxlab.save_adapters(str(tmp_path), model, params, labels,
                                base_model_name_or_path='timm/some_vit')
  on_disk = json.load(open(tmp_path / 'adapter_config.json'))
  assert on_disk == config
  assert (on_disk['peft_type'], on_disk['r'], on_disk['lora_alpha']) == ('LORA', 4, 8.0)
  assert on_disk['base_model_name_or_path'] == 'timm/some_vit'
  assert sorted(on_disk['target_modules']) == sorted(f'blocks.{i}.{m}' for i in (1, 2) for m in (
      'attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'))
  # hybrid_layerwise: the head, and the norms of the blocks without LoRA (block 0 here).
  assert on_disk['modules_to_save'] == ['blocks.0.norm1', 'blocks.0.norm2', 'head']
  arrays = read_safetensors(str(tmp_path / 'adapter_model.safetensors'))
  flat = flatten(params)
  assert set(arrays) == ({f'{PREFIX}blocks.{i}.{m}.lora_{k}.weight' for i in (1, 2)
                          for m in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2') for k in 'AB'}
                         | {f'{PREFIX}{m}.{w}' for m in ('blocks.0.norm1', 'blocks.0.norm2', 'head')
                            for w in ('weight', 'bias')})
  # PEFT's Linear layout: lora_A [r, in], lora_B [out, r]; the head's weight [classes, width].
  np.testing.assert_array_equal(arrays[f'{PREFIX}blocks.1.attn.qkv.lora_A.weight'],
                                np.asarray(flat['blocks_1/attn/qkv/lora_a']).T)
  np.testing.assert_array_equal(arrays[f'{PREFIX}blocks.2.mlp.fc2.lora_B.weight'],
                                np.asarray(flat['blocks_2/mlp/fc2/lora_b']).T)
  assert arrays[f'{PREFIX}blocks.1.attn.qkv.lora_A.weight'].shape == (4, 64)
  assert arrays[f'{PREFIX}blocks.1.attn.qkv.lora_B.weight'].shape == (192, 4)
  np.testing.assert_array_equal(arrays[f'{PREFIX}head.weight'], np.asarray(flat['head/kernel']).T)
  np.testing.assert_array_equal(arrays[f'{PREFIX}blocks.0.norm1.weight'],
                                flat['blocks_0/norm1/scale'])

  # Back onto the backbone: the same model (method, LoRA spec) and the same parameters.
  model2, params2, labels2 = jaxlab.load_adapters(str(tmp_path), base, heads=2)
  assert model2.lora == model.lora
  assert flatten(labels2) == flatten(labels)
  for path, value in flatten(params).items():
    np.testing.assert_array_equal(flatten(params2)[path], value, err_msg=path)
  x = images()
  np.testing.assert_array_equal(logits(model2, params2, x), logits(model, params, x))


@pytest.mark.parametrize('method', ['lora', 'hybrid_parallel'])
def test_other_lora_methods_round_trip(tmp_path, method):
  model, params, labels, base = tuned(method)
  config = jaxlab.save_adapters(str(tmp_path), model, params, labels)
  saved = set(config['modules_to_save'])
  assert 'head' in saved and (('norm' in saved) == (method == 'hybrid_parallel'))
  model2, params2, labels2 = jaxlab.load_adapters(str(tmp_path), base, heads=2)
  assert model2.lora == model.lora and flatten(labels2) == flatten(labels)
  x = images()
  np.testing.assert_array_equal(logits(model2, params2, x), logits(model, params, x))


def test_what_peft_lora_cannot_hold_is_refused(tmp_path):
  model, params, labels, _ = tuned('norm')
  with pytest.raises(ValueError, match='no LoRA layers'):
    jaxlab.save_adapters(str(tmp_path / 'norm'), model, params, labels)
  model, params, labels, _ = tuned('lora')
  with pytest.raises(ValueError, match='no place for .*blocks_0/attn/qkv/kernel'):
    jaxlab.save_adapters(str(tmp_path / 'full'), model, params)  # labels left out: everything
  good = str(tmp_path / 'good')
  jaxlab.save_adapters(good, model, params, labels)
  config = json.load(open(os.path.join(good, 'adapter_config.json')))
  json.dump({**config, 'use_dora': True}, open(os.path.join(good, 'adapter_config.json'), 'w'))
  with pytest.raises(ValueError, match='use_dora=True'):
    adapters.read_adapters(good)
  json.dump(config, open(os.path.join(good, 'adapter_config.json'), 'w'))
  arrays = read_safetensors(os.path.join(good, 'adapter_model.safetensors'))
  arrays[f'{PREFIX}patch_embed.proj.lora_A.weight'] = np.zeros((4, 3, 8, 8), np.float32)
  write_safetensors(os.path.join(good, 'adapter_model.safetensors'), arrays)
  with pytest.raises(ValueError, match='no place for: patch_embed.proj.lora_A.weight'):
    jaxlab.load_adapters(good, tuned('lora')[3], heads=2)


# ---------------------------------------------------------------------------------------------
# Against PEFT and timm themselves (skipped where they are not installed).


def _timm_vit(state):
  torch = pytest.importorskip('torch')
  timm = pytest.importorskip('timm')
  m = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2,
                                    mlp_ratio=2.0, num_classes=5)
  m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  return m.eval()


def _torch_logits(m, x):
  import torch
  with torch.no_grad():
    return m(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def test_peft_loads_jaxlabs_adapters_with_jaxlabs_logits(tmp_path):
  peft = pytest.importorskip('peft')
  model, params, labels, base = tuned(policy='explicit', lora_blocks=(1, 2))
  jaxlab.save_adapters(str(tmp_path), model, params, labels)
  plain = _timm_vit(to_timm(base))
  x = images()
  assert np.abs(_torch_logits(plain, x) - logits(model, params, x)).max() > 1e-2  # adapters matter
  wrapped = peft.PeftModel.from_pretrained(_timm_vit(to_timm(base)), str(tmp_path)).eval()
  np.testing.assert_allclose(_torch_logits(wrapped, x), logits(model, params, x), atol=1e-4)


def test_adapters_peft_saved_load_into_jaxlab_with_peft_logits(tmp_path):
  peft = pytest.importorskip('peft')
  import torch
  _, _, _, base = tuned('lora')
  timm_base = to_timm(base)
  config = peft.LoraConfig(r=4, lora_alpha=8, modules_to_save=['head'],
                           target_modules=r'blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))')
  wrapped = peft.get_peft_model(_timm_vit(timm_base), config)
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():  # as if trained: every adapter and the head moved
    for name, p in wrapped.named_parameters():
      if 'lora_' in name or 'modules_to_save' in name:
        p.add_(0.1 * torch.randn(p.shape, generator=generator))
  wrapped.save_pretrained(str(tmp_path))
  x = images()
  want = _torch_logits(wrapped.eval(), x)
  model, params, _ = jaxlab.load_adapters(str(tmp_path), timm_base, heads=2)
  assert model.lora.rank == 4 and model.lora.alpha == 8.0 and model.lora.blocks == (0, 1, 2)
  np.testing.assert_allclose(logits(model, params, x), want, atol=1e-4)
