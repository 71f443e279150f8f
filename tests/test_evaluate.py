"""Evaluation reduced on the devices equals the metrics of the full logits fetched to the host."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.data.pipeline import PAD
from jaxlab.metrics.classification import (accuracy, classification_metrics,
                                           expected_calibration_error, nll)
from jaxlab.parallel.mesh import make_mesh, replicate, shard_leading
from jaxlab.train.evaluate import (eval_indices, evaluate, make_eval_fn, make_outputs_fn,
                                   predict)
from jaxlab.train.task import Task, flax_apply

N, BATCH, CLASSES = 75, 16, 10  # 5 batches, the last with 11 real examples and 5 padding
METRICS = ('acc1', 'nll', 'ece')


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), strides=2)(x)
    return nn.Dense(CLASSES)(nn.relu(x).reshape(x.shape[0], -1)) * 4.0  # spread confidences


def preprocess(images):
  return images.astype(jnp.float32) / 127.5 - 1.0


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(N, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, CLASSES, size=N).astype(np.int32)
  model = Tiny()
  init = lambda k: model.init(k, jnp.zeros((1, 8, 8, 3)))['params']
  params = [init(jax.random.PRNGKey(s)) for s in range(3)]
  full = jax.jit(lambda p: model.apply({'params': p}, preprocess(images)))
  logits = [np.asarray(full(p)) for p in params]
  labels[:30] = logits[0][:30].argmax(-1)  # a good share of correct predictions
  mesh = make_mesh(jax.devices()[:4])
  task = Task(params=params[0], apply=flax_apply(model), rules=(('.*', 'all'),))
  data = replicate({'image': images, 'label': labels}, mesh)
  return dict(images=images, labels=labels, params=params, logits=logits, mesh=mesh, task=task,
              data=data)


def check_close(ours, ref):
  assert set(ours) == set(ref)
  assert ours['acc1'] == ref['acc1']
  assert ours['nll'] == pytest.approx(ref['nll'], rel=1e-6)
  assert ours['ece'] == pytest.approx(ref['ece'], rel=1e-6, abs=1e-7)


def test_eval_indices_cover_every_example_once():
  batches = list(eval_indices(N, BATCH))
  assert len(batches) == 5 and all(b.shape == (BATCH,) and b.dtype == np.int32 for b in batches)
  flat = np.concatenate(batches)
  np.testing.assert_array_equal(flat[:N], np.arange(N))
  assert (flat[N:] == PAD).all()


def test_device_reduced_metrics_equal_full_logits(setup):
  s = setup
  eval_fn = make_eval_fn(s['task'], preprocess, s['mesh'])
  ours = evaluate(eval_fn, s['params'][0], s['data'], N, BATCH, s['mesh'])
  logits, labels = s['logits'][0], s['labels']
  check_close(ours, classification_metrics(logits, labels))
  # Against the independent definitions and numpy: acc1 is the exact fraction correct.
  assert ours['acc1'] == np.sum(logits.argmax(-1) == labels) / N
  assert ours['acc1'] == pytest.approx(float(accuracy(logits, labels)), rel=1e-7)
  assert 0.3 < ours['acc1'] < 1.0 and ours['ece'] > 0.01
  assert ours['nll'] == pytest.approx(float(nll(logits, labels)), rel=1e-6)
  assert ours['ece'] == pytest.approx(float(expected_calibration_error(logits, labels)),
                                      rel=1e-6)
  assert eval_fn._cache_size() == 1  # one compiled function for every batch


def test_replicas_per_seed(setup):
  s = setup
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *s['params'])
  eval_fn = make_eval_fn(s['task'], preprocess, s['mesh'], replicas=True)
  ours = evaluate(eval_fn, stacked, s['data'], N, BATCH, s['mesh'])
  assert set(ours) == {f'{m}{x}' for m in METRICS for x in ('', '_per_seed', '_std')}
  per_seed = [classification_metrics(l, s['labels']) for l in s['logits']]
  for m in METRICS:
    ref = np.array([p[m] for p in per_seed])
    assert isinstance(ours[m], float) and len(ours[f'{m}_per_seed']) == 3
    if m == 'acc1':
      assert ours['acc1_per_seed'] == ref.tolist()
    np.testing.assert_allclose(ours[f'{m}_per_seed'], ref, rtol=1e-6, atol=1e-7)
    assert ours[m] == pytest.approx(ref.mean(), rel=1e-6)
    assert ours[f'{m}_std'] == pytest.approx(ref.std(ddof=1), rel=1e-5, abs=1e-7)


def streamed_feed(setup):
  """The host gathers each batch (padding reads example 0, weight 0) and shards it."""
  images, labels, mesh = setup['images'], setup['labels'], setup['mesh']

  def feed(idx):
    safe = np.where(idx >= 0, idx, 0)
    return shard_leading({'image': images[safe], 'label': labels[safe],
                          'weight': (idx >= 0).astype(np.float32)}, mesh)
  return feed


def test_streamed_batches_equal_indices(setup):
  s = setup
  eval_fn = make_eval_fn(s['task'], preprocess, s['mesh'])
  by_index = evaluate(eval_fn, s['params'][1], s['data'], N, BATCH, s['mesh'])
  streamed = evaluate(eval_fn, s['params'][1], {}, N, BATCH, s['mesh'],
                      feed=streamed_feed(s))
  assert streamed == by_index


def test_predict_returns_rows_in_order(setup):
  s = setup
  fn = make_outputs_fn(s['task'], preprocess, s['mesh'])
  out = predict(fn, s['params'][0], s['data'], N, BATCH, s['mesh'])
  assert out.shape == (N, CLASSES)
  np.testing.assert_allclose(out, s['logits'][0], rtol=1e-5, atol=1e-5)
  streamed = predict(fn, s['params'][0], {}, N, BATCH, s['mesh'], feed=streamed_feed(s))
  np.testing.assert_array_equal(streamed, out)
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *s['params'])
  fn_r = make_outputs_fn(s['task'], preprocess, s['mesh'], replicas=True)
  out_r = predict(fn_r, stacked, s['data'], N, BATCH, s['mesh'])
  assert out_r.shape == (3, N, CLASSES)
  np.testing.assert_allclose(out_r, np.stack(s['logits']), rtol=1e-5, atol=1e-5)
