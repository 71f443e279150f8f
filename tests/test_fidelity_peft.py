"""The PEFT family against numpy transcriptions of its source code (Tony-lyu/CV,
src/week4/train.py, the script every 10- and 5-epoch run of the reference used; docs/references.md).

Each reference function below transcribes the lines it names; torch ops are replaced by their
numpy equivalents (float32 where the original computes in float32)."""

import numpy as np
import pytest

from jaxlab.metrics.classification import classification_metrics
from jaxlab.peft.api import fresh_head, peft_vit
from jaxlab.train.evaluate import ece_eval_batch_size


def batch_ece(logits, targets, n_bins=15):
  """src/week4/train.py lines 25-38, `expected_calibration_error` of one batch: softmax, max
  confidence, bins torch.linspace(0, 1, 16) (float32), (lo, hi], prop = in_bin.mean()."""
  z = logits - logits.max(axis=1, keepdims=True)
  probs = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)
  confs, preds = probs.max(axis=1), probs.argmax(axis=1)
  accs = (preds == targets).astype(np.float32)
  bins = np.linspace(0, 1, n_bins + 1, dtype=np.float32)
  ece = np.float32(0)
  for i in range(n_bins):
    in_bin = (confs > bins[i]) & (confs <= bins[i + 1])
    prop = in_bin.astype(np.float32).mean()
    if prop > 0:
      ece += abs(confs[in_bin].mean() - accs[in_bin].mean()) * prop
  return float(ece)


def source_evaluate_ece(logits, targets, batch_size=128):
  """src/week4/train.py lines 275-304, `evaluate`: the test loader's batches in order
  (batch_size = the training batch, 128), total_ece += ECE(batch) * b, divided by the count."""
  total, seen = 0.0, 0
  for start in range(0, len(targets), batch_size):
    lg, tg = logits[start:start + batch_size], targets[start:start + batch_size]
    total += batch_ece(lg, tg) * len(tg)
    seen += len(tg)
  return total / max(1, seen)


def _predictions(n, classes=100, seed=0):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(n, classes)) * 4).astype(np.float32)
  labels = rng.integers(0, classes, n)
  right = rng.random(n) < 0.7  # a mostly right, overconfident classifier
  labels[right] = logits[right].argmax(1)
  return logits, labels


@pytest.mark.parametrize('n', [1000, 1000 + 16])  # whole batches; a short last one (10,000 = 78·128 + 16)
def test_per_batch_ece_is_the_source_codes_aggregate(n):
  logits, labels = _predictions(n)
  ours = classification_metrics(logits, labels, ece_batch=128)
  assert ours['ece_per_batch'] == pytest.approx(source_evaluate_ece(logits, labels), abs=2e-6)
  # The two aggregates differ (per-batch bins are emptier, so gaps do not cancel): the
  # reason a reference figure must sit beside the matching one.
  assert ours['ece_per_batch'] > ours['ece'] + 0.01
  assert 'ece_per_batch' not in classification_metrics(logits, labels)


def test_per_batch_ece_through_sharded_evaluation():
  """The trainer's evaluation: 8 simulated devices, eval batch rounded to whole groups per
  device, the test set's last batch padded: the same aggregate as the source code's loop."""
  import jax
  import jax.numpy as jnp
  from jaxlab.parallel.mesh import make_mesh, replicate
  from jaxlab.train.evaluate import evaluate, make_eval_fn
  from jaxlab.train.task import Task

  n, devices = 1000 + 16, jax.device_count()
  logits, labels = _predictions(n, classes=10, seed=1)
  batch = ece_eval_batch_size(500, 16, devices)
  assert batch % (16 * devices) == 0 and batch >= 500
  task = Task(params={}, apply=lambda p, images, train, rng: images, rules=())
  mesh = make_mesh()
  data = replicate({'image': jnp.asarray(logits), 'label': jnp.asarray(labels)}, mesh)
  ours = evaluate(make_eval_fn(task, lambda x: x, mesh, ece_batch=16), {}, data, n, batch, mesh)
  assert ours['ece_per_batch'] == pytest.approx(source_evaluate_ece(logits, labels, 16), abs=2e-6)
  assert ours['ece'] == pytest.approx(classification_metrics(logits, labels)['ece'], abs=1e-6)


