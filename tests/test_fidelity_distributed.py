"""The distributed-learning family against numpy transcriptions of its original code.

The original code: lucavgn/AML_Project5 (Jupyter notebooks; cells cited by their index among
the notebook's cells, counting from 0). No torch here: each reference below is the original's
PyTorch code written out in numpy (float64 unless the original's own rounding matters).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import distributed as dist_config
from jaxlab.experiments.distributed import base_lr, scaled_lr, weight_decay_of
from jaxlab.models.lenet import LeNet5
from jaxlab.optim.optimizers import LastGrads, make_optimizer, schedule_from_optim
from jaxlab.parallel.local import (LocalSpec, WorkerIndices, last_grads, original_rounds_h,
                                   worker_steps_per_epoch)

LARGE_BATCH_NB = 'Results/LargeBatch/LARS/test_model/TestModel_Lars_8192.ipynb'
LAMB_NB = 'Results/LargeBatch/LAMB/test_model/Centr_Training_TestModel_LargeBatch_lamb_8192.ipynb'
STEPS = 5


_LENET_INIT = jax.jit(LeNet5(num_classes=100, conv_impl='xla').init)


@functools.lru_cache(maxsize=None)
def lenet_params(seed=0):
  """LeNet-5's parameters for CIFAR-100 (model.init, eval-shaped forward)."""
  return _LENET_INIT(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)))['params']


