"""Local SGD and relatives on simulated CPU devices: the identities that pin them down."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.common import base_config
from jaxlab.data.augment import make_train_augment
from jaxlab.models.resmlp import ResMLP
from jaxlab.optim.optimizers import optimizer_from_config
from jaxlab.parallel.local import LocalSpec, make_average, worker_state
from jaxlab.parallel.mesh import make_mesh, replicate, shard_leading
from jaxlab.params import flatten, label_tree
from jaxlab.train.state import TrainState
from jaxlab.train.step import make_train_chunk, train_step
from jaxlab.train.task import Task, flax_apply

K, B, STEPS = 8, 4, 4


@pytest.fixture(scope='module')
def world():
  rng = np.random.default_rng(0)
  data = {'image': rng.integers(0, 256, (256, 8, 8, 3), dtype=np.uint8),
          'label': rng.integers(0, 10, 256).astype(np.int32)}
  model = ResMLP(10, 16, 2)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))['params']
  task = Task(params=params, apply=flax_apply(model), rules=[('.*', 'base')])
  # Each worker's own batches: worker k draws from its contiguous shard of 32 examples.
  idx = np.stack([k * 32 + rng.integers(0, 32, (STEPS, B)) for k in range(K)], axis=1)
  return task, data, idx.astype(np.int32)


def make_tx(task, name, lr=0.1, momentum=0.9):
  c = base_config().optim
  c.update(name=name, lr=lr, momentum=momentum, weight_decay=1e-3, schedule='constant')
  return optimizer_from_config(c, label_tree(task.params, task.rules), 100, 10)


def step_fn(task, tx, axis_name):
  aug = make_train_augment(ml_collections.ConfigDict(
      dict(resize=0, crop_padding=0, flip=False, normalization='half')))
  return functools.partial(train_step, task=task, tx=tx, augment=aug,
                           labels=label_tree(task.params, task.rules), axis_name=axis_name)


def run_sync(task, tx, data, idx, devices=4):
  """Synchronous data parallelism on the global batch = the K workers' batches together."""
  mesh = make_mesh(jax.devices()[:devices])
  state = replicate(TrainState.create(task.params, {}, tx, jax.random.PRNGKey(1)), mesh)
  chunk = make_train_chunk(step_fn(task, tx, 'data'), mesh, 'data')
  global_idx = idx.reshape(STEPS, K * B)
  state, _ = chunk(state, replicate(data, mesh), shard_leading(global_idx, mesh, axis=1))
  return jax.device_get(state.params)


def run_local(task, tx, data, idx, spec, devices=4, inspect=None):
  mesh = make_mesh(jax.devices()[:devices])
  one = TrainState.create(task.params, {}, tx, jax.random.PRNGKey(1), spec.init_extra(task.params))
  state = shard_leading(worker_state(one, spec.workers), mesh)
  chunk = make_train_chunk(step_fn(task, tx, None), mesh, 'workers')
  average = make_average(spec, mesh)
  data = replicate(data, mesh)
  for s in range(STEPS):
    state, _ = chunk(state, data, shard_leading(idx[s:s + 1], mesh, axis=1))
    if inspect:
      inspect(s + 1, 'before', jax.device_get(state.params))
    if spec.averages_after(s + 1):
      state = average(state)
      if inspect:
        inspect(s + 1, 'after', jax.device_get(state.params))
  return jax.device_get(state.params)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)  # same structure; names the leaf


def worker0(params):
  return jax.tree.map(lambda x: x[0], params)


def test_local_sgd_j1_with_momentum_is_synchronous_sgd(world):
  """Averaging after every step: x̄ = x − lr·mean_k(m_k), and mean_k m_k obeys the same linear
  recursion as the momentum of the averaged gradient, so the runs agree."""
  task, data, idx = world
  tx = make_tx(task, 'sgdm')
  sync = run_sync(task, tx, data, idx)
  local = run_local(task, tx, data, idx, LocalSpec(workers=K, sync_every=1))
  assert_trees_close(worker0(local), sync)


