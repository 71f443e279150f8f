"""The public API without configs: vit_with_peft, from_timm / from_big_vision with a new head,
make_optimizer as a plain optax transformation, `import jaxlab`, and examples/own_loop.py."""

import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import jaxlab
from configs import hybrid
from jaxlab.experiments import peft
from jaxlab.io import pretrained
from jaxlab.io.pretrained import read_safetensors, timm_to_params
from jaxlab.optim.optimizers import make_optimizer, optimizer_from_config
from jaxlab.params import FROZEN, flatten, label_tree
from jaxlab.peft.api import vit_with_peft
from test_vit_loaders import TINY, TINY_IO, timm_to_big_vision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_trees_equal(a, b):
  fa, fb = flatten(a), flatten(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# ---------------------------------------------------------------------------------------------
# vit_with_peft


def test_vit_with_peft_builds_what_the_config_path_builds():
  """Same seed, same architecture and method: make_task's params and rules bit for bit, also
  with a pretrained backbone grafted in."""
  c = hybrid.get_config('quick')
  c.seed = 7
  c.seeds = ()  # one model, as vit_with_peft builds
  c.model.update(image_size=16, patch=8, width=16, depth=3, heads=2, mlp_dim=32)
  c.peft.update(method='hybrid_layerwise', policy='explicit', lora_blocks=(1,), rank=2,
                attn_only=True)
  arch = dict(image_size=16, patch=8, width=16, depth=3, heads=2, mlp_dim=32)
  kw = dict(method='hybrid_layerwise', policy='explicit', lora_blocks=(1,), rank=2,
            attn_only=True, seed=7, head_init=c.peft.head_init, **arch)
  task = peft.make_task(c, 10)
  model, params, labels = vit_with_peft(None, 10, **kw)
  assert_trees_equal(params, task.params)
  assert labels == label_tree(task.params, task.rules)
  lora_paths = sorted(k for k, v in flatten(labels).items() if v == 'lora')
  assert lora_paths == [f'blocks_1/attn/{t}/lora_{ab}' for t in ('proj', 'qkv') for ab in 'ab']
  assert {v for v in flatten(labels).values()} == {'head', 'norm', 'lora', FROZEN}

  backbone = jax.tree.map(lambda x: x + 1.0, task.params)
  task = peft.make_task(c, 10, backbone)
  _, params, _ = vit_with_peft(backbone, 10, heads=2, **{k: v for k, v in kw.items()
                                                        if k != 'heads'})
  assert_trees_equal(params, task.params)
  np.testing.assert_array_equal(params['blocks_0']['mlp']['fc1']['kernel'],
                                backbone['blocks_0']['mlp']['fc1']['kernel'])


@pytest.fixture(scope='module')
def tiny_timm():
  return read_safetensors(TINY)


@pytest.fixture(scope='module')
def lora_tiny(tiny_timm):
  return vit_with_peft(tiny_timm, 100, method='lora', rank=2, seed=3)


def test_vit_with_peft_from_timm_keeps_the_backbone_and_a_fresh_head(tiny_timm, lora_tiny):
  model, params, labels = lora_tiny
  _, ref = timm_to_params(tiny_timm)
  flat, flat_ref, flat_labels = flatten(params), flatten(ref), flatten(labels)
  for k, v in flat.items():
    if k.startswith('head/') or '/lora_' in k:
      continue
    np.testing.assert_array_equal(np.asarray(v), flat_ref[k], err_msg=k)
  assert params['head']['kernel'].shape == (128, 100)
  assert {k for k, v in flat_labels.items() if v != FROZEN} == \
      {k for k in flat if k.startswith('head/') or '/lora_' in k}
  # LoRA starts as the identity change: the class-token features are the checkpoint's, whose
  # logits test_vit_loaders pins to timm's.
  with np.load(TINY_IO) as f:
    x = f['inputs_nhwc']
  base, base_params = pretrained.from_timm(tiny_timm)
  embed = jax.jit(lambda m, p: m.apply({'params': p}, x, embed=True), static_argnums=0)
  np.testing.assert_allclose(embed(model, params), embed(base, base_params), atol=1e-5)


def test_all_weight_formats_give_the_same_model(tiny_timm, lora_tiny):
  _, params, _ = lora_tiny
  npz = timm_to_big_vision(tiny_timm, heads=2)
  for weights in (TINY, npz, {'opt/target/' + k: v for k, v in npz.items()},
                  timm_to_params(tiny_timm)[1]):
    model, other, _ = vit_with_peft(weights, 100, method='lora', rank=2, seed=3, heads=2)
    assert model.heads == 2
    assert_trees_equal(other, params)


def test_from_timm_and_big_vision_with_another_num_classes(tiny_timm, lora_tiny):
  model, params = pretrained.from_timm(TINY, num_classes=100, seed=3)
  _, ref = timm_to_params(tiny_timm)
  assert model.num_classes == 100 and params['head']['kernel'].shape == (128, 100)
  assert_trees_equal({k: v for k, v in params.items() if k != 'head'},
                     {k: v for k, v in ref.items() if k != 'head'})
  bound = 1 / np.sqrt(128)  # ViT's default head init: U(±1/sqrt(width)), kernel and bias
  for leaf in params['head'].values():
    assert np.abs(leaf).max() <= bound and np.std(leaf) > 0.4 * bound
  # vit_with_peft's head_init='uniform' gives this head; its default, timm's, another.
  _, uniform, _ = vit_with_peft(tiny_timm, 100, method='lora', rank=2, seed=3,
                                head_init='uniform')
  assert_trees_equal(params['head'], uniform['head'])
  assert np.all(np.asarray(lora_tiny[1]['head']['bias']) == 0)
  _, again = pretrained.from_big_vision(timm_to_big_vision(tiny_timm, heads=2), num_classes=100, seed=3)
  assert_trees_equal(again, params)
  _, other_seed = pretrained.from_timm(TINY, num_classes=100, seed=4)
  assert not np.array_equal(other_seed['head']['kernel'], params['head']['kernel'])
  model, params = pretrained.from_timm(TINY, image_size=64)  # grid 8: resampled (test_resample.py)
  assert model.image_size == 64 and params['pos_embed'].shape == (1, 65, 128)
  np.testing.assert_array_equal(params['head']['kernel'], ref['head']['kernel'])


def test_vit_with_peft_errors_name_the_problem(tiny_timm):
  with pytest.raises(ValueError, match='width=128'):
    vit_with_peft(tiny_timm, 10, width=64)
  with pytest.raises(ValueError, match='variant'):
    vit_with_peft(None, 10)
  with pytest.raises(ValueError, match='unknown variant'):
    vit_with_peft(None, 10, variant='XL/7')
  with pytest.raises(ValueError, match='does not divide'):
    vit_with_peft(tiny_timm, 10, image_size=30)
  with pytest.raises(ValueError, match='safetensors'):
    vit_with_peft('weights.bin', 10)


# ---------------------------------------------------------------------------------------------
# make_optimizer

PARAMS = {'head': {'kernel': np.array([[0.5, -1.0], [2.0, 0.3]], np.float32),
                   'bias': np.array([0.1, -0.2], np.float32)},
          'blocks_0': {'qkv': {'lora_a': np.array([[1.0, -0.5]], np.float32)},
                       'norm1': {'scale': np.array([1.0, 0.9], np.float32)}}}
LABELS = {'head': {'kernel': 'head', 'bias': 'head'},
          'blocks_0': {'qkv': {'lora_a': 'lora'}, 'norm1': {'scale': FROZEN}}}


def grads_at(step):
  rng = np.random.default_rng(step)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), PARAMS)