def flat(tree):
  """{'conv1/kernel': array, ...} in float64."""
  return {'/'.join(k.key for k in path): np.asarray(x, np.float64)
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat(like, arrays):
  paths = ['/'.join(k.key for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(like)[0]]
  return jax.tree.unflatten(jax.tree.structure(like),
                            [jnp.asarray(arrays[p], jnp.float32) for p in paths])


def fixed_grads(params, steps=STEPS, seed=1):
  rng = np.random.default_rng(seed)
  return [{k: 0.01 * rng.standard_normal(v.shape) for k, v in flat(params).items()}
          for _ in range(steps)]


def sqrt_lr_scheduler(base, batch, warmup_epochs, total_epochs, reference=64):
  """The lr of each epoch under the original's SqrtLRScheduler (LARGE_BATCH_NB, cell 0):
  an _LRScheduler whose constructor steps once (last_epoch 0), stepped after every epoch."""
  scaled = base * (batch / reference) ** 0.5

  def get_lr(epoch):  # SqrtLRScheduler.get_lr, last_epoch = epoch
    if epoch < warmup_epochs:
      return (epoch + 1) / warmup_epochs * scaled
    return scaled * (1 - ((epoch - warmup_epochs) / (total_epochs - warmup_epochs)))
  return [get_lr(e) for e in range(total_epochs)]


def run_ours(name, form, params, grads, lrs, wd, **hp):
  """jaxlab's optimizer over the gradients, at lr lrs[t] in step t (one step per epoch of the
  original's per-epoch schedule: warmup_linear_epoch with steps_per_epoch 1)."""
  labels = jax.tree.map(lambda _: 'base', params)
  tx = make_optimizer(labels, name, lrs['peak'], wd, lrs['schedule'], lrs['total'],
                      warmup_steps=lrs['warmup'], steps_per_epoch=1, large_batch_form=form, **hp)
  state = tx.init(params)

  @jax.jit
  def step(g, state, params, t):
    updates, state = tx.update(g, state, params, global_step=t)
    return jax.tree.map(lambda p, u: p + u, params, updates), state

  for t, g in enumerate(grads):
    params, state = step(unflat(params, g), state, params, jnp.asarray(t))
  return flat(params)


def numpy_lars_original(params, grads, lrs, wd, momentum=0.9, tc=0.001):
  """class LARS, step() (LARGE_BATCH_NB, cell 0; the same class in
  Centr_Training_TestModel_LargeBatch.ipynb, cell 1)."""
  p = {k: v.copy() for k, v in params.items()}
  state = {}
  for lr, g_all in zip(lrs, grads):
    for k in p:
      grad = g_all[k].copy()
      if k not in state:
        state[k] = grad.copy()  # state['momentum_buffer'] = torch.clone(grad).detach()
      if wd != 0:
        grad += wd * p[k]  # grad.add_(p.data, alpha=wd), on every tensor
      param_norm, grad_norm = np.linalg.norm(p[k]), np.linalg.norm(grad)
      if param_norm > 0 and grad_norm > 0:
        grad = grad * (tc * param_norm / (grad_norm + 1e-8))
      state[k] = state[k] * momentum + grad
      p[k] = p[k] - lr * state[k]
  return p


def numpy_lars_textbook(params, grads, lrs, wd, momentum=0.9, tc=0.001):
  """Textbook LARS (optax.lars): decay and trust ratio on matrices, buffer from 0, lr inside."""
  p = {k: v.copy() for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  for lr, g_all in zip(lrs, grads):
    for k in p:
      u = g_all[k].copy()
      if p[k].ndim > 1:
        u = u + wd * p[k]
        u = u * tc * np.linalg.norm(p[k]) / np.linalg.norm(u)
      m[k] = momentum * m[k] + lr * u
      p[k] = p[k] - m[k]
  return p


def numpy_lamb(params, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-8, matrices_only=False):
  """class LAMB, step() (LAMB_NB, cell 0); matrices_only: the textbook form (optax.lamb)."""
  p = {k: v.copy() for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for step, (lr, g_all) in enumerate(zip(lrs, grads), start=1):
    for k in p:
      g = g_all[k]
      m[k] = m[k] * b1 + (1 - b1) * g
      v[k] = v[k] * b2 + (1 - b2) * g * g
      update = (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + eps)
      if matrices_only and p[k].ndim <= 1:
        p[k] = p[k] - lr * update
        continue
      if wd != 0:
        update = update + wd * p[k]
      param_norm, update_norm = np.linalg.norm(p[k]), np.linalg.norm(update)
      trust_ratio = param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1.0
      p[k] = p[k] - lr * trust_ratio * update
  return p


def schedule_args(base, batch=8192, warmup=5, epochs=10):
  lrs = sqrt_lr_scheduler(base, batch, warmup, epochs)
  return dict(peak=base * (batch / 64) ** 0.5, schedule='warmup_linear_epoch', total=epochs,
              warmup=warmup), lrs[:STEPS]


def max_rel_diff(ours, want):
  return max(float(np.max(np.abs(ours[k] - want[k])) / np.max(np.abs(want[k]))) for k in want)


@pytest.mark.parametrize('form', ['original', 'textbook'])
def test_lars_matches_the_original_and_textbook_transcriptions(form):
  """5 LARS steps on LeNet-5's tensors at the B = 8192 schedule (warm-up lrs 0.57 … 2.83)."""
  params = lenet_params()
  grads = fixed_grads(params)
  sched, lrs = schedule_args(0.25)
  ours = run_ours('lars', form, params, grads, sched, 4e-4, trust_coefficient=0.001)
  reference = numpy_lars_original if form == 'original' else numpy_lars_textbook
  want = reference(flat(params), grads, lrs, 4e-4)
  other = (numpy_lars_textbook if form == 'original' else numpy_lars_original)(
      flat(params), grads, lrs, 4e-4)
  assert max_rel_diff(ours, want) < 2e-5
  assert max_rel_diff(ours, other) > 1e-2  # the two forms are told apart


@pytest.mark.parametrize('form', ['original', 'textbook'])
def test_lamb_matches_the_original_and_textbook_transcriptions(form):
  params = lenet_params()
  grads = fixed_grads(params)
  sched, lrs = schedule_args(5e-4)
  ours = run_ours('lamb', form, params, grads, sched, 0.1)
  want = numpy_lamb(flat(params), grads, lrs, 0.1, matrices_only=form == 'textbook')
  other = numpy_lamb(flat(params), grads, lrs, 0.1, matrices_only=form != 'textbook')
  assert max_rel_diff(ours, want) < 2e-5
  biases = {k: v for k, v in want.items() if k.endswith('bias')}
  assert max_rel_diff({k: ours[k] for k in biases}, {k: other[k] for k in biases}) > 1e-3


def test_large_batch_config_is_the_originals():
  """The `%run` lines and the optimizer mapping of LARGE_BATCH_NB / LAMB_NB (cells 0 and 1):
  LARS base 25e-2, wd 4e-4; LAMB base 5e-4, wd 1e-1; reference batch 64; B = 8192."""
  c = dist_config.get_config('large_batch')
  assert c.train.batch_size == 8192 and c.optim.large_batch_form == 'original'
  assert scaled_lr(c.optim, 8192) == pytest.approx(0.25 * math.sqrt(128))
  assert weight_decay_of(c.optim) == 4e-4
  c.optim.name = 'lamb'
  assert base_lr(c.optim) == 5e-4 and weight_decay_of(c.optim) == 0.1
  assert scaled_lr(c.optim, 8192) == pytest.approx(5e-4 * math.sqrt(128))


@pytest.mark.parametrize('name', ['lars', 'lamb'])
def test_large_batch_lr_at_every_step(name):
  """B = 8192 on 50,000 images: 7 steps per epoch (the last batch partial), lr constant within
  an epoch, each epoch's value the SqrtLRScheduler's (LARGE_BATCH_NB, cell 0), 150 epochs."""
  c = dist_config.get_config('large_batch')
  c.optim.name = name
  spe = math.ceil(50000 / 8192)
  assert spe == 7
  c.optim.lr = scaled_lr(c.optim, 8192)
  epochs = c.train.epochs
  schedule = schedule_from_optim(c.optim, epochs * spe, spe)
  ours = np.asarray(jax.vmap(schedule)(jnp.arange(epochs * spe)))
  base = 0.25 if name == 'lars' else 5e-4
  want = np.repeat(sqrt_lr_scheduler(base, 8192, 5, 150), spe)
  np.testing.assert_allclose(ours, want, rtol=2e-6, atol=1e-9)
  assert want[0] == pytest.approx(base * math.sqrt(128) / 5)
  assert want[5 * spe] == pytest.approx(base * math.sqrt(128))


def test_centralized_cosine_is_stepped_per_epoch():
  """CosineAnnealingLR(T_max=150) stepped after every epoch (Centr_CIFAR_100_TestModel_SGDM.ipynb,
  Distributed_LocalSGD.ipynb): PyTorch's recursive form, written out, at every step."""
  c = dist_config.get_config('centralized_sgdm')
  spe, epochs = 782, c.train.epochs
  lrs, lr = [], c.optim.lr
  for e in range(epochs):  # CosineAnnealingLR.get_lr (recursive), eta_min 0
    if e > 0:
      lr = (1 + math.cos(math.pi * e / 150)) / (1 + math.cos(math.pi * (e - 1) / 150)) * lr
    lrs.append(lr)
  schedule = schedule_from_optim(c.optim, epochs * spe, spe)
  ours = np.asarray(jax.vmap(schedule)(jnp.arange(epochs * spe)))
  np.testing.assert_allclose(ours, np.repeat(lrs, spe), rtol=1e-5, atol=1e-9)


def test_lenet5_init_is_pytorchs_default():
  """nn.Conv2d / nn.Linear defaults of the original's LeNet5 (Distributed_LocalSGD.ipynb,
  cell 0): weights kaiming_uniform_(a=√5) = U(±1/√fan_in), biases U(±1/√fan_in); std of
  U(±b) = b/√3."""
  fan_in = {'conv1': 5 * 5 * 3, 'conv2': 5 * 5 * 64, 'fc1': 1600, 'fc2': 384, 'head': 192}
  trees = [flat(lenet_params(seed)) for seed in range(3)]
  for layer, n in fan_in.items():
    bound = 1 / math.sqrt(n)
    for kind, tol in (('kernel', 0.05), ('bias', 0.12)):
      x = np.concatenate([t[f'{layer}/{kind}'].ravel() for t in trees])
      assert np.max(np.abs(x)) <= bound * (1 + 1e-6), (layer, kind)
      assert np.std(x) == pytest.approx(bound / math.sqrt(3), rel=tol), (layer, kind)
      assert np.mean(np.abs(x) > 0.9 * bound) > 0.05, (layer, kind)  # uniform, not normal


@pytest.mark.parametrize('workers', [2, 4, 8])
@pytest.mark.parametrize('sync_every', [4, 16, 64])
def test_local_sgd_steps_per_worker_per_epoch(workers, sync_every):
  """Distributed_LocalSGD.ipynb, cell 0: global_iteration_per_epoch = ceil(782/(K·J))·(K·J)
  // (K·J) rounds of J steps per worker."""
  kj = workers * sync_every
  rounds = math.ceil(782 / kj) * kj // kj
  spec = LocalSpec(workers=workers, sync_every=sync_every, worker_data='original')
  assert worker_steps_per_epoch(50000, workers, 64, False, spec) == rounds * sync_every


def original_batch_sizes(shard, batch, steps):
  """A worker's batch sizes over `steps` steps: next(shard_iterators[k]), a new
  DataLoader(shards[k], batch_size, shuffle=True) on StopIteration (Distributed_LocalSGD.ipynb,
  cell 0); the iterator lives across epochs. Each entry: (pass, size)."""
  sizes, passes, left = [], 0, shard
  for _ in range(steps):
    if left == 0:  # StopIteration: a new loader, a new pass
      passes, left = passes + 1, shard
    size = min(batch, left)
    sizes.append((passes, size))
    left -= size
  return sizes


def test_local_sgd_worker_batches_run_on_across_epochs():
  """Each worker's loader over its contiguous n//K shard, restarted (reshuffled) whenever it runs
  out, never at an epoch boundary: batch sizes and passes as the original's loop."""
  n, workers, batch, sync_every = 1000, 4, 64, 2
  spec = LocalSpec(workers=workers, sync_every=sync_every, worker_data='original')
  plan = WorkerIndices(jax.random.PRNGKey(0), n, workers, batch, spec=spec)
  rounds = math.ceil(math.ceil(n / batch) / (workers * sync_every))
  assert plan.steps_per_epoch == rounds * sync_every
  steps = 3 * plan.steps_per_epoch + 3  # several epochs, with passes out of step with them
  idx = np.concatenate([plan.chunk(s, 1) for s in range(steps)])  # [steps, K, B]
  again = plan.chunk(2, 5)  # one chunk across a pass boundary equals the steps one by one
  np.testing.assert_array_equal(again, idx[2:7])
  shard = n // workers
  for k in range(workers):
    want = original_batch_sizes(shard, batch, steps)
    sizes = [int(np.sum(idx[s, k] >= 0)) for s in range(steps)]
    assert sizes == [size for _, size in want]
    for p in range(max(q for q, _ in want)):
      rows = idx[[s for s, (q, _) in enumerate(want) if q == p], k]
      seen = np.sort(rows[rows >= 0])
      np.testing.assert_array_equal(seen, np.arange(k * shard, (k + 1) * shard))


def numpy_update_h(grads, alpha=500.0, h_min=4, h_max=64, epsilon=1e-6):
  """compute_gradient_stats and update_H (Personal_contribution/DynamicSGD_alpha_500.ipynb,
  cell 0): float32 tensors, norms squared and combined as Python floats."""
  k = len(grads)
  vectors = [np.concatenate([g.ravel() for g in worker]).astype(np.float32) for worker in grads]
  avg_gradient = np.stack(vectors).mean(axis=0, dtype=np.float32)
  squared_norms = [float(np.linalg.norm(g)) ** 2 for g in vectors]
  avg_squared_norm = float(np.linalg.norm(avg_gradient)) ** 2
  sigma_t_squared = (sum(squared_norms) / (k - 1)) - (k / (k - 1)) * avg_squared_norm
  g_t = avg_squared_norm - (1 / k) * sigma_t_squared
  h_t = min(h_max, max(h_min, alpha * g_t / (sigma_t_squared + epsilon)))
  return int(h_t), g_t, sigma_t_squared


@pytest.mark.parametrize('alpha,shift', [(500.0, 0.3), (500.0, 0.0), (40.0, 1.0), (5000.0, 1.0)])
def test_dynamic_h_on_fixed_gradients(alpha, shift):
  """H_t from the workers' last gradients: unbiased σ² summed over coordinates, G = ‖ḡ‖² − σ²/K,
  clip to [4, 64], int() truncation."""
  rng = np.random.default_rng(3)
  workers = 4
  common = [shift * rng.standard_normal(s) for s in ((5, 3), (3,))]
  grads = [[c + rng.standard_normal(c.shape) for c in common] for _ in range(workers)]
  stacked = [jnp.asarray(np.stack([w[i] for w in grads]), jnp.float32) for i in range(2)]
  h, g, sigma_sq = original_rounds_h(stacked, workers, alpha, 4, 64)
  want_h, want_g, want_sigma = numpy_update_h(grads, alpha)
  assert int(h) == want_h
  assert float(g) == pytest.approx(want_g, rel=1e-4, abs=1e-5)
  assert float(sigma_sq) == pytest.approx(want_sigma, rel=1e-5)


def test_dynamic_h_not_rounded():
  """int() truncates (α·G/σ² = 9.9 gives 9, round() 10); a negative G gives the floor 4."""
  h, g, sigma_sq = original_rounds_h([jnp.asarray([[1.0], [-1.0]])], 2, 500.0, 4, 64)
  assert (float(sigma_sq), float(g), int(h)) == (2.0, -1.0, 4)  # ḡ = 0: σ² = 2, G = −σ²/K
  h, g, sigma_sq = original_rounds_h([jnp.asarray([[3.0], [1.0]])], 2, 6.6, 4, 64)
  assert (float(sigma_sq), float(g)) == (2.0, 3.0)  # ḡ = 2: σ² = 10 − 2·4, G = 4 − 1
  assert int(h) == numpy_update_h([[np.array([3.0])], [np.array([1.0])]], 6.6)[0] == 9


def test_optimizer_records_the_last_gradients():
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones((2,))}
  labels = jax.tree.map(lambda _: 'base', params)
  tx = make_optimizer(labels, 'sgdm', 0.1, 4e-4, record_grads=True)
  state = tx.init(params)
  for g in (0.5, -2.0):
    grads = jax.tree.map(lambda x: g * x, params)
    _, state = tx.update(grads, state, params)
  recorded = last_grads(state)
  assert [np.asarray(x).tolist() for x in recorded] == [[-2.0, -2.0], [[-2.0, -2.0]] * 2]
  assert any(isinstance(x, LastGrads) for x in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, LastGrads)))


# End to end on simulated devices: 8 workers on 4 devices, a tiny ResMLP (the shape is not the
# point here), the workers' own batches.

def _workers_world(record_grads=False, workers=8, batch=4, steps=4):
  import functools
  import ml_collections
  from jaxlab.data.augment import make_train_augment
  from jaxlab.models.resmlp import ResMLP
  from jaxlab.parallel.mesh import make_mesh, replicate, shard_leading
  from jaxlab.train.state import TrainState
  from jaxlab.train.step import make_train_chunk, train_step
  from jaxlab.train.task import flax_apply

  rng = np.random.default_rng(0)
  data = {'image': rng.integers(0, 256, (256, 8, 8, 3), dtype=np.uint8),
          'label': rng.integers(0, 10, 256).astype(np.int32)}
  model = ResMLP(10, 16, 2)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))['params']
  labels = jax.tree.map(lambda _: 'base', params)
  tx = make_optimizer(labels, 'sgdm', 0.1, 1e-3, record_grads=record_grads)
  aug = make_train_augment(ml_collections.ConfigDict(
      dict(resize=0, crop_padding=0, flip=False, normalization='half')))
  step = functools.partial(train_step, task=_Task(flax_apply(model)), tx=tx, augment=aug,
                           labels=labels, axis_name=None)
  mesh = make_mesh(jax.devices()[:4])
  idx = np.stack([k * 32 + rng.integers(0, 32, (steps, batch)) for k in range(workers)],
                 axis=1).astype(np.int32)

  def start(spec):
    from jaxlab.parallel.local import worker_state
    one = TrainState.create(params, {}, tx, jax.random.PRNGKey(1), spec.init_extra(params))
    return shard_leading(worker_state(one, workers), mesh)

  chunk = make_train_chunk(step, mesh, 'workers')
  run = lambda state, s, n: chunk(state, replicate(data, mesh),
                                  shard_leading(idx[s:s + n], mesh, axis=1))[0]
  return params, mesh, start, run