def test_slowmo_alpha1_beta0_is_local_sgd(world):
  """u = (x₀ − x̄)/lr and x = x₀ − lr·u = x̄: SlowMo with α = 1, β = 0 is plain averaging."""
  task, data, idx = world
  tx = make_tx(task, 'sgdm')
  plain = run_local(task, tx, data, idx, LocalSpec(workers=K, sync_every=2))
  slowmo = run_local(task, tx, data, idx, LocalSpec(
      workers=K, sync_every=2, method='slowmo', slowmo_alpha=1.0, slowmo_beta=0.0,
      inner_lr=0.1))
  assert_trees_close(slowmo, plain)


def test_diloco_one_plain_sgd_step_outer_lr1_is_synchronous_sgd(world):
  """Inner SGD for one step gives x_k = x₀ − lr·g_k; the outer SGD at lr 1 without momentum
  moves x₀ by the mean pseudo-gradient x₀ − x̄ = lr·mean_k g_k: one synchronous SGD step."""
  task, data, idx = world
  tx = make_tx(task, 'sgd')
  sync = run_sync(task, tx, data, idx)
  diloco = run_local(task, tx, data, idx, LocalSpec(
      workers=K, sync_every=1, method='diloco', outer_lr=1.0, outer_momentum=0.0))
  assert_trees_close(worker0(diloco), sync)


def test_workers_differ_between_averages_and_agree_after(world):
  task, data, idx = world
  seen = {}

  def inspect(step, when, params):
    w = flatten(params)['blocks_0/fc1/kernel']
    seen[step, when] = max(float(np.abs(w[k] - w[0]).max()) for k in range(1, K))

  run_local(task, make_tx(task, 'sgdm'), data, idx, LocalSpec(workers=K, sync_every=2),
            inspect=inspect)
  assert seen[1, 'before'] > 1e-6 and seen[3, 'before'] > 1e-6
  assert seen[2, 'after'] == 0.0 and seen[4, 'after'] == 0.0


def test_eight_workers_on_four_devices_equal_eight_devices(world):
  task, data, idx = world
  tx = make_tx(task, 'sgdm')
  spec = LocalSpec(workers=K, sync_every=2)
  assert_trees_close(run_local(task, tx, data, idx, spec, devices=4),
                     run_local(task, tx, data, idx, spec, devices=8))


# LARS and LAMB against numpy implementations of their update rules.

PARAMS = {'dense': {'kernel': np.array([[0.5, -1.0], [2.0, 0.3]], np.float32),
                    'bias': np.array([0.1, -0.2], np.float32)}}
GRADS = [{'dense': {'kernel': np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32),
                    'bias': np.array([0.05, -0.1], np.float32)}},
         {'dense': {'kernel': np.array([[-0.2, 0.1], [0.3, 0.1]], np.float32),
                    'bias': np.array([0.02, 0.1], np.float32)}}]


def run_optax(name, **over):
  c = base_config().optim
  c.update(name=name, lr=0.5, momentum=0.9, weight_decay=0.01, schedule='constant',
           trust_coefficient=0.002, **over)
  labels = jax.tree.map(lambda _: 'base', PARAMS)
  tx = optimizer_from_config(c, labels, 10, 1)
  params = jax.tree.map(jnp.asarray, PARAMS)
  state = tx.init(params)
  for step, g in enumerate(GRADS):
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params,
                               global_step=jnp.asarray(step))
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  return jax.device_get(params)


def numpy_lars(lr=0.5, momentum=0.9, wd=0.01, tc=0.002):
  w = {k: v.copy() for k, v in PARAMS['dense'].items()}
  m = {k: np.zeros_like(v) for k, v in w.items()}
  for g in GRADS:
    for k in w:
      u = g['dense'][k].astype(np.float64)
      if w[k].ndim > 1:  # decay and trust ratio on matrices only
        u = u + wd * w[k]
        u = u * tc * np.linalg.norm(w[k]) / np.linalg.norm(u)
      m[k] = momentum * m[k] + lr * u
      w[k] = w[k] - m[k]
  return w


