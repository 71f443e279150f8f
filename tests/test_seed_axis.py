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
