"""A run is either right or stopped: divergence and resume guards, through the command line and
through sweeps; each sweep cell's own peak memory."""

import json
import os

import pytest

from configs import distributed
from jaxlab import experiments
from tests.test_launch import QUICK, launch


def test_diverged_run_exits_nonzero_naming_the_step(tmp_path):
  # The command of the issue: one arm at a learning rate that overflows at once.
  r = launch(f'--config={QUICK}', "--config.arms=('sync',)", '--config.optim.lr=1e4',
             '--config.progress=false', f'--workdir={tmp_path}')
  assert r.returncode == 3, r.stderr[-2000:]
  assert 'non-finite' in r.stderr and 'at step' in r.stderr and 'Traceback' not in r.stderr
  summary = json.load(open(tmp_path / 'sync' / 'summary.json'))
  assert summary['status'].startswith('diverged at step')
  assert 'diverged at step' in open(tmp_path / 'comparison.md').read()


def test_rerun_with_another_lr_is_refused_naming_the_field(tmp_path):
  args = [f'--config={QUICK}', "--config.arms=('sync',)", '--config.train.steps=2',
          '--config.progress=false', f'--workdir={tmp_path}']
  assert launch(*args).returncode == 0
  r = launch(*args, '--config.optim.lr=0.1')
  assert r.returncode != 0 and 'Traceback' not in r.stderr
  assert 'optim.lr 0.05 → 0.1' in r.stderr and '--workdir' in r.stderr
  # The same command again: the finished run is reported, not trained again.
  r = launch(*args)
  assert r.returncode == 0 and 'finished earlier' in r.stdout


def quick_config(**train):
  c = distributed.get_config('quick')
  c.progress = False
  c.arms = ()
  c.seeds = ()
  c.train.update(eval_batch_size=120, steps=4, **train)  # lr 1e4 overflows at step 3
  return c


def test_grid_records_diverged_cells_and_each_cells_own_memory(tmp_path, capsys):
  c = quick_config()
  c.grid = 'train.batch_size=64,16;optim.lr=0.05,10000.0'
  results = experiments.run(c, str(tmp_path))
  cells = results['cells']
  ok_big, ok_small = cells['batch_size=64_lr=0.05'], cells['batch_size=16_lr=0.05']
  for name in ('batch_size=64_lr=10000.0', 'batch_size=16_lr=10000.0'):
    assert cells[name]['status'] == f'diverged at step {cells[name]["diverged_at_step"]}'
  assert 'acc1' in ok_big and 'acc1' in ok_small
  # Each run's own peak: the batch-16 cell, run after the batch-64 one, reports less.
  assert ok_small['peak_mem_bytes'] < ok_big['peak_mem_bytes']
  table = open(tmp_path / 'grid.md').read()
  assert table.count('diverged at step') == 2 and os.path.exists(tmp_path / 'grid.png')
  assert 'the sweep goes on' in capsys.readouterr().out


def test_an_attempt_that_trained_nothing_does_not_pin_the_config(tmp_path):
  from jaxlab.train.guards import ResumeMismatchError, check_resume
  check_resume(str(tmp_path), {'optim': {'lr': 0.05}})
  check_resume(str(tmp_path), {'optim': {'lr': 0.1}})  # nothing trained yet: accepted
  os.makedirs(tmp_path / 'checkpoints' / '3')
  with pytest.raises(ResumeMismatchError, match='optim.lr 0.1 → 0.2'):
    check_resume(str(tmp_path), {'optim': {'lr': 0.2}})


def test_a_run_recorded_before_frozen_copies_resumes_as_it_was_held(tmp_path):
  """resolved.json written before it recorded frozen_copies: the frozen parameters were then
  held once per model, so a resume that would hold one shared copy (a checkpoint of another
  shape) is refused naming the value; one that holds them as before goes on."""
  from jaxlab.train import guards
  (tmp_path / 'summary.json').write_text('{}')  # a result: the record is checked
  old = {'layout': 'replicas', 'copies': 3, 'seeds': [0, 1, 2]}
  (tmp_path / guards.RESOLVED).write_text(json.dumps(old))
  with pytest.raises(guards.ResumeMismatchError, match='frozen_copies 3 → 1'):
    guards.check_resolved(str(tmp_path), {**old, 'frozen_copies': 1})
  assert guards.check_resolved(str(tmp_path), {**old, 'frozen_copies': 3})['copies'] == 3
