"""ViT initialisation (model.weight_init): timm's trunc-normal(0.02) ('trunc_normal', kept as
an option of the from-scratch mHC ViT, which now uses 'latent_space': see
tests/test_fidelity_mhc.py), and today's init kept for every config that does not ask for
another (the PEFT ViT)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from configs import hybrid, mhc
from jaxlab import models

# The std of N(0, 1) truncated at ±2: jax's truncated_normal(s) has std 0.8796·s.
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978
CLASSES = 100  # a 64×100 head kernel: enough draws to measure its std to a few per cent
BOUND = 2 * 0.02 / TRUNCATED_NORMAL_STD_CORRECTION  # ±2σ of the underlying normal, ≈ 0.0455


def small(model_cfg, **fields):
  """The config's model shrunk to two blocks (quick's patch 8, width 64 stay)."""
  mc = model_cfg.copy_and_resolve_references()
  mc.update(dict(depth=2, dtype='float32', **fields))
  return mc


def init_params(model_cfg, seed=0):
  model = models.model_from_config(model_cfg, CLASSES)
  size = model_cfg.image_size
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))['params']
  return {'/'.join(k): np.asarray(v) for k, v in flatten_dict(params).items()}


@pytest.fixture(scope='module')
def mhc_params():
  # learned position embeddings, so that pos_embed is checked too (the default is RoPE).
  return init_params(small(mhc.get_config('quick').model, pos='learned',
                           weight_init='trunc_normal'))


@pytest.fixture(scope='module')
def peft_model():
  return small(hybrid.get_config('quick').model)


def test_mhc_configs_ask_for_the_reference_init():
  assert mhc.get_config().model.weight_init == 'latent_space'
  assert mhc.get_config('quick').model.weight_init == 'latent_space'
  assert models.vit_arch(mhc.get_config().model)['weight_init'] == 'latent_space'


def test_trunc_normal_kernels_have_std_002_within_the_bound(mhc_params):
  kernels = ['patch_embed/kernel', 'head/kernel', 'pos_embed'] + [
      f'blocks_{i}/{layer}/kernel' for i in range(2)
      for layer in ('attn/qkv', 'attn/proj', 'mlp/fc1', 'mlp/fc2')]
  for name in kernels:
    x = mhc_params[name]
    # lecun-normal (patch_embed, 0.072 here), U(±1/8) (the old head, 0.072) and jax's
    # uncorrected truncated_normal(0.02) (std 0.0176) all fall outside.
    assert abs(x.mean()) < 0.002, name
    assert 0.0188 < x.std() < 0.0212, (name, x.std())
    assert np.abs(x).max() <= BOUND * (1 + 1e-6), (name, np.abs(x).max())
    assert np.abs(x).max() > 0.9 * BOUND, name  # truncated near ±2σ, not narrower


def test_trunc_normal_biases_zero(mhc_params):
  biases = [k for k in mhc_params if k.endswith('/bias') and '/norm' not in k
            and not k.startswith('norm/')]
  assert {'patch_embed/bias', 'head/bias', 'blocks_0/attn/qkv/bias',
          'blocks_1/mlp/fc2/bias'} <= set(biases)
  for name in biases:
    assert not mhc_params[name].any(), name
  assert np.abs(mhc_params['cls_token']).max() < 1e-4  # timm's N(0, 1e-6), under both inits


def test_default_init_is_todays(peft_model):
  assert 'weight_init' not in peft_model  # the PEFT family never names it
  params = init_params(peft_model)
  explicit = init_params(small(peft_model, weight_init='default'))
  assert params.keys() == explicit.keys()
  for name in params:
    np.testing.assert_array_equal(params[name], explicit[name], err_msg=name)
  # Today's init, pinned: patch_embed lecun-normal (std 1/sqrt(8·8·3) ≈ 0.072), zero bias;
  # head kernel and bias U(±1/sqrt(64)); block kernels jax's truncated_normal(0.02) (std 0.0176).
  patch = params['patch_embed/kernel']
  assert abs(patch.std() * np.sqrt(8 * 8 * 3) - 1) < 0.1, patch.std()
  assert not params['patch_embed/bias'].any()
  for name in ('head/kernel', 'head/bias'):
    x = params[name]
    assert np.abs(x).max() <= 1 / 8 and np.abs(x).max() > 0.9 / 8, name
  qkv = params['blocks_0/attn/qkv/kernel']
  assert abs(qkv.std() - 0.02 * TRUNCATED_NORMAL_STD_CORRECTION) < 0.001, qkv.std()
  assert np.abs(qkv).max() <= 0.04


def test_unknown_weight_init_is_refused(peft_model):
  with pytest.raises(ValueError, match='weight_init'):
    init_params(small(peft_model, weight_init='xavier'))