def run(tx, steps, **extra):
  params = jax.tree.map(jnp.asarray, PARAMS)
  state = tx.init(params)
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))
  for step in range(steps):
    updates, state = update(grads_at(step), state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_make_optimizer_is_optax_adamw_per_group_without_a_global_step():
  tx = make_optimizer(LABELS, name='adamw', lr=1e-2, weight_decay=0.1, schedule='cosine',
                      total_steps=6, groups={'lora': dict(lr=5e-3, weight_decay=0.0)})
  ref = optax.partition(
      {'head': optax.adamw(optax.cosine_decay_schedule(1e-2, 6), weight_decay=0.1),
       'lora': optax.adamw(optax.cosine_decay_schedule(5e-3, 6), weight_decay=0.0),
       FROZEN: optax.set_to_zero()}, LABELS)
  got, want = run(tx, 5), run(ref, 5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
  np.testing.assert_array_equal(got['blocks_0']['norm1']['scale'], PARAMS['blocks_0']['norm1']['scale'])
  assert not np.allclose(got['blocks_0']['qkv']['lora_a'], PARAMS['blocks_0']['qkv']['lora_a'])
  # It composes like any optax transformation.
  chained = optax.chain(optax.clip_by_global_norm(1e6), tx)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), run(chained, 5), got)


