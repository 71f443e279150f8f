"""The training knobs a ViT user reaches for: label smoothing, global-norm gradient clipping,
gradient accumulation, a parameter EMA, stochastic depth and mixup / CutMix, each a validated
config field (train.label_smoothing, optim.clip_grad_norm, train.grad_accumulation,
train.ema_decay, model.drop_path_rate, augment.mixup_alpha / cutmix_alpha / mix_prob /
mix_switch_prob) checked against its PyTorch / timm definition."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ladder as ladder_config
from configs.common import base_config
from jaxlab import checks, experiments
from jaxlab.data.datasets import Dataset, load_dataset
from jaxlab.data.pipeline import Split
from jaxlab.optim.optimizers import make_optimizer
from jaxlab.parallel.mesh import make_mesh, replicate, shard_leading
from jaxlab.params import flatten
from jaxlab.train import guards
from jaxlab.train.setup import build_setup
from jaxlab.train.task import Task, with_label_smoothing


def log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_label_smoothing_is_timms_loss():
  """timm's LabelSmoothingCrossEntropy (and PyTorch's CrossEntropyLoss(label_smoothing=ε)):
  (1 − ε)·NLL of the label + ε·mean over the classes of −log p."""
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((6, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, 6)
  task = Task(params={}, apply=None, rules=())
  assert with_label_smoothing(task, 0.0) is task
  for eps in (0.1, 0.3):
    got = np.asarray(with_label_smoothing(task, eps).example_loss(jnp.asarray(logits),
                                                                  jnp.asarray(labels)))
    logp = log_softmax(logits.astype(np.float64))
    want = (1 - eps) * -logp[np.arange(6), labels] + eps * -logp.mean(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match='computes its own loss'):
    with_label_smoothing(Task(params={}, apply=None, rules=(), grad_fn=lambda *a: a), 0.1)


def test_clip_grad_norm_scales_all_groups_together_as_pytorch():
  """PyTorch's clip_grad_norm_: every gradient × min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ over
  all parameters (here two groups with their own lr); below max_norm the gradients pass."""
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(1)}
  labels = {'a': 'x', 'b': 'y'}
  grads = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([12.0])}  # ‖g‖ = 13
  tx = make_optimizer(labels, name='sgd', lr=1.0, groups={'y': {'lr': 0.5}}, clip_grad_norm=2.6)
  updates, _ = tx.update(grads, tx.init(params), params)
  scale = 2.6 / (13.0 + 1e-6)
  np.testing.assert_allclose(updates['a'], [-3 * scale, -4 * scale], rtol=1e-6)
  np.testing.assert_allclose(updates['b'], [-0.5 * 12 * scale], rtol=1e-6)
  loose = make_optimizer(labels, name='sgd', lr=1.0, clip_grad_norm=100.0)
  updates, _ = loose.update(grads, loose.init(params), params)
  np.testing.assert_array_equal(updates['a'], [-3.0, -4.0])
  # The optimizer state keeps its structure (held groups and resumes read it as before).
  plain = make_optimizer(labels, name='adamw', lr=1.0)
  clipped = make_optimizer(labels, name='adamw', lr=1.0, clip_grad_norm=1.0)
  assert (jax.tree.structure(plain.init(params)) == jax.tree.structure(clipped.init(params)))


@pytest.fixture(scope='module')
def batch_setup():
  d = load_dataset(base_config().data)
  data = Dataset(name='digits', train=Split(d.train.images[:32], d.train.labels[:32]),
                 test=Split(d.test.images[:8], d.test.labels[:8]), num_classes=10,
                 eval_split='test')

  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(0.05 * rng.standard_normal((32 * 32 * 3, 10)), jnp.float32),
            'b': jnp.zeros(10)}
  seen = []  # the batch sizes the model is traced with

  def apply(p, x, train, key):  # a linear classifier: the trainer's step is the same for any model
    seen.append(x.shape[0])
    return x.reshape(x.shape[0], -1) @ p['w'] + p['b']
  task = Task(params=params, rules=(('.*', 'all'),), apply=apply)

  def step(devices=1, pad=0, **fields):
    """(params before, params after, metrics) of one SGD step on 16 digits over `devices`,
    the last `pad` of them padding."""
    mesh = make_mesh(jax.devices()[:devices])
    placed = replicate({'image': data.train.images, 'label': data.train.labels}, mesh)
    real = np.arange(16, dtype=np.int32)
    real[16 - pad:] = -1
    idx = shard_leading(real[None], mesh, 1)
    c = base_config()
    c.experiment = 'distributed'
    c.optim.update(name='sgd', lr=0.1, weight_decay=0.0)
    c.train.update(batch_size=16)
    for key, value in fields.items():
      group, name = key.split('__')
      c[group][name] = value
    setup = build_setup(c, task, mesh, 8, 2)
    state = setup.place(setup.state)
    before = jax.device_get(flatten(state.params))
    seen.clear()
    new, metrics = setup.chunk_fn(frozenset())(state, placed, idx)
    step.seen = sorted(set(seen))
    step.extra = jax.device_get(new.extra)
    return before, jax.device_get(flatten(new.params)), jax.device_get(metrics)
  step.task, step.data = task, data
  return step


def test_the_trainer_reads_both_knobs(batch_setup):
  """train.label_smoothing reaches the step's loss (affine in ε: (1 − ε)·L₀ + ε·L₁, L₁ the
  mean −log p over the classes); optim.clip_grad_norm its update (one SGD step moves the
  parameters by lr · max_norm when the gradient is longer)."""
  before, plain, m0 = batch_setup()
  _, _, m1 = batch_setup(train__label_smoothing=1.0)  # the uniform part alone (not a valid config)
  _, smoothed, m = batch_setup(train__label_smoothing=0.1)
  l0, l1, loss = (float(np.ravel(x['loss'])[0]) for x in (m0, m1, m))
  assert abs(l1 - l0) > 1e-2
  assert loss - l0 == pytest.approx(0.1 * (l1 - l0), rel=1e-2)
  assert any(not np.allclose(smoothed[k], plain[k]) for k in plain)
  _, clipped, _ = batch_setup(optim__clip_grad_norm=1e-3)
  moved = np.sqrt(sum(np.sum((clipped[k] - before[k]) ** 2) for k in before))
  free = np.sqrt(sum(np.sum((plain[k] - before[k]) ** 2) for k in before))
  assert free > 0.1 * 1e-3 * 10 and moved == pytest.approx(0.1 * 1e-3, rel=1e-3)


def test_knobs_are_validated_and_old_records_resume():
  c = base_config()
  c.experiment = 'distributed'
  c.train.label_smoothing = 1.0
  with pytest.raises(checks.BadInput, match='label_smoothing') as e:
    experiments.validate(c, devices=1)
  assert e.value.where == '--config.train.label_smoothing'
  c.train.label_smoothing = 0.0
  c.train.ema_decay = 1.0
  with pytest.raises(checks.BadInput, match='ema_decay'):
    experiments.validate(c, devices=1)
  c.train.ema_decay = 0.0
  c.optim.clip_grad_norm = -1.0
  with pytest.raises(checks.BadInput, match='clip_grad_norm'):
    experiments.validate(c, devices=1)
  lad = ladder_config.get_config('quick')
  lad.train.label_smoothing = 0.1
  with pytest.raises(checks.BadInput, match='credit rules .* own loss'):
    experiments.validate(lad, devices=1)
  # A run recorded before the knobs existed resumes under their defaults, not under others.
  new = base_config()
  old = guards._jsonable(new.to_dict())
  del old['optim']['clip_grad_norm'], old['train']['label_smoothing']
  assert guards.config_diff(old, new.to_dict()) == []
  new.train.label_smoothing = 0.1
  assert guards.config_diff(old, new.to_dict()) == [('train.label_smoothing', 0.0, 0.1)]


@pytest.mark.parametrize('devices', [1, 2])
def test_gradient_accumulation_equals_the_whole_batch(batch_setup, devices):
  """train.grad_accumulation=4: the batch of 16 (per device 16/devices, padded with weight-0
  examples where the split runs out) in 4 micro-batches gives the step of the whole batch, up to
  float rounding: the parameters, the loss and the accuracy."""
  _, whole, m1 = batch_setup(devices=devices, pad=3)
  _, accumulated, m4 = batch_setup(devices=devices, pad=3, train__grad_accumulation=4)
  assert batch_setup.seen == [16 // devices // 4]  # the model saw micro-batches only
  for k in whole:
    np.testing.assert_allclose(accumulated[k], whole[k], rtol=1e-5, atol=1e-7, err_msg=k)
  for key in ('loss', 'acc'):
    np.testing.assert_allclose(m4[key], m1[key], rtol=1e-5)


def test_gradient_accumulation_must_divide_the_batch():
  c = base_config()
  c.experiment = 'distributed'
  c.train.update(batch_size=64, grad_accumulation=3)
  with pytest.raises(checks.BadInput, match='not divisible by the 3 micro-batches') as e:
    experiments.validate(c, devices=1)
  assert e.value.where == '--config.train.batch_size'
  c.train.grad_accumulation = 0
  with pytest.raises(checks.BadInput, match='grad_accumulation'):
    experiments.validate(c, devices=1)


def test_parameter_ema_follows_each_step_and_is_evaluated_beside(batch_setup, tmp_path):
  """train.ema_decay=d: after a step the EMA is d·(initial params) + (1 − d)·(new params)
  (timm's ModelEmaV2, starting at the initial parameters); a run reports the EMA's evaluation
  beside the final parameters' in summary.json."""
  before, after, _ = batch_setup(train__ema_decay=0.9)
  ema = flatten(batch_setup.extra['ema'])
  for k in before:
    np.testing.assert_allclose(ema[k], 0.9 * before[k] + 0.1 * after[k], rtol=1e-6, atol=1e-8)
  from jaxlab.train.loop import fit
  c = base_config()
  c.experiment = 'distributed'
  c.progress = False
  c.optim.update(name='sgd', lr=0.1, weight_decay=0.0, schedule='constant')
  c.train.update(batch_size=16, epochs=1, steps=3, eval_batch_size=8, ema_decay=0.5,
                 log_every_steps=3)
  summary, state = fit(c, str(tmp_path), batch_setup.task, batch_setup.data,
                       mesh=make_mesh(jax.devices()[:1]))
  assert summary['ema']['decay'] == 0.5 and 0 <= summary['ema']['acc1'] <= 1
  assert summary['ema']['nll'] != summary['nll']  # the EMA is another model than the final one


def test_stochastic_depth_is_timms_drop_path():
  """model.drop_path_rate: block i drops each example's attention and MLP branches with timm's
  linspace(0, rate, depth)[i], in training only. With the last block at 0.999 nearly every
  example skips it: its logits are those of the ViT without that block."""
  from jaxlab.models.vit import ViT
  kw = dict(num_classes=4, image_size=16, patch=8, width=16, heads=2, mlp_dim=32)
  assert [ViT(depth=4, drop_path_rate=0.3, **kw).block_drop_path(i) for i in range(4)] == \
      pytest.approx([0.0, 0.1, 0.2, 0.3])
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 16, 16, 3)), jnp.float32)
  deep = ViT(depth=2, drop_path_rate=0.999, **kw)
  params = jax.jit(deep.init)(jax.random.key(0), x)['params']
  run = lambda model, p, train: jax.jit(functools.partial(model.apply, train=train))(
      {'params': p}, x, rngs={'dropout': jax.random.key(1)})
  plain = run(ViT(depth=2, **kw), params, True)
  assert np.array_equal(run(deep, params, False), run(ViT(depth=2, **kw), params, False))
  dropped = run(deep, params, True)
  shallow = run(ViT(depth=1, **kw), {k: v for k, v in params.items() if k != 'blocks_1'}, True)
  skipped = [np.allclose(dropped[b], shallow[b], atol=1e-6) for b in range(8)]
  assert sum(skipped) >= 6 and not np.allclose(plain, shallow, atol=1e-3)


