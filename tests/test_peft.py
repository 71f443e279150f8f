"""PEFT methods: exact trainable counts, freezing semantics, diagnostics."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hybrid
from jaxlab import checks, experiments, models
from jaxlab.data.datasets import Dataset, load_dataset
from jaxlab.data.pipeline import Split
from jaxlab.experiments import peft, peft_stats
from jaxlab.models.lora import LoraSpec
from jaxlab.parallel.mesh import make_mesh
from jaxlab.params import FROZEN, flatten, label_tree, merge
from jaxlab.peft import methods
from jaxlab.train.loop import fit


def s16_trainables(method, policy='deep_lora'):
  """Trainable parameters of S/16 with 100 classes, from shapes only (jax.eval_shape)."""
  config = hybrid.get_config()
  blocks = methods.lora_blocks(method, 12, policy)
  lora = LoraSpec(blocks=blocks) if blocks else None
  model = models.model_from_config(config.model, 100, lora=lora)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))['params']
  labels = flatten(label_tree(shapes, methods.rules(method, 12, blocks)))
  return sum(int(np.prod(s.shape)) for k, s in flatten(shapes).items() if labels[k] != FROZEN)


@pytest.mark.parametrize('method,policy,count', [
    ('norm', None, 57_700),
    ('lora', None, 628_324),
    ('hybrid_parallel', None, 647_524),
    ('hybrid_layerwise', 'deep_lora', 247_396),
    ('linear', None, 38_500),
])
def test_s16_trainable_counts_match_spec(method, policy, count):
  assert s16_trainables(method, policy or 'deep_lora') == count


def test_policies_pick_blocks():
  assert methods.lora_blocks('hybrid_layerwise', 12, 'deep_lora') == (8, 9, 10, 11)
  assert methods.lora_blocks('hybrid_layerwise', 12, 'even_lora') == (0, 2, 4, 6, 8, 10)
  assert methods.lora_blocks('hybrid_layerwise', 12, 'odd_lora') == (1, 3, 5, 7, 9, 11)
  assert methods.lora_blocks('hybrid_layerwise', 12, 'explicit', (3, 1)) == (1, 3)
  with pytest.raises(ValueError, match='0..11'):
    methods.lora_blocks('hybrid_layerwise', 12, 'explicit', (12,))


def test_layerwise_rules_train_own_norms_only():
  rules = methods.rules('hybrid_layerwise', 3, (2,))
  paths = ['blocks_0/norm1/scale', 'blocks_2/norm1/scale', 'blocks_2/attn/qkv/lora_a',
           'norm/scale', 'head/kernel', 'blocks_0/attn/qkv/kernel']
  from jaxlab.params import label_paths
  assert label_paths(paths, rules) == {
      'blocks_0/norm1/scale': 'norm', 'blocks_2/norm1/scale': FROZEN,
      'blocks_2/attn/qkv/lora_a': 'lora', 'norm/scale': FROZEN, 'head/kernel': 'head',
      'blocks_0/attn/qkv/kernel': FROZEN}


def test_hold_schedule_falls_on_spec_steps():
  warm = methods.hold_schedule(freeze_lora_steps=200)
  assert warm(0) == warm(199) == {'lora'} and warm(200) == frozenset()
  alt = methods.hold_schedule(alt_freeze_every=50, order='lora-first')
  assert [alt(s) for s in (0, 49, 50, 99, 100)] == [{'lora'}, {'lora'}, {'norm'}, {'norm'}, {'lora'}]
  rev = methods.hold_schedule(alt_freeze_every=50, order='norm-first')
  assert rev(0) == {'norm'} and rev(50) == {'lora'}
  both = methods.hold_schedule(freeze_lora_steps=10, freeze_norm_steps=20, alt_freeze_every=4)
  # Warm-ups first; the alternation starts only once both are over, phase = (step // K) % 2.
  assert both(5) == {'lora', 'norm'} and both(15) == {'norm'}
  assert both(20) == {'norm'} and both(24) == {'lora'}  # 20 // 4 = 5: phase 1
  assert methods.hold_schedule() is None


def test_graft_keeps_lora_and_head_fresh():
  fresh = {'head': {'kernel': jnp.zeros((2, 3))}, 'blocks_0': {'qkv': {
      'kernel': jnp.zeros((2, 2)), 'lora_a': jnp.ones((2, 1))}}}
  pre = {'head': {'kernel': jnp.ones((2, 9))}, 'blocks_0': {'qkv': {'kernel': jnp.ones((2, 2))}}}
  out = peft.graft(fresh, pre)
  np.testing.assert_array_equal(out['blocks_0']['qkv']['kernel'], 1)
  np.testing.assert_array_equal(out['head']['kernel'], 0)
  np.testing.assert_array_equal(out['blocks_0']['qkv']['lora_a'], 1)
  with pytest.raises(ValueError, match='blocks_0/qkv/kernel'):
    peft.graft(fresh, {'blocks_0': {'qkv': {'kernel': jnp.ones((3, 2))}}})


# A tiny hybrid ViT trained with the real trainer.

@pytest.fixture(scope='module')
def tiny_digits():
  d = load_dataset(hybrid.get_config('quick').data)
  return Dataset(name='digits', train=Split(d.train.images[:32], d.train.labels[:32]),
                 test=Split(d.test.images[:16], d.test.labels[:16]), num_classes=10,
                 eval_split='test')


def tiny_config(**peft_fields):
  c = hybrid.get_config('quick')
  c.progress = False
  c.sweep.runs = ()
  c.seeds = ()  # one model (config.seed)
  c.pretrained.source = 'none'
  c.data.classes = ()
  c.model.update(image_size=16, patch=8, width=16, depth=2, heads=2, mlp_dim=32)
  c.peft.update(method='hybrid_parallel', rank=2, diagnostics=True)  # quick turns them off
  c.peft.update(peft_fields)
  c.augment.rrc_scale = (0.0, 0.0)  # quick's random zoom off: only the recipe's augmentation
  c.train.update(batch_size=8, epochs=2, eval_batch_size=8, steps_per_dispatch=1, log_every_steps=1)
  c.checkpoint.every_steps = 100
  peft.apply_recipe(c)
  return c


def group_leaves(tree, labels, group):
  return {k: np.asarray(v) for k, v in flatten(tree).items() if labels[k] == group}


def test_held_group_is_bit_identical_and_head_moves(tmp_path, tiny_digits):
  c = tiny_config(alt_freeze_every=2, alt_order='lora-first')
  task = peft.make_task(c, 10)
  labels = flatten(label_tree(task.params, task.rules))
  snaps = []

  def record(step, state):
    snaps.append((step, jax.device_get(state)))

  summary, _ = fit(c, str(tmp_path), task, tiny_digits, mesh=make_mesh(jax.devices()[:1]),
                   on_chunk=record)
  assert [s for s, _ in snaps] == list(range(1, 9))
  prev = jax.device_get(jax.tree.map(jnp.asarray, {'params': merge(task.params)}))
  prev_params = prev['params']
  prev_opt = None
  for step, state in snaps:
    held = methods.hold_schedule(alt_freeze_every=2)(step - 1)
    (held_group,) = held
    live_group = ({'lora', 'norm'} - held).pop()
    for k, v in group_leaves(state.params, labels, held_group).items():
      np.testing.assert_array_equal(v, group_leaves(prev_params, labels, held_group)[k])
    assert any(not np.array_equal(v, group_leaves(prev_params, labels, 'head')[k])
               for k, v in group_leaves(state.params, labels, 'head').items())
    if step > 1:  # lora_b starts at zero; from the 2nd step on every live group moves
      assert any(not np.array_equal(v, group_leaves(prev_params, labels, live_group)[k])
                 for k, v in group_leaves(state.params, labels, live_group).items())
    if prev_opt is not None:
      same = jax.tree.map(np.array_equal, state.opt_state.inner_states[held_group],
                          prev_opt.inner_states[held_group])
      assert all(jax.tree.leaves(same)), f'{held_group} optimizer state moved at step {step}'
    prev_params, prev_opt = state.params, state.opt_state
  # Each group's Adam count advanced only on its 4 live steps of 8; the head's on all 8.
  final = snaps[-1][1].opt_state.inner_states
  assert int(final['lora'].inner_state[0][0].count) == 4
  assert int(final['norm'].inner_state[0][0].count) == 4
  assert int(final['head'].inner_state[0][0].count) == 8
  # Trainable count per phase is logged: head+norm while LoRA is held, head+lora otherwise.
  records = [r for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))
             if r['split'] == 'train']
  counts = {r['step']: r['trainable_params'] for r in records}
  head = sum(v.size for v in group_leaves(task.params, labels, 'head').values())
  norm = sum(v.size for v in group_leaves(task.params, labels, 'norm').values())
  lora = sum(v.size for v in group_leaves(task.params, labels, 'lora').values())
  assert counts[1] == head + norm and counts[3] == head + lora
  # The wall clock a step holds the step and the diagnostics (every step here) around it;
  # the 16 test images are one batch of the per-batch ECE (128), so it is the global ECE.
  assert summary['wall_step_time_s'] > summary['avg_step_time_s'] > 0
  assert summary['ece_per_batch'] == pytest.approx(summary['ece'], abs=1e-7)
  epochs = [r for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))
            if r['split'] == 'train_epoch']
  assert len(epochs) == 2 and all(r['wall_step_time_s'] > 0 for r in epochs)


def test_diagnostics_match_numpy(tmp_path, tiny_digits):
  """cos/lora_norm is the cosine of the logit changes J_lora·g_lora and J_norm·g_norm."""
  c = tiny_config()
  c.augment.update(crop_padding=0, flip=False)
  c.train.epochs = 1
  task = peft.make_task(c, 10)
  # Make LoRA's B non-zero so that its gradient is not trivially structured.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.05 if 'lora_b' in jax.tree_util.keystr(p) else x, task.params)
  task = dataclasses.replace(task, params=params)
  snaps = []
  fit(c, str(tmp_path), task, tiny_digits, mesh=make_mesh(jax.devices()[:1]),
      on_chunk=lambda s, st: snaps.append(jax.device_get(st)))
  rec = next(r for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))
             if r['split'] == 'train' and r['step'] == 1)

  # Recompute step 0 independently: same batch, same preprocessing, explicit Jacobians.
  from jaxlab.data.pipeline import EpochIndices
  from jaxlab.params import run_keys
  from jaxlab.data.augment import make_eval_preprocess
  _, data_key, _ = run_keys(c.seed)
  idx = EpochIndices(data_key, 32, 8).chunk(0, 1)[0]
  images = make_eval_preprocess(c.augment)(tiny_digits.train.images[idx])
  y = tiny_digits.train.labels[idx]
  labels = flatten(label_tree(params, task.rules))
  flat = flatten(params)

  def logits_of(vec_by_group):
    full = dict(flat)
    full.update(vec_by_group)
    from jaxlab.params import unflatten
    return task.apply(unflatten(full), images, True, None)

  group = {g: {k: flat[k] for k in flat if labels[k] == g} for g in ('lora', 'norm')}
  both = {**group['lora'], **group['norm']}

  def loss(p):
    z = logits_of(p)
    return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(8), y])

  # Each compiled as one program (run op by op, they compiled some 300 small ones).
  grads = jax.jit(jax.grad(loss))(both)
  jac = jax.jit(jax.jacrev(logits_of))(both)
  dz = {}
  for g in ('lora', 'norm'):
    dz[g] = sum(np.asarray(jac[k]).reshape(8 * 10, -1) @ np.asarray(grads[k]).reshape(-1)
                for k in group[g])
  cos = dz['lora'] @ dz['norm'] / np.linalg.norm(dz['lora']) / np.linalg.norm(dz['norm'])
  assert rec['cos/lora_norm'] == pytest.approx(float(cos), rel=1e-3, abs=1e-5)
  for g in ('lora', 'norm'):
    gnorm = np.sqrt(sum(np.sum(np.asarray(grads[k]) ** 2) for k in group[g]))
    assert rec[f'grad_norm/{g}'] == pytest.approx(float(gnorm), rel=1e-3)
    # The update norm is the norm of the actual parameter change.
    after = flatten(snaps[0].params)
    change = np.sqrt(sum(np.sum((np.asarray(after[k]) - np.asarray(flat[k])) ** 2)
                         for k in group[g]))
    assert rec[f'update_norm/{g}'] == pytest.approx(float(change), rel=1e-4)


def test_lr_parity_controller():
  from jaxlab.peft.lr_parity import LrParity
  ctl = LrParity(peak_lrs={'lora': 5e-4, 'norm': 1e-3})
  extra = ctl.init_extra()

  def feed(extra, first, lora, norm, n=20):
    return ctl.observe(extra, first, {'grad_norm/lora': np.full(n, lora, np.float32),
                                      'grad_norm/norm': np.full(n, norm, np.float32)})

  # Inside the dead-band: nothing changes.
  extra = feed(extra, 0, 1.2, 1.0)
  assert float(extra['lr_scales']['lora']) == 1.0 == float(extra['lr_scales']['norm'])
  # LoRA's gradients 3x larger (the EMA converges to 3 within 20 steps of β 0.9 from 1.2):
  # its scale is cut by clamp(1/r, 0.5, 2) = 0.5 at step 39.
  extra = feed(extra, 20, 3.0, 1.0)
  assert float(extra['lr_scales']['lora']) == pytest.approx(0.5)
  # Two cool-off periods: no change at steps 59 and 79, then another cut at 99.
  extra = feed(extra, 40, 3.0, 1.0, n=40)
  assert float(extra['lr_scales']['lora']) == pytest.approx(0.5)
  extra = feed(extra, 80, 3.0, 1.0)
  assert float(extra['lr_scales']['lora']) == pytest.approx(0.25)
  # A third cut at 159, then the streak limit (3 in a row) stops further cuts.
  extra = feed(extra, 100, 3.0, 1.0, n=60)
  assert float(extra['lr_scales']['lora']) == pytest.approx(0.125)
  extra = feed(extra, 160, 3.0, 1.0, n=200)
  assert float(extra['lr_scales']['lora']) == pytest.approx(0.125)
  # Norm hot: the norm group is scaled, and never below 1e-6 / its peak lr.
  extra = feed(extra, 360, 1.0, 40.0, n=60)
  assert float(extra['lr_scales']['norm']) == pytest.approx(0.5)


def test_lr_parity_trains_and_scales(tmp_path, tiny_digits):
  c = tiny_config(lr_parity=True)
  task = peft.make_task(c, 10)
  # Check every 2 steps in this tiny run.
  task = dataclasses.replace(task, controller=dataclasses.replace(task.controller, every=2))
  _, state = fit(c, str(tmp_path), task, tiny_digits, mesh=make_mesh(jax.devices()[:1]))
  scales = {g: float(v) for g, v in jax.device_get(state.extra['lr_scales']).items()}
  assert int(state.extra['parity']['seen']) == 8
  assert scales != {'lora': 1.0, 'norm': 1.0}  # this tiny run's gradients are far apart


@pytest.mark.parametrize('recipe,method,expected', [
    ('reference', 'hybrid_parallel', dict(crop_padding=4, flip=True, normalization='none')),
    ('reference', 'norm', dict(crop_padding=0, flip=True, normalization='cifar100')),
    ('crop_flip', 'norm', dict(crop_padding=4, flip=True, normalization='none')),
    ('flip_cifar100', 'hybrid_parallel', dict(crop_padding=0, flip=True,
                                              normalization='cifar100')),
    ('weights', 'lora', dict(crop_padding=0, flip=True, normalization='half')),
])
def test_augmentation_recipes(recipe, method, expected):
  c = hybrid.get_config()
  c.augment.recipe = recipe
  c.peft.method = method
  peft.apply_recipe(c)
  assert {k: c.augment[k] for k in expected} == expected and c.augment.resize == 224


@pytest.mark.parametrize('old,new', [('seed', 'reference'), ('week3', 'crop_flip'),
                                     ('standard', 'flip_cifar100')])
def test_renamed_recipe_names_the_new_one(old, new):
  """An old recipe name is an error naming its new name, never a silent alias."""
  c = hybrid.get_config()
  c.augment.recipe = old
  with pytest.raises(ValueError, match=f'renamed {new!r}.*--config.augment.recipe={new}'):
    peft.apply_recipe(c)
  with pytest.raises(ValueError, match=f'renamed {new!r}'):
    experiments.validate(c)  # the family's declared range for augment.recipe


@pytest.mark.parametrize('old,new', [('week4', 'deep_lora'), ('week5', 'five_epochs')])
def test_renamed_variant_names_the_new_one(old, new):
  with pytest.raises(ValueError, match=f'renamed {new!r}.*:{new}'):
    hybrid.get_config(old)


def test_training_step_carries_no_diagnostics(tiny_digits):
  """The compiled hybrid step costs the same with diagnostics on and off: the norms and the two
  JVPs of cos/lora_norm run in their own function, outside the timed step."""
  from jaxlab.parallel.mesh import replicate, shard_leading
  from jaxlab.train.setup import build_setup
  mesh = make_mesh(jax.devices()[:1])
  data = replicate({'image': tiny_digits.train.images, 'label': tiny_digits.train.labels}, mesh)
  idx = shard_leading(np.arange(8, dtype=np.int32)[None], mesh, 1)
  flops, setups = {}, {}
  for on in (True, False):
    c = tiny_config(diagnostics=on)
    setup = build_setup(c, peft.make_task(c, 10), mesh, 8, 4)
    compiled = setup.chunk_fn(frozenset()).lower(setup.place(setup.state), data, idx).compile()
    cost = compiled.cost_analysis()
    flops[on] = (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']
    setups[on] = setup
  assert flops[True] == flops[False] > 0
  assert setups[True].diagnostics_fn is not None and setups[False].diagnostics_fn is None


def test_seeds_trained_together_equal_each_seed_alone(tmp_path, tiny_digits):
  """config.seeds: the seeds of a method train together in one program, each its own head and
  LoRA init, data order and augmentation on the same backbone; each seed's run is, bit for
  bit, the run of that seed alone (config.seeds = (s,)), through every alternation phase."""
  c = tiny_config(diagnostics=False, alt_freeze_every=2)  # the hold schedule applies per seed
  c.seeds = (3, 5)
  mesh = make_mesh(jax.devices()[:1])
  # The backbone every seed transfers from: a ViT of seed 0 (as a pretraining would give).
  pretrained = jax.device_get(peft.make_task(tiny_config(diagnostics=False), 10).params)
  task = peft.make_task(c, 10, pretrained)
  together, state = fit(c, str(tmp_path / 'both'), task, tiny_digits, mesh=mesh)
  assert together['seeds'] == [3, 5] and len(together['acc1_per_seed']) == 2
  # One copy of the frozen backbone, which every seed reads (no seed axis).
  backbone = flatten(jax.device_get(state.frozen))
  for path, value in backbone.items():
    np.testing.assert_array_equal(value, flatten(pretrained)[path], err_msg=path)
  trained, moments = flatten(jax.device_get(state.params)), jax.device_get(state.opt_state)
  for r, seed in enumerate((3, 5)):
    alone_config = tiny_config(diagnostics=False, alt_freeze_every=2)
    alone_config.seeds = (seed,)
    alone, single = fit(alone_config, str(tmp_path / f'seed{seed}'),
                        peft.make_task(alone_config, 10, pretrained), tiny_digits, mesh=mesh)
    for path, value in flatten(jax.device_get(single.params)).items():
      np.testing.assert_array_equal(trained[path][r], value[0], err_msg=path)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[r], b[0]), moments,
                 jax.device_get(single.opt_state))  # the optimizer's moments too
    for metric in ('acc1', 'nll', 'ece', 'ece_per_batch'):
      assert together[f'{metric}_per_seed'][r] == alone[f'{metric}_per_seed'][0], metric
    assert together['total_params'] == alone['total_params']
    for path, value in flatten(jax.device_get(single.frozen)).items():
      np.testing.assert_array_equal(backbone[path], value)  # the same backbone
  # Different seeds train different models.
  assert not np.allclose(trained['head/kernel'][0], trained['head/kernel'][1])


def test_seeds_that_do_not_fit_together_run_one_after_another(tmp_path, tiny_digits, monkeypatch,
                                                              capsys):
  """A device too small for the seeds' vmapped step (XLA's memory analysis of the compiled step;
  here a device of 1 byte): the method's seeds run one after another, each alone in
  WORKDIR/seed_<s>/, said on stderr and in summary.json; a rerun keeps that decision."""
  from jaxlab.train import loop
  monkeypatch.setattr(loop, 'device_memory_bytes', lambda: 1)
  c = tiny_config(diagnostics=False)
  c.seeds = (3, 5)
  summary = peft.run_seeds(c, str(tmp_path), tiny_digits, None, None)
  assert summary['seeds'] == [3, 5] and summary['seeds_run'] == 'one after another'
  assert 'the 2 seeds (3, 5) trained together need' in summary['seeds_run_why']
  assert 'note: the 2 seeds (3, 5) trained together need' in capsys.readouterr().err
  assert json.load(open(tmp_path / 'summary.json')) == json.loads(json.dumps(summary))
  for i, seed in enumerate((3, 5)):
    alone = json.load(open(tmp_path / f'seed_{seed}' / 'summary.json'))
    assert alone['seeds'] == [seed]
    for metric in ('acc1', 'nll', 'ece', 'ece_per_batch'):
      assert summary[f'{metric}_per_seed'][i] == alone[metric], metric
  assert summary['acc1'] == pytest.approx(np.mean(summary['acc1_per_seed']))
  again = peft.run_seeds(c, str(tmp_path), tiny_digits, None, None)
  out = capsys.readouterr()
  assert out.out.count('finished earlier') == 2 and 'note:' not in out.err
  assert again['acc1_per_seed'] == summary['acc1_per_seed']


def test_seeds_refuse_the_one_model_measurements():
  for field in ('diagnostics', 'lr_parity'):
    c = tiny_config(diagnostics=field == 'diagnostics', lr_parity=field == 'lr_parity')
    c.seeds = (1, 2, 3)
    with pytest.raises(checks.BadInput, match='several together') as e:
      peft.validate(c)
    assert e.value.where == f'--config.peft.{field}'
  c = tiny_config(diagnostics=False)
  c.seeds = (1, 1, 2)
  with pytest.raises(checks.BadInput, match='repeats'):
    peft.validate(c)


def test_freezing_schedules_by_name():
  """A sweep run's '@schedule' names the selective-freezing fields; one name per schedule."""
  assert methods.freezing_fields('warmup_lora200+alt25') == dict(
      freeze_lora_steps=200, freeze_norm_steps=0, alt_freeze_every=25, alt_order='lora-first')
  assert methods.freezing_fields('warmup_both100')['freeze_norm_steps'] == 100
  assert methods.freezing_fields('alt50_norm_first')['alt_order'] == 'norm-first'
  for name in hybrid.FREEZING_SCHEDULES:
    assert methods.freezing_name(**methods.freezing_fields(name)) == name
  assert methods.freezing_name() == ''
  with pytest.raises(ValueError, match="write it 'warmup_lora200\\+alt25'"):
    methods.freezing_fields('alt25+warmup_lora200')
  with pytest.raises(ValueError, match='unknown freezing schedule'):
    methods.freezing_fields('alt0')
  assert methods.split_run('hybrid_layerwise/deep_lora@alt50') == (
      'hybrid_layerwise', 'deep_lora', 'alt50')
  assert methods.split_run('norm') == ('norm', '', '')
  c = hybrid.get_config('freezing')
  peft.validate(c)
  c.sweep.runs = ('norm@alt50+warmup_lora200',)
  with pytest.raises(checks.BadInput, match="write it 'warmup_lora200\\+alt50'") as e:
    peft.validate(c)
  assert e.value.where == '--config.sweep.runs'
  c.sweep.runs = ('hybrid_layerwise/deep_lora@alt50', 'norm@warmup_lora200')
  with pytest.raises(checks.BadInput, match='would be ignored'):  # every run names its own
    peft.validate(c, overridden={'peft.alt_freeze_every'})