def test_eval_batch_rounds_up_to_whole_groups_per_device():
  assert ece_eval_batch_size(500, 0, 8) == 500  # off: untouched
  assert ece_eval_batch_size(512, 128, 1) == 512
  assert ece_eval_batch_size(500, 128, 1) == 512
  assert ece_eval_batch_size(512, 128, 8) == 1024


def test_fresh_head_is_timms_for_a_new_label_set():
  """src/week4/train.py line 392: timm.create_model(..., pretrained=True, num_classes=100).
  timm builds the model with 100 classes and runs init_weights (the head: trunc_normal_(std=
  .02), bias zeros) before loading the checkpoint, whose 1000-class head is dropped — so the
  fresh head is N(0, 0.02²) (truncated at ±2, i.e. ±100σ) with a zero bias."""
  arch = dict(image_size=16, patch=8, width=384, depth=1, heads=6, mlp_dim=32)
  _, params, _ = peft_vit(arch, 100, 'norm', seed=3)
  kernel, bias = np.asarray(params['head']['kernel']), np.asarray(params['head']['bias'])
  assert kernel.shape == (384, 100)
  assert np.std(kernel) == pytest.approx(0.02, rel=0.02)  # 38,400 draws: std within ~1%
  assert abs(np.mean(kernel)) < 5e-4
  assert np.all(bias == 0)
  # The textbook option: nn.Linear's own default, U(±1/sqrt(384)), std 1/sqrt(3·384) = 0.0295.
  _, uniform, _ = peft_vit(arch, 100, 'norm', seed=3, head_init='uniform')
  assert np.std(uniform['head']['kernel']) == pytest.approx(1 / np.sqrt(3 * 384), rel=0.02)
  assert np.abs(uniform['head']['bias']).max() <= 1 / np.sqrt(384)
  assert np.std(uniform['head']['bias']) > 0
  # Only the head is drawn again; another seed draws another head.
  _, other, _ = peft_vit(arch, 100, 'norm', seed=4)
  assert not np.array_equal(other['head']['kernel'], params['head']['kernel'])
  with pytest.raises(ValueError, match='timm, uniform'):
    fresh_head(params, 'xavier', 0)


@pytest.mark.parametrize('variant,epochs', [('deep_lora', 10), ('five_epochs', 5)])
def test_cosine_is_stepped_per_epoch(variant, epochs):
  """src/week4/train.py lines 425-426 and 443: CosineAnnealingLR(optimizer, T_max=epochs),
  `scheduler.step()` after each epoch's evaluation; PyTorch's recursive get_lr written out
  (eta_min 0), as the multiplier of every group's lr, at each of the 391 steps an epoch."""
  import jax
  import jax.numpy as jnp
  from configs import hybrid
  from jaxlab.optim.optimizers import schedule_from_optim

  c = hybrid.get_config(variant)
  assert c.train.epochs == epochs
  spe = 391  # 50,000 images in batches of 128, the last one partial
  factor, factors = 1.0, []
  for e in range(epochs):
    if e > 0:
      factor *= (1 + np.cos(np.pi * e / epochs)) / (1 + np.cos(np.pi * (e - 1) / epochs))
    factors.append(factor)
  schedule = schedule_from_optim(c.optim, epochs * spe, spe)
  ours = np.asarray(jax.vmap(schedule)(jnp.arange(epochs * spe))) / c.optim.lr
  np.testing.assert_allclose(ours, np.repeat(factors, spe), rtol=1e-5, atol=1e-9)