def timm_mix_batch(x, lam, use_cutmix, cy, cx):
  """timm.data.mixup.Mixup._mix_batch (mode 'batch', correct_lam) with rand_bbox's draws given,
  transcribed in numpy on NHWC images (timm 1.0's box: cy − cut_h // 2 to cy + (cut_h + 1) // 2)."""
  x = np.array(x)
  if use_cutmix:
    h, w = x.shape[1:3]
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    yl, yh = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + (cut_h + 1) // 2, 0, h)
    xl, xh = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + (cut_w + 1) // 2, 0, w)
    x[:, yl:yh, xl:xh] = x[::-1][:, yl:yh, xl:xh].copy()
    return x, 1.0 - (yh - yl) * (xh - xl) / float(h * w)
  return x * lam + x[::-1] * (1.0 - lam), lam


def test_mixup_and_cutmix_are_timms():
  """augment.mix_images equals timm's _mix_batch on the same draws (boxes clipped at the edges
  included), and mix_params draws timm's choices (mix_prob 0: untouched, lam 1)."""
  from jaxlab.data.augment import mix_images, mix_params
  x = np.random.default_rng(0).standard_normal((6, 10, 12, 3)).astype(np.float32)
  mix = jax.jit(mix_images)
  for lam, cutmix, cy, cx in ((0.7, False, 0, 0), (0.7, True, 5, 6), (0.3, True, 0, 11),
                              (0.55, True, 9, 1)):
    params = {'apply': jnp.asarray(True), 'cutmix': jnp.asarray(cutmix),
              'lam': jnp.float32(lam), 'cy': jnp.int32(cy), 'cx': jnp.int32(cx)}
    got, got_lam = mix(jnp.asarray(x), params)
    want, want_lam = timm_mix_batch(x, lam, cutmix, cy, cx)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    assert float(got_lam) == pytest.approx(want_lam, rel=1e-6)
  off = mix_params(jax.random.key(0), x.shape, mixup_alpha=1.0, prob=0.0)
  out, lam = mix_images(jnp.asarray(x), off)
  assert float(lam) == 1.0 and np.array_equal(np.asarray(out), x)
  draws = jax.jit(jax.vmap(lambda k: mix_params(k, x.shape, 0.8, 1.0, 1.0, 0.5)))(
      jax.random.split(jax.random.key(0), 400))
  cuts, lams = np.asarray(draws['cutmix']), np.asarray(draws['lam'])
  assert 0.4 < cuts.mean() < 0.6 and 0.45 < lams.mean() < 0.55  # Beta(α, α) has mean 1/2