def test_freezing_sweep_over_seeds_tests_the_notes_freezing_claims(tmp_path):
  """hybrid.py:freezing in small: runs '<method>@<schedule>' of one sweep, each on three seeds
  trained together; each cell trains with its schedule (LoRA held for the whole run under
  warm-up LoRA 200: the last step's trainables are the head and norms alone); stats.json tests
  the freezing claims whose runs the sweep has, and only those."""
  deep = 'hybrid_layerwise/deep_lora'
  c = tiny_config(diagnostics=False, method='hybrid_layerwise', policy='deep_lora')
  c.data.classes = (0, 1)
  c.seeds = (0, 1, 2)
  c.sweep.runs = (deep, f'{deep}@warmup_lora200', f'{deep}@alt50')
  c.train.update(epochs=2, log_every_steps=36)
  summary = peft.run(c, str(tmp_path))
  rows = {r['run']: r for r in summary['runs']}
  assert set(rows) == set(c.sweep.runs)
  for row in rows.values():
    assert row['seeds'] == [0, 1, 2] and len(row['acc1_per_seed']) == 3
  recorded = json.load(open(tmp_path / 'hybrid_layerwise-deep_lora@alt50' / 'config.json'))
  assert recorded['peft']['alt_freeze_every'] == 50
  # The live trainables over the last 36 of the 72 steps (metrics.jsonl): warm-up LoRA 200 held
  # LoRA throughout (the head and block 0's norms alone); alt50 held LoRA to step 49, then Norm.
  def live(run):
    records = [json.loads(line) for line in open(tmp_path / peft.cell_name(run) / 'metrics.jsonl')]
    return [r['trainable_params'] for r in records if 'trainable_params' in r][-1]
  base, warm, alt = (live(r) for r in c.sweep.runs)
  assert base == rows[deep]['trainable_params'] and warm < base
  assert min(warm, base) < alt < max(warm, base) or alt < warm
  record = json.load(open(tmp_path / 'stats.json'))
  tested = {(x['claim_id'], x['a'], x['b'], x['metric']) for x in record['comparisons']}
  expected = {(i, a, b) for i, _, _, a, b, _ in peft_stats.FREEZING_CLAIMS
              + peft_stats.COST_CLAIMS if a in rows and b in rows}
  assert {(i, a, b) for i, a, b, _ in tested} == expected
  # peft5-1, -2, -7 (2), -8, -10, -11, -23 (2) over the seeds; the cost claims peft5-3, -4, -5,
  # -6 and -9 (alt50's step time and memory) over epochs and exactly.
  assert len(record['comparisons']) == 9 + 6
  for x in record['comparisons']:
    if x['metric'] == peft_stats.STEP:  # two epochs: one after the first each, too few
      assert x['test'] == 'welch' and x['n'] == [1, 1] and x['note'] == 'n too small'
      assert x['verdict'] is None
      continue
    assert x['verdict'] in ('supported', 'not distinguishable', 'contradicted')
    if x['metric'] == peft_stats.MEMORY:  # XLA's memory analysis: one exact figure a run
      assert x['test'] == 'exact' and x['a_values'] == [rows[x['a']]['peak_mem_bytes']]
    else:
      assert len(x['a_values']) == len(x['b_values']) == 3
  table = open(tmp_path / 'table.md').read()
  assert 'with selective freezing' in table and f'| {deep}@alt50 | 3 |' in table