class _Task:
  def __init__(self, apply):
    self.apply, self.grad_fn = apply, None

  @staticmethod
  def example_loss(logits, labels):
    import optax
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def test_dynamic_rounds_end_to_end_use_the_last_gradients():
  """After a round the next average is H steps later, H from the workers' gradients of their
  last step (summed over the devices), as update_H in DynamicSGD_alpha_500.ipynb."""
  from jaxlab.parallel.local import make_average
  _, mesh, start, run = _workers_world(record_grads=True)
  for alpha in (500.0,):
    spec = LocalSpec(workers=8, sync_every=2, dynamic_alpha=alpha)
    state = run(start(spec), 0, 2)
    grads = [np.asarray(g) for g in jax.device_get(last_grads(state.opt_state))]
    want, _, _ = numpy_update_h([[g[k] for g in grads] for k in range(8)], alpha)
    state = make_average(spec, mesh)(state)
    assert set(np.asarray(jax.device_get(state.extra['next_sync'])).tolist()) == {2 + want}


def test_slowmo_gamma_is_the_workers_current_lr():
  """Distributed_LocalSGD_SlowMo.ipynb, cell 0: lr_sched = optimizers[0].param_groups[0]['lr']
  at each round's end; u ← β·u + (x₀ − x̄)/lr_sched; x ← x₀ − α·lr_sched·u, two rounds of 2."""
  from jaxlab.parallel.local import make_average
  params, mesh, start, run = _workers_world()
  lrs = {1: 0.1, 3: 0.025}  # the lr of each round's last step (steps 1 and 3)
  spec = LocalSpec(workers=8, sync_every=2, method='slowmo', slowmo_alpha=0.75, slowmo_beta=0.2,
                   inner_schedule=lambda s: jnp.where(s < 2, 0.1, 0.025))
  average = make_average(spec, mesh)
  state = start(spec)
  x0 = flat(params)
  u = {k: np.zeros_like(v) for k, v in x0.items()}
  for r, s in enumerate((0, 2)):
    state = run(state, s, 2)
    xbar = {k: v.mean(axis=0) for k, v in flat(jax.device_get(state.params)).items()}
    lr = lrs[s + 1]
    u = {k: 0.2 * u[k] + (x0[k] - xbar[k]) / lr for k in x0}
    x0 = {k: x0[k] - 0.75 * lr * u[k] for k in x0}
    state = average(state)
    ours = {k: v[0] for k, v in flat(jax.device_get(state.params)).items()}
    for k in x0:
      np.testing.assert_allclose(ours[k], x0[k], rtol=1e-4, atol=1e-6, err_msg=f'round {r} {k}')