def test_global_step_takes_over_the_schedule():
  """sgd, lr 1, cosine over 10 steps: lr(t) = (1 + cos(πt/10)) / 2."""
  labels = {'w': 'base'}
  tx = make_optimizer(labels, name='sgd', lr=1.0, schedule='cosine', total_steps=10)
  params, g = {'w': jnp.zeros(3)}, {'w': jnp.ones(3)}
  lr = lambda t: 0.5 * (1 + np.cos(np.pi * t / 10))
  state = tx.init(params)
  for t in range(3):  # its own count: 0, 1, 2
    u, state = tx.update(g, state, params)
    np.testing.assert_allclose(u['w'], -lr(t), rtol=1e-6)
  u, state = tx.update(g, state, params, global_step=jnp.asarray(7))
  np.testing.assert_allclose(u['w'], -lr(7), rtol=1e-6)
  u, _ = tx.update(g, state, params, global_step=jnp.asarray(7), lr_scales={'base': 0.5})
  np.testing.assert_allclose(u['w'], -0.5 * lr(7), rtol=1e-6)


def test_optimizer_from_config_is_make_optimizer_with_the_config_fields():
  c = ml_collections.ConfigDict(dict(
      name='sgdm', lr=0.1, weight_decay=1e-3, momentum=0.8, nesterov=True, b1=0.9, b2=0.999,
      eps=1e-8, trust_coefficient=1e-3, schedule='warmup_cosine', warmup_epochs=0.0,
      warmup_fraction=0.25, lr_floor=0.1, decay_start_fraction=0.8, decay_shape='1-sqrt',
      groups=ml_collections.ConfigDict(dict(lora=dict(lr=0.02)))))
  step = {'global_step': jnp.asarray(3)}
  got = run(optimizer_from_config(c, LABELS, 8, 4), 4, **step)
  want = run(make_optimizer(LABELS, 'sgdm', 0.1, 1e-3, 'warmup_cosine', 8, warmup_steps=2,
                            lr_floor=0.1, momentum=0.8, nesterov=True,
                            groups={'lora': {'lr': 0.02}}), 4, **step)
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_make_optimizer_refuses_bad_arguments():
  with pytest.raises(TypeError, match='optimizer_from_config'):
    make_optimizer(ml_collections.ConfigDict(dict(name='adamw')), LABELS, 10, 1)
  with pytest.raises(ValueError, match='total_steps'):
    make_optimizer(LABELS, schedule='cosine')
  with pytest.raises(ValueError, match="sets \\['learning_rate'\\]"):
    make_optimizer(LABELS, groups={'lora': {'learning_rate': 1e-3}})
  with pytest.raises(ValueError, match='unknown optimizer'):
    make_optimizer(LABELS, name='adam')


# ---------------------------------------------------------------------------------------------
# the package


def test_import_jaxlab_is_cheap_and_every_export_resolves():
  code = ('import sys, jaxlab; print(sorted(m for m in sys.modules '
          'if m.split(".")[0] in ("jax", "flax", "optax", "numpy")))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                       check=True)
  assert out.stdout.strip() == '[]'
  for name in jaxlab.__all__:
    assert getattr(jaxlab, name) is not None, name
  assert jaxlab.vit_with_peft is vit_with_peft and jaxlab.from_timm is pretrained.from_timm
  with pytest.raises(AttributeError):
    jaxlab.no_such_name  # noqa: B018


def test_own_loop_example_learns_digits(capsys):
  spec = importlib.util.spec_from_file_location('own_loop', os.path.join(ROOT, 'examples',
                                                                          'own_loop.py'))
  own_loop = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(own_loop)
  losses, accuracy = own_loop.main(steps=120, log_every=40)
  assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.3, (losses[:20], losses[-20:])
  assert accuracy > 0.25  # chance: 0.1
  assert 'test accuracy' in capsys.readouterr().out