# ---------------------------------------------------------------------------------------------
# model.remat: recompute each block's activations in the backward pass.


def _remat_vit(config_name, remat):
  from configs import mhc as mhc_config  # pylint: disable=g-import-not-at-top
  c = (hybrid if config_name == 'hybrid' else mhc_config).get_config('quick')
  c.model.update(variant='', image_size=32, patch=8, width=16, depth=2, heads=2, mlp_dim=32,
                 drop_path_rate=0.2, remat=remat)
  if config_name == 'mhc':
    c.model.residual = 'dynamic'
  return c, models.model_from_config(c.model, 4)


@pytest.mark.parametrize('config_name', ['hybrid', 'mhc'])
def test_remat_is_a_config_field_with_the_same_gradient(config_name):
  """--config.model.remat=true on the PEFT and residual-stream ViTs: a declared field (the
  quick configs validate with it), a model whose blocks are really rematerialised (the
  gradient's program recomputes them: JAX's `remat2` in its jaxpr), and the gradient of the
  plain model, stochastic depth's random drops included (to float32 rounding: XLA fuses the
  recomputed forward pass differently: at XLA's default compile level one of 32 elements
  differed by 3.2e-7, 2.9e-5 of its value)."""
  c, remat_model = _remat_vit(config_name, True)
  experiments.validate(c, devices=1)
  _, plain_model = _remat_vit(config_name, False)
  assert remat_model.remat and not plain_model.remat
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32, 3)), jnp.float32)
  params = jax.jit(plain_model.init)(jax.random.key(0), x)['params']
  weights = jnp.asarray(np.random.default_rng(1).standard_normal((4, 4)), jnp.float32)

  def grad_of(model):
    def loss(p):
      logits = model.apply({'params': p}, x, train=True, rngs={'dropout': jax.random.key(2)})
      return jnp.sum(logits * weights)
    return jax.grad(loss)
  g_remat, g_plain = grad_of(remat_model), grad_of(plain_model)
  assert 'remat2' in str(jax.make_jaxpr(g_remat)(params))
  assert 'remat2' not in str(jax.make_jaxpr(g_plain)(params))
  got, want = flatten(jax.jit(g_remat)(params)), flatten(jax.jit(g_plain)(params))
  assert got.keys() == want.keys()
  for path in want:
    np.testing.assert_allclose(got[path], want[path], rtol=1e-4, atol=1e-6, err_msg=path)


