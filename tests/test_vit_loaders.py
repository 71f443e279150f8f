"""Pretrained ViT loaders: timm state dicts / safetensors and big_vision (AugReg) npz, against timm.

The fixtures in tests/fixtures come from make_timm_fixture.py (torch + timm): a tiny timm
VisionTransformer with perturbed weights and the logits timm computed for 4 inputs. The
live S/16 test needs torch and timm and is skipped without them.
"""

import os
import time

import jax
import ml_dtypes
import numpy as np
import pytest

from jaxlab.io import pretrained
from jaxlab.io.pretrained import (big_vision_to_params, fetch_augreg, read_safetensors,
                                  timm_to_params, write_safetensors)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
TINY = os.path.join(FIXTURES, 'timm_vit_tiny.safetensors')
TINY_IO = os.path.join(FIXTURES, 'timm_vit_tiny_io.npz')
TINY_ARCH = dict(num_classes=10, image_size=32, patch=8, width=128, depth=2, heads=2, mlp_dim=256)


@pytest.fixture(scope='module')
def tiny_state():
  return read_safetensors(TINY)


@pytest.fixture(scope='module')
def tiny_io():
  with np.load(TINY_IO) as f:
    return {k: f[k] for k in f.files}


def logits_of(model, params, images_nhwc):
  with jax.default_matmul_precision('highest'):
    return np.asarray(jax.jit(model.apply)({'params': params}, images_nhwc))


def timm_to_big_vision(sd, heads):
  """The reverse mapping, written independently of the loader: timm names → AugReg npz names."""
  w = sd['cls_token'].shape[-1]
  hd = w // heads
  out = {
      'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),  # OIHW → HWIO
      'embedding/bias': sd['patch_embed.proj.bias'],
      'cls': sd['cls_token'],
      'Transformer/posembed_input/pos_embedding': sd['pos_embed'],
      'Transformer/encoder_norm/scale': sd['norm.weight'],
      'Transformer/encoder_norm/bias': sd['norm.bias'],
      'head/kernel': sd['head.weight'].T,
      'head/bias': sd['head.bias'],
  }
  depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
  for i in range(depth):
    t, b = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
    a = b + 'MultiHeadDotProductAttention_1/'
    out[b + 'LayerNorm_0/scale'] = sd[t + 'norm1.weight']
    out[b + 'LayerNorm_0/bias'] = sd[t + 'norm1.bias']
    out[b + 'LayerNorm_2/scale'] = sd[t + 'norm2.weight']
    out[b + 'LayerNorm_2/bias'] = sd[t + 'norm2.bias']
    qkv_w = sd[t + 'attn.qkv.weight'].reshape(3, heads, hd, w)  # output rows: [3, heads, head_dim]
    qkv_b = sd[t + 'attn.qkv.bias'].reshape(3, heads, hd)
    for j, name in enumerate(('query', 'key', 'value')):
      out[a + name + '/kernel'] = qkv_w[j].transpose(2, 0, 1)  # (width, heads, head_dim)
      out[a + name + '/bias'] = qkv_b[j]
    out[a + 'out/kernel'] = sd[t + 'attn.proj.weight'].T.reshape(heads, hd, w)
    out[a + 'out/bias'] = sd[t + 'attn.proj.bias']
    out[b + 'MlpBlock_3/Dense_0/kernel'] = sd[t + 'mlp.fc1.weight'].T
    out[b + 'MlpBlock_3/Dense_0/bias'] = sd[t + 'mlp.fc1.bias']
    out[b + 'MlpBlock_3/Dense_1/kernel'] = sd[t + 'mlp.fc2.weight'].T
    out[b + 'MlpBlock_3/Dense_1/bias'] = sd[t + 'mlp.fc2.bias']
  return out


# ---------------------------------------------------------------------------------------------
# parity with the stored timm logits


def test_fixture_parity_timm(tiny_state, tiny_io):
  model, params = pretrained.from_timm(tiny_state)
  assert {k: getattr(model, k) for k in TINY_ARCH} == TINY_ARCH
  got = logits_of(model, params, tiny_io['inputs_nhwc'])
  diff = np.abs(got - tiny_io['logits']).max()
  print(f'fixture max |dlogits| = {diff:.3g} (timm {tiny_io["timm_version"]}, '
        f'torch {tiny_io["torch_version"]})')
  assert diff < 1e-5, diff
  np.testing.assert_array_equal(tiny_io['inputs_nhwc'], tiny_io['inputs_nchw'].transpose(0, 2, 3, 1))


