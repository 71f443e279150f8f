"""LoRA merge, export to timm / big_vision layouts, adapter-only checkpoints, python -m jaxlab.export.

The layouts are checked against tests/fixtures (a tiny timm VisionTransformer's state dict and
the logits timm computed) and against test_vit_loaders' independent timm → big_vision mapping;
an exported fine-tuned model must reproduce the accuracy its own run measured.
"""

import dataclasses
import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hybrid
from jaxlab import experiments
from jaxlab.data.augment import make_eval_preprocess
from jaxlab.data.datasets import load_dataset, select_classes
from jaxlab.experiments import peft
from jaxlab.peft.adapters import load_adapters
from jaxlab.export import ExportError, export, main, read_adapters, run_params
from jaxlab.io import pretrained
from jaxlab.io.pretrained import big_vision_to_params, read_safetensors, timm_to_params
from jaxlab.models import vit
from jaxlab.models.hyper_connections import HyperSpec
from jaxlab.models.lora import LoraSpec, merge_lora
from jaxlab.params import flatten, merge, unflatten
from test_vit_loaders import TINY, TINY_IO, timm_to_big_vision

HIGHEST = 'highest'


def logits(model, params, x):
  with jax.default_matmul_precision(HIGHEST):
    return np.asarray(jax.jit(model.apply)({'params': params}, x))


def assert_trees_equal(a, b):
  chex.assert_trees_all_equal_structs(a, b)
  chex.assert_trees_all_equal(a, b)  # exact values; the failure names the leaf's path


@pytest.fixture(scope='module')
def tiny_sd():
  return read_safetensors(TINY)


# ---------------------------------------------------------------------------------------------
# merge_lora


def test_merge_lora_gives_the_same_logits():
  spec = LoraSpec(rank=4, alpha=16.0, blocks=(0, 1))
  kw = dict(num_classes=5, image_size=16, patch=8, width=32, depth=2, heads=2, mlp_dim=64)
  lora_model, plain = vit.ViT(lora=spec, **kw), vit.ViT(**kw)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
  params = jax.jit(lora_model.init)(jax.random.PRNGKey(0), x)['params']
  # lora_b starts at zero: give every adapter a real contribution first.
  keys = iter(jax.random.split(jax.random.PRNGKey(2), 64))
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: 0.3 * jax.random.normal(next(keys), v.shape)
      if 'lora_b' in jax.tree_util.keystr(p) else v, params)
  want = logits(lora_model, params, x)
  merged = merge_lora(params, lora_model)
  assert not any('lora' in k for k in flatten(merged))
  assert sorted(flatten(merged)) == sorted(flatten(jax.eval_shape(plain.init, jax.random.PRNGKey(0),
                                                                  x)['params']))
  got = logits(plain, merged, x)
  no_scale = dataclasses.replace(spec, alpha=0.0)
  assert np.abs(want - logits(plain, merge_lora(params, no_scale), x)).max() > 1e-2  # LoRA matters
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  # alpha, rank and the LoRA layers travel with the model: another model's are refused.
  with pytest.raises(ValueError, match='LoRA rank is \\[4\\], the model\'s 2'):
    merge_lora(params, dataclasses.replace(spec, rank=2))
  with pytest.raises(ValueError, match='not the model\'s .*blocks_1/attn/proj'):
    merge_lora(params, dataclasses.replace(spec, blocks=(0,)))
  with pytest.raises(ValueError, match='the model has none'):
    merge_lora(params, plain)


def test_merge_lora_refuses_half_pairs():
  with pytest.raises(ValueError, match='without lora_b'):
    merge_lora({'blocks_0': {'attn': {'qkv': {'kernel': np.zeros((4, 3)),
                                              'lora_a': np.zeros((4, 2))}}}},
               LoraSpec(rank=2, blocks=(0,), targets=('qkv',)))


# ---------------------------------------------------------------------------------------------
# to_timm / to_big_vision: exact inverses of the loaders


def test_to_timm_inverts_the_timm_loader(tiny_sd):
  _, params = timm_to_params(tiny_sd)
  back = pretrained.to_timm(params)
  assert sorted(back) == sorted(tiny_sd)
  for k, v in tiny_sd.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_to_big_vision_matches_an_independent_mapping_and_inverts_the_loader(tiny_sd):
  arch, params = timm_to_params(tiny_sd)
  bv = pretrained.to_big_vision(params, heads=arch['heads'])
  ref = timm_to_big_vision(tiny_sd, arch['heads'])
  assert sorted(bv) == sorted(ref)
  for k in ref:
    np.testing.assert_array_equal(bv[k], ref[k], err_msg=k)
  arch2, params2 = big_vision_to_params(bv)
  assert arch2 == arch
  assert_trees_equal(params2, params)