def test_reference_table_variants_use_the_originals_definitions():
  """Training settings of the original's notebooks: Results/SGDM/test_model/TestModel_SGDM.ipynb
  (SGD lr 1e-2, momentum 0.9, wd 4e-4, batch 64, 150 epochs, CosineAnnealingLR T_max 150),
  Results/AdamW/testmodel/Centr_CIFAR_100_TestModel_AdamW_v1.ipynb (AdamW lr 5e-4, wd 1e-1),
  Distributed_LocalSGD.ipynb (lr 1e-3·K), Results/SlowMo/SlowMo_k=4_J=16_a=0_75_b=0_2.ipynb
  (α 0.75, β 0.2), Personal_contribution/DynamicSGD_alpha_500.ipynb (K 4, first H = J = 32)."""
  sgdm = dist_config.get_config('centralized_sgdm')
  assert (sgdm.optim.name, sgdm.optim.lr, sgdm.optim.momentum, sgdm.optim.weight_decay) == (
      'sgdm', 0.01, 0.9, 4e-4)
  assert (sgdm.train.batch_size, sgdm.train.epochs) == (64, 150)
  assert sgdm.optim.schedule == 'cosine_epoch'
  assert sgdm.model.param_init == 'torch' and sgdm.train.eval_every_epochs == 1
  adamw = dist_config.get_config('centralized_adamw')
  assert (adamw.optim.name, adamw.optim.lr, adamw.optim.weight_decay) == ('adamw', 5e-4, 0.1)
  local = dist_config.get_config('local_sgd')
  assert local.optim.lr == 1e-3 * local.local.workers
  assert (local.local.worker_data, local.optim.schedule) == ('original', 'cosine_epoch')
  slowmo = dist_config.get_config('slowmo')
  assert (slowmo.local.slowmo_alpha, slowmo.local.slowmo_beta, slowmo.local.sync_every) == (
      0.75, 0.2, 16)
  assert slowmo.local.slowmo_lr == 'scheduled'
  dynamic = dist_config.get_config('dynamic')
  assert (dynamic.local.workers, dynamic.local.sync_every, dynamic.local.dynamic_alpha) == (
      4, 32, 500.0)
  assert dynamic.local.dynamic_form == 'original'