def test_from_timm_accepts_a_path_and_checks_overrides(tiny_io):
  model, params = pretrained.from_timm(TINY, dtype=np.float32)
  assert model.width == 128 and params['patch_embed']['kernel'].shape == (8, 8, 3, 128)
  # num_classes and image_size may differ (tests/test_api.py, test_resample.py); width may not.
  with pytest.raises(ValueError, match='width=128'):
    pretrained.from_timm(TINY, width=64)
  with pytest.raises(ValueError, match='safetensors'):
    pretrained.from_timm(TINY_IO)


def test_npz_parity_big_vision(tiny_state, tiny_io, tmp_path):
  path = tmp_path / 'tiny_augreg.npz'
  np.savez(path, **timm_to_big_vision(tiny_state, heads=2))
  model, params = pretrained.from_big_vision(str(path))
  assert {k: getattr(model, k) for k in TINY_ARCH} == TINY_ARCH
  got = logits_of(model, params, tiny_io['inputs_nhwc'])
  diff = np.abs(got - tiny_io['logits']).max()
  print(f'npz max |dlogits| = {diff:.3g}')
  assert diff < 1e-5, diff
  # Both routes land on exactly the same parameters.
  _, from_timm = timm_to_params(tiny_state)
  jax.tree.map(np.testing.assert_array_equal, params, from_timm)


def test_heads_default_and_override(tiny_state):
  assert timm_to_params(tiny_state)[0]['heads'] == 2  # width // 64
  assert timm_to_params(tiny_state, heads=4)[0]['heads'] == 4
  with pytest.raises(ValueError, match='heads=3'):
    timm_to_params(tiny_state, heads=3)
  bv = timm_to_big_vision(tiny_state, heads=4)
  assert big_vision_to_params(bv)[0]['heads'] == 4  # read from the shapes
  with pytest.raises(ValueError, match='4 heads'):
    big_vision_to_params(bv, heads=2)


def test_torch_like_inputs_and_bf16_are_converted(tiny_state):
  class FakeTensor:  # what a torch tensor offers
    def __init__(self, a):
      self.a = a

    def detach(self):
      return self

    def cpu(self):
      return self

    def numpy(self):
      return self.a

  sd = {k: FakeTensor(v.astype(ml_dtypes.bfloat16)) for k, v in tiny_state.items()}
  _, params = timm_to_params(sd)
  leaves = jax.tree.leaves(params)
  assert all(leaf.dtype == np.float32 for leaf in leaves)
  np.testing.assert_allclose(params['norm']['scale'], tiny_state['norm.weight'], rtol=1e-2)


# ---------------------------------------------------------------------------------------------
# missing / unexpected keys


def test_timm_missing_and_unexpected_keys_are_all_listed(tiny_state):
  sd = dict(tiny_state)
  del sd['blocks.1.attn.qkv.bias'], sd['head.weight']
  sd['fc_norm.weight'] = sd['norm.weight']
  sd['blocks.0.ls1.gamma'] = sd['norm.weight']
  with pytest.raises(KeyError) as err:
    timm_to_params(sd)
  msg = str(err.value)
  for name in ('blocks.1.attn.qkv.bias', 'head.weight', 'fc_norm.weight', 'blocks.0.ls1.gamma'):
    assert name in msg
  assert 'missing keys (2)' in msg and 'unexpected keys (2)' in msg
  assert isinstance(err.value, ValueError)


def test_timm_gap_in_blocks_lists_the_whole_block(tiny_state):
  sd = {k: v for k, v in tiny_state.items() if not k.startswith('blocks.0.')}
  with pytest.raises(ValueError, match='missing keys \\(12\\)') as err:
    timm_to_params(sd)
  assert 'blocks.0.mlp.fc2.weight' in str(err.value)