def test_cutmix_box_against_timm_itself():
  """timm's own cutmix_bbox_and_lam (numpy's global generator) and our box from the same draws."""
  pytest.importorskip('torch')
  mixup = pytest.importorskip('timm.data.mixup')
  from jaxlab.data.augment import mix_images
  x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype(np.float32)
  for seed, lam in ((0, 0.4), (1, 0.8), (2, 0.1)):
    np.random.seed(seed)
    (yl, yh, xl, xh), want_lam = mixup.cutmix_bbox_and_lam((4, 3, 16, 16), lam)
    np.random.seed(seed)
    cy, cx = np.random.randint(0, 16), np.random.randint(0, 16)  # rand_bbox's two draws
    params = {'apply': jnp.asarray(True), 'cutmix': jnp.asarray(True), 'lam': jnp.float32(lam),
              'cy': jnp.int32(cy), 'cx': jnp.int32(cx)}
    got, got_lam = mix_images(jnp.asarray(x), params)
    want = x.copy()
    want[:, yl:yh, xl:xh] = x[::-1][:, yl:yh, xl:xh]
    np.testing.assert_array_equal(np.asarray(got), want)
    assert float(got_lam) == pytest.approx(want_lam, rel=1e-6)


def test_the_step_mixes_the_loss_of_both_labels(batch_setup):
  """With mixup on, the step trains on mixed images and the loss lam·L(y) + (1 − lam)·L(y'):
  another loss than the plain step's; the ladder, whose credit rules take one label, refuses."""
  _, plain, m0 = batch_setup()
  _, mixed, m = batch_setup(augment__mixup_alpha=0.4, augment__cutmix_alpha=1.0)
  assert float(np.ravel(m['loss'])[0]) != pytest.approx(float(np.ravel(m0['loss'])[0]), rel=1e-3)
  assert any(not np.allclose(mixed[k], plain[k]) for k in plain)
  lad = ladder_config.get_config('quick')
  lad.augment.mixup_alpha = 0.2
  with pytest.raises(checks.BadInput, match='mixup / CutMix mix two') as e:
    experiments.validate(lad, devices=1)
  assert e.value.where == '--config.augment.mixup_alpha'