def test_remat_run_of_two_steps_trains_the_plain_runs_model(tmp_path, tiny_digits):
  """A 2-step PEFT run with model.remat=true: the parameters of the run without it (to float32
  rounding)."""
  runs = {}
  for remat in (False, True):
    c = tiny_config(diagnostics=False)
    c.model.remat = remat
    c.train.steps = 2
    summary, state = fit(c, str(tmp_path / f'remat_{remat}'), peft.make_task(c, 10), tiny_digits,
                         mesh=make_mesh(jax.devices()[:1]))
    assert summary['steps'] == 2 and summary['attention'] == 'xla'  # XLA's on a CPU
    runs[remat] = flatten(jax.device_get(state.params))
  for path, value in runs[False].items():
    np.testing.assert_allclose(runs[True][path], value, rtol=1e-5, atol=1e-6, err_msg=path)


def test_bf16_compute_is_an_option_beside_the_float32_recipe(tmp_path, tiny_digits):
  """--config.model.dtype=bfloat16 on a PEFT run: bfloat16 activations and matrix products,
  float32 parameters and optimizer state; 4 steps end near the float32 run's loss."""
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    c = tiny_config(diagnostics=False)
    c.model.dtype = dtype
    c.train.steps = 4
    experiments.validate(c, devices=1)
    summary, state = fit(c, str(tmp_path / dtype), peft.make_task(c, 10), tiny_digits,
                         mesh=make_mesh(jax.devices()[:1]))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype('float32')}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state) if hasattr(x, 'dtype')
            and jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype('float32')}
    losses[dtype] = summary['nll']
  assert np.isfinite(losses['bfloat16'])
  assert losses['bfloat16'] != losses['float32']  # the dtype took effect
  assert losses['bfloat16'] == pytest.approx(losses['float32'], rel=5e-2)