def numpy_lamb(lr=0.5, wd=0.01, b1=0.9, b2=0.999, eps=1e-8):
  w = {k: v.astype(np.float64) for k, v in PARAMS['dense'].items()}
  m = {k: np.zeros_like(v) for k, v in w.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  for t, g in enumerate(GRADS, start=1):
    for k in w:
      gk = g['dense'][k].astype(np.float64)
      m[k] = b1 * m[k] + (1 - b1) * gk
      v[k] = b2 * v[k] + (1 - b2) * gk ** 2
      r = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
      if w[k].ndim > 1:
        r = r + wd * w[k]
        r = r * np.linalg.norm(w[k]) / np.linalg.norm(r)
      w[k] = w[k] - lr * r
  return w


@pytest.mark.parametrize('name,reference', [('lars', numpy_lars), ('lamb', numpy_lamb)])
def test_large_batch_optimizers_match_numpy(name, reference):
  ours = run_optax(name)['dense']
  want = reference()
  for k in want:
    # fp32 against a float64 reference: Adam's bias correction 1 − 0.999^t cancels
    # catastrophically in fp32 (relative error ~1e-5 at t = 2).
    np.testing.assert_allclose(ours[k], want[k], rtol=5e-5, atol=1e-7, err_msg=f'{name} {k}')
  assert not np.allclose(ours['kernel'], PARAMS['dense']['kernel'])


def test_grid_sweep_resumes_cell_by_cell(tmp_path, monkeypatch):
  from configs import distributed as dist_config
  from jaxlab.data.datasets import Dataset, load_dataset
  from jaxlab.data.pipeline import Split
  from jaxlab.experiments import distributed
  d = load_dataset(dist_config.get_config('quick').data)
  small = Dataset(name='digits', train=Split(d.train.images[:64], d.train.labels[:64]),
                  test=Split(d.test.images[:32], d.test.labels[:32]), num_classes=10,
                  eval_split='test')
  monkeypatch.setattr(distributed, 'load_dataset', lambda _: small)
  c = dist_config.get_config('quick')
  c.progress = False
  c.arms = ()
  c.seeds = ()
  c.train.update(batch_size=16, epochs=1, eval_batch_size=8)
  c.grid = 'optim.lr=0.01,0.1;optim.weight_decay=0.0,0.001'
  real_fit = distributed.fit
  calls = []

  def fit(config, workdir, *a, **kw):
    calls.append(workdir.rsplit('/', 1)[1])
    if len(calls) == 3:
      raise KeyboardInterrupt('killed')
    return real_fit(config, workdir, *a, mesh=make_mesh(jax.devices()[:1]), **kw)

  monkeypatch.setattr(distributed, 'fit', fit)
  with pytest.raises(KeyboardInterrupt):
    distributed.run(c, str(tmp_path))
  calls.clear()
  results = distributed.run(c, str(tmp_path))
  assert calls == ['lr=0.1_weight_decay=0.0', 'lr=0.1_weight_decay=0.001']
  assert len(results['cells']) == 4
  assert {r['optim.lr'] for r in results['cells'].values()} == {0.01, 0.1}
  assert (tmp_path / 'grid.md').exists() and (tmp_path / 'grid.png').exists()


def test_dynamic_local_steps_follow_the_formula(world):
  """dynamic_form='pseudo': after a round, H = clip(α·‖mean d‖²/(mean ‖d_k − mean d‖² + 1e-6),
  4, 64), d_k = x₀ − x_k (the original's form: tests/test_fidelity_distributed.py)."""
  task, data, idx = world
  tx = make_tx(task, 'sgdm')
  mesh = make_mesh(jax.devices()[:4])
  for alpha in (1.0, 1e3):
    spec = LocalSpec(workers=K, sync_every=2, dynamic_alpha=alpha, dynamic_form='pseudo')
    one = TrainState.create(task.params, {}, tx, jax.random.PRNGKey(1), spec.init_extra(task.params))
    state = shard_leading(worker_state(one, K), mesh)
    chunk = make_train_chunk(step_fn(task, tx, None), mesh, 'workers')
    state, _ = chunk(state, replicate(data, mesh), shard_leading(idx[:2], mesh, axis=1))
    xs = [np.concatenate([np.ravel(v[k]) for v in jax.tree.leaves(jax.device_get(state.params))])
          for k in range(K)]
    x0 = np.concatenate([np.ravel(v) for v in jax.tree.leaves(task.params)])
    d = np.stack([x0 - x for x in xs]).astype(np.float64)
    signal = np.sum(d.mean(0) ** 2)
    spread = np.mean(np.sum((d - d.mean(0)) ** 2, axis=1))
    want = 2 + int(np.clip(np.round(alpha * signal / (spread + 1e-6)), 4, 64))
    state = make_average(spec, mesh)(state)
    assert set(np.asarray(jax.device_get(state.extra['next_sync'])).tolist()) == {want}
