"""benchmarks/seed_axis.py: seeds under vmap or lax.map, timed against one seed and compared bit
for bit with each seed alone."""

import json

import pytest

from benchmarks import seed_axis


def test_seeds_one_after_another_in_one_program_equal_each_seed_alone(tmp_path, capsys):
  out = tmp_path / 'axis.json'
  seed_axis.main(['--model=lenet', '--batch=8', '--seeds=2', '--repeats=2', f'--json={out}'])
  (row,) = json.loads(out.read_text())
  assert (row['model'], row['batch'], row['seeds']) == ('lenet', 8, 2)
  assert row['values_per_seed'] == 11  # the loss and LeNet-5's 10 parameter arrays
  # lax.map runs each seed's gradient as the program of one seed: every bit the same.
  assert row['differing_map'] == 0
  assert 0 <= row['differing_vmap'] <= 22
  assert row['vmap_over_one'] == pytest.approx(row['median_s']['vmap'] / row['median_s']['one seed'])
  assert 'lax.map' in capsys.readouterr().out


def test_unknown_model_names_the_choices(capsys):
  with pytest.raises(SystemExit):
    seed_axis.main(['--model=resnet'])
  assert 'lenet, vit, vit_dynamic' in capsys.readouterr().err


def test_seed_map_loops_over_the_seed_axis_and_shares_the_none_parts():
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxlab.train.step import seed_map
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((3, 16, 8)), jnp.float32)  # a seed axis of 3
  shared = {'x': jnp.asarray(rng.standard_normal((40, 16)), jnp.float32), 'scale': 2.0}
  fn = lambda w, s: (jnp.tanh(s['x'] @ w) * s['scale']).sum(0)
  mapped = jax.jit(seed_map(fn, 'map', in_axes=(0, None)))(w, shared)
  batched = jax.jit(seed_map(fn, 'vmap', in_axes=(0, None)))(w, shared)
  alone = [jax.jit(fn)(w[i], shared) for i in range(3)]
  assert mapped.shape == (3, 8)
  for i in range(3):  # the loop's body is one seed's program: its numbers, bit for bit
    np.testing.assert_array_equal(mapped[i], alone[i])
  np.testing.assert_allclose(batched, mapped, rtol=1e-5, atol=1e-4)  # sums of ~30
  with pytest.raises(ValueError, match="choose one of \\('vmap', 'map'\\)"):
    seed_map(fn, 'pmap')


@pytest.mark.parametrize('shared', [True, False])
def test_the_train_chunks_seed_loop_shares_a_frozen_part_and_equals_each_seed_alone(shared):
  """make_train_chunk's replicas layout with seed_loop='map' and a frozen part every seed reads
  (axis None, as PEFT's backbone), or one copy per seed (the default state_axes 0): each seed's
  new state and metrics are its own step's."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from jaxlab.parallel.mesh import make_mesh
  from jaxlab.train.state import TrainState
  from jaxlab.train.step import gather, make_train_chunk
  rng = np.random.default_rng(1)
  data = {'image': jnp.asarray(rng.standard_normal((32, 8)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, 4, 32), jnp.int32)}
  frozen = {'x': jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)}
  tx = optax.sgd(0.1)

  def step(state, batch):
    def loss(w):
      logits = jnp.tanh(batch['image'] @ state.frozen['x']) @ w
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(batch['label'])), batch['label']])
    value, grad = jax.value_and_grad(loss)(state.params)
    updates, opt_state = tx.update(grad, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {'loss': value}

  seeds = [jnp.asarray(rng.standard_normal((8, 4)), jnp.float32) for _ in range(3)]
  keys = [jax.random.PRNGKey(s) for s in range(3)]
  alone_states = [TrainState.create(w, frozen, tx, k) for w, k in zip(seeds, keys)]
  axes = TrainState(step=0, params=0, frozen=None if shared else 0, opt_state=0, rng=0, extra=0)
  own = jax.tree.map(jnp.copy, frozen)  # the chunk donates its state
  stacked = jax.vmap(lambda w, k: TrainState.create(w, own, tx, k), out_axes=axes)(
      jnp.stack(seeds), jnp.stack(keys))
  idx = jnp.asarray(rng.integers(0, 32, (2, 3, 8)), jnp.int32)  # 2 steps, 3 seeds, batch 8
  mesh = make_mesh(jax.devices()[:1])
  chunk = (make_train_chunk(step, mesh, 'replicas', axes, 'map') if shared
           else make_train_chunk(step, mesh, 'replicas', seed_loop='map'))
  new, metrics = chunk(stacked, data, idx)
  if shared:
    np.testing.assert_array_equal(new.frozen['x'], frozen['x'])  # still one copy, unchanged
  else:
    for s in range(3):
      np.testing.assert_array_equal(new.frozen['x'][s], frozen['x'])  # each seed's, unchanged
  for s, state in enumerate(alone_states):
    losses = []
    for t in range(2):
      state, m = jax.jit(step)(state, gather(data, idx[t, s]))
      losses.append(m['loss'])
    np.testing.assert_array_equal(new.params[s], state.params)
    np.testing.assert_array_equal(metrics['loss'][:, s], np.stack(losses))