def test_big_vision_missing_and_unexpected_keys_are_all_listed(tiny_state):
  bv = timm_to_big_vision(tiny_state, heads=2)
  del bv['Transformer/encoderblock_0/MultiHeadDotProductAttention_1/key/bias']
  del bv['cls']
  bv['pre_logits/kernel'] = np.zeros((128, 128), np.float32)
  bv['pre_logits/bias'] = np.zeros((128,), np.float32)
  with pytest.raises(KeyError) as err:
    big_vision_to_params(bv)
  msg = str(err.value)
  for name in ('encoderblock_0/MultiHeadDotProductAttention_1/key/bias', 'cls', 'pre_logits/kernel',
               'pre_logits/bias'):
    assert name in msg
  assert 'missing keys (2)' in msg and 'unexpected keys (2)' in msg


def test_inconsistent_shapes_raise(tiny_state):
  sd = dict(tiny_state)
  sd['blocks.1.mlp.fc1.weight'] = np.zeros((300, 128), np.float32)
  with pytest.raises(ValueError, match='blocks_1/mlp/fc1/kernel'):
    timm_to_params(sd)


# ---------------------------------------------------------------------------------------------
# safetensors


def test_safetensors_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {
      'f32': rng.normal(size=(3, 5)).astype(np.float32),
      'f16': rng.normal(size=(7,)).astype(np.float16),
      'bf16': rng.normal(size=(2, 3, 4)).astype(ml_dtypes.bfloat16),
      'i64': np.arange(-5, 6, dtype=np.int64),
      'scalar': np.array(3.5, np.float32),
      'empty': np.zeros((0, 4), np.float32),
      'a.nested/name': np.ones((2,), np.float32),
  }
  path = tmp_path / 'x.safetensors'
  write_safetensors(path, arrays, metadata={'format': 'np'})
  back = read_safetensors(path)
  assert sorted(back) == sorted(arrays)
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    assert back[k].tobytes() == v.tobytes(), k
  raw = path.read_bytes()
  n = int.from_bytes(raw[:8], 'little')
  assert (8 + n) % 8 == 0  # data section aligned


def test_safetensors_reader_rejects_a_truncated_file(tmp_path):
  path = tmp_path / 'x.safetensors'
  write_safetensors(path, {'a': np.ones((16,), np.float32)})
  path.write_bytes(path.read_bytes()[:-4])
  with pytest.raises(ValueError, match='x.safetensors: not a readable safetensors file'):
    read_safetensors(path)


# ---------------------------------------------------------------------------------------------
# download


def test_fetch_augreg_offline_error(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    fetch_augreg(cache_dir=tmp_path, base_url='http://127.0.0.1:9/', timeout=2)
  msg = str(err.value)
  assert str(tmp_path / pretrained.AUGREG_S16) in msg
  assert 'vit_small_patch16_224.augreg_in21k_ft_in1k' in msg
  assert os.listdir(tmp_path) == []  # no partial file left behind


def test_fetch_augreg_uses_the_cache(tmp_path):
  (tmp_path / 'x.npz').write_bytes(b'cached')
  assert fetch_augreg('x.npz', cache_dir=tmp_path, base_url='http://127.0.0.1:9/') == str(
      tmp_path / 'x.npz')


# ---------------------------------------------------------------------------------------------
# live: timm's vit_small_patch16_224 (random, perturbed weights), only with torch + timm


def test_live_timm_vit_small_patch16_224():
  torch = pytest.importorskip('torch')
  timm = pytest.importorskip('timm')
  torch.manual_seed(0)
  model = timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=100).eval()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else 0.02))
    x = torch.randn(2, 3, 224, 224, generator=g)
    want = model(x).numpy()
  jmodel, params = pretrained.from_timm(model.state_dict())
  assert (jmodel.patch, jmodel.width, jmodel.depth, jmodel.heads, jmodel.mlp_dim,
          jmodel.num_classes, jmodel.image_size) == (16, 384, 12, 6, 1536, 100, 224)
  t0 = time.perf_counter()
  got = logits_of(jmodel, params, x.numpy().transpose(0, 2, 3, 1))
  diff = np.abs(got - want).max()
  print(f'live S/16 max |dlogits| = {diff:.3g} (|logits| up to {np.abs(want).max():.3g}; '
        f'timm {timm.__version__}, torch {torch.__version__}; jax {time.perf_counter() - t0:.1f}s)')
  assert diff < 1e-4, diff
