"""The one sweep runner: cells resume by their result files, sweep.only jobs share a workdir.

The cells' training is replaced by a stand-in (the trainer's own resume is tested in
test_faults.py and test_ladder.py): what is pinned here is what the runner decides.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from configs import ladder as ladder_config
from jaxlab import checks, experiments
from jaxlab.experiments import ladder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = {'acc1_per_seed': [0.5, 0.7], 'acc1': 0.6, 'acc1_std': 0.1414, 'acc1_best': 0.65,
           'best_epoch': 1, 'avg_step_time_s': 0.01}


def tiny(only=''):
  c = ladder_config.get_config('quick')
  c.progress = False
  c.model.update(width=16, depth=2)
  c.train.update(batch_size=16, epochs=1, eval_batch_size=8)
  c.seeds = (1, 2)
  c.credit.update(rules=('bp',), ks=(0, 2))
  c.sweep.only = only
  return c


def counting_fit(calls, stop_at=None):
  def fit(config, workdir, task, dataset, summary_extra):
    calls.append(os.path.basename(workdir))
    if len(calls) == stop_at:
      raise KeyboardInterrupt('stopped')
    return dict(SUMMARY), None
  return fit


def cells_of(workdir):
  return json.load(open(os.path.join(workdir, 'ladder.json')))['cells']


def test_a_stopped_sweep_rerun_does_not_rerun_its_finished_cell(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(ladder, 'fit', counting_fit(calls, stop_at=2))
  with pytest.raises(KeyboardInterrupt):
    experiments.run(tiny(), str(tmp_path))
  result = tmp_path / 'cells' / 'bp_k0' / 'cell.json'
  first = result.stat().st_mtime_ns
  assert calls == ['bp_k0', 'bp_k2'] and sorted(cells_of(tmp_path)) == ['bp_k0']
  assert not (tmp_path / 'cells' / 'bp_k2' / 'cell.json').exists()
  calls.clear()
  monkeypatch.setattr(ladder, 'fit', counting_fit(calls))
  out = experiments.run(tiny(), str(tmp_path))
  assert calls == ['bp_k2']  # the finished cell was not trained again
  assert result.stat().st_mtime_ns == first  # nor its result rewritten
  assert sorted(out['cells']) == sorted(cells_of(tmp_path)) == ['bp_k0', 'bp_k2']
  calls.clear()
  again = experiments.run(tiny(), str(tmp_path))  # all done: assembled again, the same
  assert calls == [] and again == out


HOLDER = r'''
import os, sys, time
sys.path.insert(0, {root!r})
from tests.test_sweep import tiny, SUMMARY
from jaxlab import experiments
from jaxlab.experiments import ladder
workdir, release = sys.argv[1], sys.argv[2]
def fit(config, out, task, dataset, summary_extra):
  open(os.path.join(out, 'started'), 'w').close()
  deadline = time.time() + 120
  while not os.path.exists(release) and time.time() < deadline:
    time.sleep(0.05)
  return dict(SUMMARY, acc1=0.7), None
ladder.fit = fit
experiments.run(tiny(only='bp_k0'), workdir)
'''


def test_sweep_only_jobs_on_one_workdir_each_run_their_cell(tmp_path, monkeypatch):
  workdir, release = tmp_path / 'w', tmp_path / 'release'
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  job = subprocess.Popen([sys.executable, '-c', HOLDER.format(root=ROOT), str(workdir),
                          str(release)], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  try:
    started = workdir / 'cells' / 'bp_k0' / 'started'
    deadline = time.time() + 120
    while not started.exists():  # the other job is inside its cell, holding it
      assert job.poll() is None, job.stderr.read()
      assert time.time() < deadline
      time.sleep(0.1)
    calls = []
    monkeypatch.setattr(ladder, 'fit', counting_fit(calls))
    # Another cell: runs beside it; the assembled table holds the finished cells so far.
    experiments.run(tiny(only='bp_k2'), str(workdir))
    assert calls == ['bp_k2'] and sorted(cells_of(workdir)) == ['bp_k2']
    # The same cell, or the whole sweep: refused while the other job works.
    with pytest.raises(checks.WorkdirBusy, match='another run is writing'):
      experiments.run(tiny(only='bp_k0'), str(workdir))
    with pytest.raises(checks.WorkdirBusy):
      experiments.run(tiny(), str(workdir))
    assert calls == ['bp_k2']
  finally:
    release.write_text('')
    _, err = job.communicate(timeout=120)
  assert job.returncode == 0, err[-3000:]
  cells = cells_of(workdir)  # rebuilt by the last job from every finished cell
  assert sorted(cells) == ['bp_k0', 'bp_k2']
  assert cells['bp_k0']['mean'] == 0.7 and cells['bp_k2']['mean'] == 0.6
  table = (workdir / 'ladder.md').read_text()
  assert '| 0 | 0.700' in table and '| 2 | 0.600' in table
  # The whole sweep afterwards: nothing to train, the same assembly.
  experiments.run(tiny(), str(workdir))
  assert calls == ['bp_k2'] and cells_of(workdir) == cells


def test_an_unknown_sweep_only_is_an_error_naming_the_cells(tmp_path):
  with pytest.raises(checks.BadInput, match='bp_k1') as e:
    experiments.run(tiny(only='bp_k1'), str(tmp_path / 'w'))
  assert e.value.where == '--config.sweep.only' and 'bp_k0, bp_k2' in e.value.fix
  assert not (tmp_path / 'w').exists()  # refused before anything was written
  from configs import distributed
  c = distributed.get_config('quick')
  c.arms = ()
  c.sweep.only = 'sync'
  with pytest.raises(checks.BadInput, match='not a sweep'):
    experiments.validate(c, devices=1)
