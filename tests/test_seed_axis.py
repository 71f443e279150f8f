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