def test_exported_lora_model_reproduces_timm_logits_and_loads_in_timm(tiny_sd, tmp_path):
  """A LoRA model exported to timm's layout: jaxlab's loader, and timm itself when installed,
  give the LoRA model's logits."""
  with np.load(TINY_IO) as f:
    x, timm_logits = f['inputs_nhwc'], f['logits']
  base, params = pretrained.from_timm(tiny_sd)
  np.testing.assert_allclose(logits(base, params, x), timm_logits, atol=1e-4)  # the fixture
  spec = LoraSpec(rank=2, alpha=8.0, blocks=(0, 1))
  lora_model = base.clone(lora=spec)
  fresh = jax.eval_shape(lora_model.init, jax.random.PRNGKey(0), x[:1])['params']
  keys = iter(jax.random.split(jax.random.PRNGKey(3), 64))
  adapters = {k: 0.2 * np.asarray(jax.random.normal(next(keys), v.shape))
              for k, v in flatten(fresh).items() if '/lora_' in k}
  lora_params = merge(params, unflatten(adapters))
  want = logits(lora_model, lora_params, x)
  sd = pretrained.to_timm(lora_params, lora_model)
  model2, params2 = pretrained.from_timm(sd)
  np.testing.assert_allclose(logits(model2, params2, x), want, atol=1e-5)

  torch = pytest.importorskip('torch')
  timm = pytest.importorskip('timm')
  tmodel = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=128, depth=2,
                                         num_heads=2, mlp_ratio=2.0, num_classes=10).eval()
  tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  with torch.no_grad():
    got = tmodel(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_export_refuses_what_timm_cannot_hold():
  model = vit.ViT(num_classes=3, image_size=16, patch=8, width=16, depth=1, heads=2, mlp_dim=32,
                  residual=HyperSpec(kind='static', streams=2, tau=0.05, iterations=2))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  with pytest.raises(ValueError, match='no place for .*hc_attn'):
    pretrained.to_timm(params)


# ---------------------------------------------------------------------------------------------
# A PEFT run on the tiny timm weights: adapter-only checkpoints and python -m jaxlab.export


def run_config(params_mode, steps=6):
  c = hybrid.get_config('quick')
  c.progress = False
  c.sweep.runs = ()
  c.seeds = ()  # one model
  c.pretrained.update(source='timm', path=TINY)
  c.model.update(image_size=32, patch=8, width=128, depth=2, heads=2, mlp_dim=256)
  c.peft.update(method='lora', rank=2, alpha=8.0, diagnostics=False)
  c.train.update(batch_size=16, epochs=1, steps=steps, eval_batch_size=64, steps_per_dispatch=1,
                 log_every_steps=3)
  c.checkpoint.update(every_steps=3, params=params_mode)
  return c


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Workdirs of the same 6 steps: saved whole, and adapter-only in two legs (3, then resumed)."""
  root = tmp_path_factory.mktemp('export')
  whole, adapters = str(root / 'whole'), str(root / 'adapters')
  experiments.run(run_config('all'), whole)
  experiments.run(run_config('trainable', steps=3), adapters)
  summary = experiments.run(run_config('trainable'), adapters)  # resumes at step 3
  return whole, adapters, summary


def test_adapter_only_checkpoints_resume_exactly(runs):
  whole, adapters, _ = runs
  _, params_whole, trainable_whole, step = run_params(whole)
  _, params_adapters, trainable_adapters, step2 = run_params(adapters)
  assert step == step2 == 6
  assert_trees_equal(trainable_adapters, trainable_whole)  # resumed with a rebuilt backbone
  assert_trees_equal(params_adapters, params_whole)
  record = json.load(open(os.path.join(adapters, 'backbone.json')))
  assert record['source'] == 'timm' and record['path'] == os.path.abspath(TINY)
  size = lambda d: sum(os.path.getsize(os.path.join(r, f))
                       for r, _, fs in os.walk(os.path.join(d, 'checkpoints')) for f in fs)
  frozen_bytes = record['frozen_bytes']
  assert frozen_bytes > 0
  assert size(whole) - size(adapters) > 0.8 * frozen_bytes  # each of 2 kept steps drops it
  print(f'checkpoints: whole {size(whole):,} B, adapter-only {size(adapters):,} B '
        f'(frozen {frozen_bytes:,} B per step)')


def test_resume_or_export_with_another_backbone_is_refused(runs, tmp_path):
  _, adapters, _ = runs
  other = str(tmp_path / 'other')
  shutil.copytree(adapters, other)
  path = os.path.join(other, 'backbone.json')
  record = json.load(open(path))
  json.dump({**record, 'fingerprint': '0' * 64}, open(path, 'w'))
  with pytest.raises(ValueError, match='frozen backbone'):
    experiments.run(run_config('trainable', steps=7), other)
  with pytest.raises(ExportError, match='not the one this run was trained on'):
    run_params(other)


def test_exported_model_reproduces_the_runs_accuracy(runs, tmp_path):
  _, adapters, summary = runs
  config = run_config('trainable')
  peft.apply_recipe(config)  # the run's eval preprocessing: resize to 32, normalise
  data = select_classes(load_dataset(config.data), config.data.classes)
  x = np.asarray(make_eval_preprocess(config.augment)(jnp.asarray(data.test.images)))
  y = np.asarray(data.test.labels)

  timm_file, npz_file = str(tmp_path / 'model.safetensors'), str(tmp_path / 'model.npz')
  assert 'LoRA merged' in export(adapters, 'timm', timm_file)
  assert 'LoRA merged' in export(adapters, 'npz', npz_file)
  model, params = pretrained.from_timm(timm_file)
  got = logits(model, params, x)
  acc = float(np.mean(got.argmax(-1) == y))
  assert acc == pytest.approx(summary['acc1'], abs=1e-9), (acc, summary['acc1'])
  model_bv, params_bv = pretrained.from_big_vision(npz_file)
  np.testing.assert_allclose(logits(model_bv, params_bv, x), got, atol=1e-5)

  adapter_file = str(tmp_path / 'adapters.safetensors')
  export(adapters, 'adapters', adapter_file)
  trained, meta = read_adapters(adapter_file)
  assert (meta['method'], meta['rank'], meta['alpha']) == ('lora', 2, 8.0)
  assert meta['backbone']['fingerprint'] == json.load(
      open(os.path.join(adapters, 'backbone.json')))['fingerprint']
  _, full, trainable, _ = run_params(adapters)
  assert_trees_equal(trained, trainable)
  assert all(k.startswith('head/') or '/lora_' in k for k in flatten(trained))

  # --format=peft: a Hugging Face PEFT adapter directory; read back onto the same timm backbone
  # it gives the run's logits (tests/test_adapters.py checks it against PEFT itself).
  peft_dir = str(tmp_path / 'peft_adapter')
  assert 'PEFT LoRA adapter' in export(adapters, 'peft', peft_dir)
  config_written = json.load(open(os.path.join(peft_dir, 'adapter_config.json')))
  assert (config_written['r'], config_written['lora_alpha']) == (2, 8.0)
  assert config_written['base_model_name_or_path'] == os.path.abspath(TINY)
  model_p, params_p, _ = load_adapters(peft_dir, TINY)
  got_p = logits(model_p, params_p, x)  # LoRA unmerged, as the run evaluated it
  np.testing.assert_allclose(got_p, got, atol=1e-4)
  assert float(np.mean(got_p.argmax(-1) == y)) == pytest.approx(summary['acc1'], abs=1e-9)


def test_seeds_share_one_backbone_and_each_seeds_model_exports(runs, tmp_path):
  """PEFT seeds trained together on a pretrained backbone hold one copy of it (resolved.json:
  frozen_copies 1; the parameter counts are one model's); an adapter-only run of them rebuilds
  that one copy; export's --seed gives that seed's trained leaves on it, whose accuracy is the
  seed's own in the run."""
  whole, _, one_model = runs
  workdir = str(tmp_path / 'seeds')
  c = run_config('trainable', steps=3)
  c.seeds = (0, 1)
  summary = experiments.run(c, workdir)
  assert json.load(open(os.path.join(workdir, 'resolved.json')))['frozen_copies'] == 1
  assert summary['total_params'] == one_model['total_params']
  assert summary['trainable_params'] == one_model['trainable_params']
  _, params_whole, trainable_whole, _ = run_params(whole)
  frozen_of = lambda params, trainable: {k: v for k, v in flatten(params).items()
                                         if k not in flatten(trainable)}
  config = run_config('trainable')
  peft.apply_recipe(config)
  data = select_classes(load_dataset(config.data), config.data.classes)
  x = np.asarray(make_eval_preprocess(config.augment)(jnp.asarray(data.test.images)))
  y = np.asarray(data.test.labels)
  heads = []
  for i, seed in enumerate((0, 1)):
    _, params, trainable, step = run_params(workdir, seed=seed)
    assert step == 3
    backbone, pretrained_backbone = frozen_of(params, trainable), frozen_of(params_whole,
                                                                             trainable_whole)
    assert backbone.keys() == pretrained_backbone.keys()
    for path, value in pretrained_backbone.items():  # the one pretrained backbone
      np.testing.assert_array_equal(backbone[path], value, err_msg=path)
    heads.append(trainable['head']['kernel'])
    out = str(tmp_path / f'seed{seed}.safetensors')
    export(workdir, 'timm', out, seed=seed)
    model, exported = pretrained.from_timm(out)
    acc = float(np.mean(logits(model, exported, x).argmax(-1) == y))
    assert acc == pytest.approx(summary['acc1_per_seed'][i], abs=1e-9), (seed, acc)
  assert not np.allclose(heads[0], heads[1])  # each seed its own model


def test_export_command_line_names_the_runs_of_a_sweep(tmp_path, capsys):
  (tmp_path / 'lora').mkdir()
  (tmp_path / 'lora' / 'config.json').write_text('{}')
  assert main(['--workdir', str(tmp_path), '--format', 'timm', '--out', str(tmp_path / 'x')]) == 2
  assert f'export one of its runs: {tmp_path / "lora"}' in capsys.readouterr().err
