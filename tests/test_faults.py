"""Faults a user meets, each with the behaviour they are owed: a run is either right or stopped.

One test per row of the fault table in docs/runs.md: a smoke run extended to the full run
(sweeps and single runs, every layout) ends where an uninterrupted run ends; one writer per
workdir; no resume without the config record; Ctrl-C saves like SIGTERM; a resume on another
device count keeps the experiment and says what changes; environment failures (full disk,
unavailable platform, a path too long, damaged JSON or checkpoints) are one line with their
own exit code; and a run killed (SIGKILL) at random moments, rerun each time, ends as the
uninterrupted one (JAXLAB_FAULT_KILLS sets how many kills; 3 by default).
"""

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import ladder as ladder_configs
from configs.common import base_config
from jaxlab import checks, experiments, launch
from jaxlab.data.datasets import Dataset, load_dataset
from jaxlab.data.pipeline import Split
from jaxlab.io import lock
from jaxlab.models.resmlp import ResMLP
from jaxlab.parallel.local import LocalSpec
from jaxlab.parallel.mesh import make_mesh
from jaxlab.params import flatten
from jaxlab.train import guards, preemption
from jaxlab.train.loop import fit
from jaxlab.train.task import Task, flax_apply
from tests.test_bad_input import run_console
import xla_flags  # tests/xla_flags.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A one-cell ladder on digits: 2 seeds vmapped, 2 epochs of 12 steps, a few seconds a run.
LADDER = ('--config=configs/ladder.py:quick', "--config.credit.rules=('bp',)",
          '--config.credit.ks=(1,)', '--config.seeds=(42,123)', '--config.train.epochs=2',
          '--config.train.steps_per_dispatch=4', '--config.checkpoint.every_steps=4',
          '--config.progress=false')
CELL = 'cells/bp_k1'


def ladder_config(**train):
  c = ladder_configs.get_config('quick')
  c.progress = False
  c.credit.update(rules=('bp',), ks=(1,))
  c.seeds = (42, 123)
  c.train.update(epochs=2, steps_per_dispatch=4, **train)
  c.checkpoint.every_steps = 4
  return c


def _env(**extra):
  return {**os.environ, 'XLA_FLAGS': xla_flags.for_command(), 'PYTHONPATH': ROOT,
          'JAX_PLATFORMS': 'cpu', **extra}


def start(*args, env=None, prefix=()):
  return subprocess.Popen([*prefix, sys.executable, 'launch.py', *args], cwd=ROOT,
                          env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def launch_process(*args, env=None, prefix=(), timeout=300):
  proc = start(*args, env=env, prefix=prefix)
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def wait_for(path, proc=None, timeout=240, holding=None):
  """Wait until `path` exists (and, given `holding`, a line of it contains that text)."""
  t0 = time.time()
  while not (os.path.exists(path) and (holding is None or holding in open(path).read())):
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f'the run ended before {path} appeared: {proc.stderr.read()[-3000:]}')
    if time.time() - t0 > timeout:
      raise TimeoutError(path)
    time.sleep(0.05)


def one_error_line(err):
  lines = err.strip().splitlines()
  assert len(lines) == 1, f'{len(lines)} lines on stderr:\n{err[-3000:]}'
  return lines[0]


def cell_summary(workdir):
  return json.load(open(os.path.join(workdir, CELL, 'summary.json')))


# ---------------------------------------------------------------------------------------------
# A run's identity includes its length.


def test_smoke_run_then_the_full_run_in_the_same_workdir_equals_a_fresh_full_run(tmp_path):
  fresh = experiments.run(ladder_config(), str(tmp_path / 'fresh'))
  smoke = experiments.run(ladder_config(steps=5), str(tmp_path / 'w'))
  assert smoke['cells']['bp_k1']['length'] == {'train.epochs': 2, 'train.steps': 5}
  full = experiments.run(ladder_config(), str(tmp_path / 'w'))  # the full run after the smoke run (docs/runs.md)
  a, b = fresh['cells']['bp_k1'], full['cells']['bp_k1']
  assert a['acc'] == b['acc'] and a['mean'] == b['mean'] and a['std'] == b['std']
  s = cell_summary(tmp_path / 'w')
  assert s['resumed_from_step'] == 5 and s['steps'] == 24 and s['timed_steps'] == 24
  assert s['nll'] == cell_summary(tmp_path / 'fresh')['nll']
  assert 'ladder.md' in os.listdir(tmp_path / 'w')
  assert '±' in open(tmp_path / 'w' / 'ladder.md').read()
  # Asked for fewer steps than the workdir holds: said, nothing run or written.
  before = open(tmp_path / 'w' / 'ladder.json').read()
  with pytest.raises(checks.BadInput, match='past the 5 steps asked for') as e:
    experiments.run(ladder_config(steps=5), str(tmp_path / 'w'))
  assert e.value.where == '--config.train.steps'
  assert open(tmp_path / 'w' / 'ladder.json').read() == before


def peft_config(**train):
  """hybrid:quick at toy size: a ViT pretrained from scratch on digits 0-4 for an epoch, then
  Norm tuning on 5-9 on its frozen backbone."""
  from configs import hybrid  # pylint: disable=g-import-not-at-top
  c = hybrid.get_config('quick')
  c.progress = False
  c.sweep.update(runs=('norm',), pretrain_epochs=1)
  c.seeds = ()  # one model
  c.model.update(width=32, depth=2, heads=2, mlp_dim=64)
  c.train.update(batch_size=64, epochs=1, steps_per_dispatch=4, log_every_steps=4, **train)
  return c


def test_a_smoke_run_of_a_transfer_sweep_then_the_full_run_equals_a_fresh_one(tmp_path, capsys):
  # The smoke run also stops the pretraining at step 5: the full run continues it, so the
  # transfer run trained on the 5-step backbone no longer belongs and starts again.
  fresh = experiments.run(peft_config(), str(tmp_path / 'fresh'))['runs'][0]
  experiments.run(peft_config(steps=5), str(tmp_path / 'w'))
  capsys.readouterr()
  full = experiments.run(peft_config(), str(tmp_path / 'w'))['runs'][0]
  assert 'trained on an earlier state of the pretraining' in capsys.readouterr().err
  for key in ('acc1', 'nll', 'ece', 'steps'):
    assert full[key] == fresh[key], key
  assert full['resumed_from_step'] is None
  pre = json.load(open(tmp_path / 'w' / 'pretrain' / 'summary.json'))
  assert pre['resumed_from_step'] == 5


def small_digits():
  d = load_dataset(base_config().data)
  return Dataset(name='digits', train=Split(d.train.images[:96], d.train.labels[:96]),
                 test=Split(d.test.images[:40], d.test.labels[:40]), num_classes=10,
                 eval_split='test')


def resmlp_config(layout='data', **train):
  """96 examples: 6 steps of 16 per epoch, or 4 workers × 6 steps of 4."""
  c = base_config()
  c.experiment = 'distributed'
  c.progress = False
  c.optim.update(name='sgdm', lr=0.05 if layout == 'data' else 0.01, momentum=0.9,
                 weight_decay=1e-4, schedule='cosine')
  c.train.update(batch_size=16 if layout == 'data' else 4, epochs=2, eval_batch_size=8,
                 log_every_steps=2, **train)
  c.checkpoint.update(every_steps=4, keep=2)
  return c


def resmlp_task(config, layout, spe=6):
  model = ResMLP(10, 16, 2)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))['params']
  workers = None
  if layout == 'workers':  # SlowMo: its final average is not the workers' plain mean
    workers = LocalSpec(workers=4, sync_every=5, method='slowmo', slowmo_alpha=0.75,
                        slowmo_beta=0.2, inner_lr=config.optim.lr)
  return Task(params=params, apply=flax_apply(model), rules=[('.*', 'base')], workers=workers)


def params_of(state):
  return {k: np.asarray(v) for k, v in flatten(jax.device_get(state.params)).items()}


@pytest.mark.parametrize('layout', ['data', 'workers'])
def test_a_run_extended_after_it_finished_equals_an_uninterrupted_run(tmp_path, layout):
  data = small_digits()
  mesh = make_mesh(jax.devices()[:4])

  def run(workdir, **train):
    c = resmlp_config(layout, **train)
    return fit(c, str(workdir), resmlp_task(c, layout), data, mesh=mesh)

  full, full_state = run(tmp_path / 'full')
  short, _ = run(tmp_path / 'ext', steps=3)  # stops off every sync and checkpoint step
  assert short['steps'] == 3
  ext, ext_state = run(tmp_path / 'ext')
  assert ext['resumed_from_step'] == 3 and ext['steps'] == full['steps']
  a, b = params_of(full_state), params_of(ext_state)
  for k in a:
    np.testing.assert_array_equal(b[k], a[k], err_msg=k)
  assert np.isfinite(full['nll'])
  for key in ('acc1', 'nll', 'ece', 'timed_steps'):
    assert ext[key] == full[key], key
  if layout == 'workers':  # averages at steps 5 and 10 and the run's last one at 12
    assert ext['comm_rounds'] == full['comm_rounds'] == 3
    assert ext['workers'] == 4


# ---------------------------------------------------------------------------------------------
# One writer per workdir.

HOLD = '''
import sys, time
from jaxlab.io import lock
with lock.hold(sys.argv[1]):
  print('held', flush=True)
  time.sleep(120)
'''


def test_a_second_launch_on_a_busy_workdir_is_refused_naming_the_holder(tmp_path, capsys):
  holder = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    rc, _, err = launch_process(*LADDER, f'--workdir={tmp_path}')
    line = one_error_line(err)
    assert rc == launch.BUSY == 5, err
    assert f'pid {holder.pid}' in line and 'started' in line and 'another run' in line
    assert sorted(os.listdir(tmp_path)) == [lock.LOCK_FILE]  # nothing else written
  finally:
    holder.kill()
    holder.wait()
  # The holder died without a word: its lock is taken over, saying whose it was.
  code, err = run_console([*LADDER[:1], f'--workdir={tmp_path}', *LADDER[1:],
                           '--config.train.steps=1'], capsys)
  assert code == 0, err
  assert 'took over the lock of a run that is no longer running (host ' in err
  assert f'pid {holder.pid}' in err
  assert open(tmp_path / lock.LOCK_FILE).read() == ''  # released at the end


def test_the_lock_nests_within_a_process_and_refuses_another_holder(tmp_path):
  with lock.hold(str(tmp_path)):
    with lock.hold(str(tmp_path)):  # a sweep's own fit: the same process
      pass
    rc = subprocess.run([sys.executable, '-c', HOLD, str(tmp_path)], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=60)
    assert rc.returncode == 1 and 'WorkdirBusy' in rc.stderr and f'pid {os.getpid()}' in rc.stderr
  assert open(tmp_path / lock.LOCK_FILE).read() == ''


# ---------------------------------------------------------------------------------------------
# No resume without its record.


def test_checkpoints_without_a_readable_config_record_are_refused(tmp_path):
  experiments.run(ladder_config(steps=4), str(tmp_path))
  again = ladder_config(steps=8)
  again.optim.lr = 0.1
  os.remove(tmp_path / 'launch_config.json')
  with pytest.raises(checks.Damaged) as e:
    experiments.run(again, str(tmp_path))
  assert e.value.where == str(tmp_path / 'launch_config.json')
  assert 'cells/bp_k1/checkpoints/' in e.value.what and 'another --workdir' in e.value.fix
  (tmp_path / 'launch_config.json').write_text('{"optim": {"lr": 0.0')  # cut short
  with pytest.raises(checks.Damaged, match='launch_config.json is damaged: not JSON'):
    experiments.run(again, str(tmp_path))
  # The launch's record back, the cell's own gone: the cell refuses.
  os.remove(tmp_path / CELL / 'config.json')
  experiments_config = ladder_config(steps=8)
  (tmp_path / 'launch_config.json').write_text(json.dumps(experiments_config.to_dict()))
  with pytest.raises(checks.Damaged) as e:
    experiments.run(experiments_config, str(tmp_path))
  assert e.value.where == str(tmp_path / CELL / 'config.json')
  assert not os.path.exists(tmp_path / CELL / 'config.json')  # nothing decided for it


# ---------------------------------------------------------------------------------------------
# Ctrl-C behaves like SIGTERM.


def test_ctrl_c_saves_the_step_reached_and_exits_130(tmp_path):
  args = [*LADDER, '--config.train.epochs=15', '--config.checkpoint.every_steps=1000',
          f'--workdir={tmp_path}']
  proc = start(*args)
  wait_for(tmp_path / CELL / 'metrics.jsonl', proc, holding='"split": "train"')  # it trains
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  line = one_error_line(err)
  assert proc.returncode == 130, err
  assert line.startswith('interrupted (Ctrl-C):') and 'rerun the same command' in line
  saved = int(line.split('checkpoint at step ')[1].split()[0])
  assert os.path.isdir(tmp_path / CELL / 'checkpoints' / str(saved))
  rc, out, err = launch_process(*args)
  assert rc == 0, err[-3000:]
  assert cell_summary(tmp_path)['resumed_from_step'] == saved


def catches_sigterm(pid):
  """Whether process `pid` has a handler for SIGTERM (Linux: /proc/PID/status)."""
  with open(f'/proc/{pid}/status') as f:
    caught = next(int(l.split()[1], 16) for l in f if l.startswith('SigCgt:'))
  return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads /proc')
def test_ctrl_c_before_training_still_prints_its_line(tmp_path):
  proc = start(*LADDER, f'--workdir={tmp_path}')
  t0 = time.time()
  while not catches_sigterm(proc.pid):  # the command's handlers are in: it is starting up
    assert proc.poll() is None and time.time() - t0 < 60
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-3000:]
  assert one_error_line(err).startswith('interrupted (Ctrl-C): stopped before training')


def test_a_second_signal_kills_at_once():
  before = signal.getsignal(signal.SIGINT)
  with preemption.watching(), preemption.training():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    assert preemption.requested() and preemption.signal_received() == signal.SIGINT
    # The first only asked the loop to stop; the next one gets the system's default.
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    preemption.clear()
  assert signal.getsignal(signal.SIGINT) is before  # the handler before, restored


def test_a_signal_during_the_imports_waits_for_them_to_finish():
  # Raising inside a C++ extension's initialisation (jaxlib's, on Ctrl-C at startup) aborted
  # the interpreter or became an ImportError: the launcher imports under deferred().
  reached_the_end = False
  with preemption.watching():
    with pytest.raises(preemption.Preempted) as e:
      with preemption.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler has run: the flag is up, nothing raised here
        reached_the_end = preemption.requested()
    preemption.clear()
  assert reached_the_end and e.value.signum == signal.SIGINT and e.value.step is None


# ---------------------------------------------------------------------------------------------
# A run resumed on another device count.


def test_a_resume_on_fewer_devices_keeps_the_run_and_says_it_is_not_bit_identical(
    tmp_path, capsys):
  data = small_digits()
  for layout in ('data', 'workers'):
    c = resmlp_config(layout)
    task = resmlp_task(c, layout)
    ref, ref_state = fit(c, str(tmp_path / f'{layout}4'), task, data,
                         mesh=make_mesh(jax.devices()[:4]))
    fit(resmlp_config(layout, steps=3), str(tmp_path / layout), task, data,
        mesh=make_mesh(jax.devices()[:4]))
    capsys.readouterr()
    moved, state = fit(c, str(tmp_path / layout), task, data, mesh=make_mesh(jax.devices()[:2]))
    err = capsys.readouterr().err
    assert 'note: resumed with num_devices 2 (started with 4)' in err
    assert 'not be bit for bit' in err
    assert moved['num_devices'] == 2 and moved['resumed_from_step'] == 3
    if layout == 'workers':
      assert moved['workers'] == ref['workers'] == 4  # the experiment's workers, on 2 devices
    a, b = params_of(ref_state), params_of(state)
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
  # What would make it another experiment (here: other data) is refused.
  c = resmlp_config()
  fewer = Dataset(name='digits', train=Split(data.train.images[:80], data.train.labels[:80]),
                  test=data.test, num_classes=10, eval_split='test')
  fit(resmlp_config(steps=2), str(tmp_path / 'other'), resmlp_task(c, 'data'), data,
      mesh=make_mesh(jax.devices()[:2]))
  with pytest.raises(guards.ResumeMismatchError, match='train_examples 96 → 80'):
    fit(c, str(tmp_path / 'other'), resmlp_task(c, 'data'), fewer,
        mesh=make_mesh(jax.devices()[:2]))


# ---------------------------------------------------------------------------------------------
# Environment failures: one line, exit code 4, nothing written before the checks pass.


def test_an_unavailable_platform_is_one_line(tmp_path):
  rc, _, err = launch_process(*LADDER, f'--workdir={tmp_path / "w"}',
                              env=_env(JAX_PLATFORMS='cuda'))
  line = one_error_line(err)
  assert rc == launch.ENVIRONMENT == 4, err
  assert '(JAX_PLATFORMS=cuda)' in line and 'unset JAX_PLATFORMS' in line
  assert not os.path.exists(tmp_path / 'w')


def test_a_path_too_long_for_the_file_system_is_refused_before_training(tmp_path, capsys):
  workdir = str(tmp_path) + '/' + '/'.join(['d' * 200] * 20)
  workdir = workdir[:4096 - 100]
  code, err = run_console([*LADDER[:1], f'--workdir={workdir}', *LADDER[1:]], capsys)
  assert code == 4 and 'passes this file system\'s limit' in one_error_line(err)
  assert os.listdir(tmp_path) == []
  name = str(tmp_path / ('n' * 300))
  code, err = run_console([*LADDER[:1], f'--workdir={name}', *LADDER[1:]], capsys)
  assert code == 4 and 'folder name of the workdir is 300 bytes' in one_error_line(err)


def test_bad_input_found_late_leaves_no_trace_in_the_workdir(tmp_path, capsys):
  # A batch larger than the data with drop_last: found when the data is loaded.
  workdir = tmp_path / 'w'
  code, err = run_console([*LADDER[:1], f'--workdir={workdir}', *LADDER[1:],
                           '--config.train.batch_size=4000', '--config.train.drop_last=true'],
                          capsys)
  assert code == 2 and 'larger than the 1437 training examples' in one_error_line(err)
  assert not os.path.exists(workdir)
  os.makedirs(workdir)
  (workdir / 'notes.txt').write_text('mine')
  code, _ = run_console([*LADDER[:1], f'--workdir={workdir}', *LADDER[1:],
                         '--config.train.batch_size=4000', '--config.train.drop_last=true'],
                        capsys)
  assert code == 2 and os.listdir(workdir) == ['notes.txt']


@pytest.mark.parametrize('damaged', ['summary.json', 'metrics.jsonl', 'cell.json'])
def test_a_truncated_json_file_is_named(tmp_path, capsys, damaged):
  code, err = run_console([*LADDER[:1], f'--workdir={tmp_path}', *LADDER[1:],
                           '--config.train.steps=8'], capsys)
  assert code == 0, err
  path = tmp_path / CELL / damaged  # cell.json: the cell's result (ladder.json is assembled)
  path.write_text(path.read_text()[:-5])  # cut inside the last line
  # Each is read by the run that continues the cell to more steps.
  code, err = run_console([*LADDER[:1], f'--workdir={tmp_path}', *LADDER[1:],
                           '--config.train.steps=12'], capsys)
  line = one_error_line(err)
  assert code == 4, err
  assert f'{damaged} is damaged' in line and f'({path})' in line and 'delete' in line


def test_a_damaged_checkpoint_is_one_line_without_asyncio_noise(tmp_path):
  rc, _, err = launch_process(*LADDER, f'--workdir={tmp_path}', '--config.train.steps=8')
  assert rc == 0, err[-3000:]
  step = tmp_path / CELL / 'checkpoints' / '8'
  for root, _, files in os.walk(step / 'default'):
    if os.path.basename(root) == 'd':  # the array data
      for f in files:
        with open(os.path.join(root, f), 'wb') as out:
          out.write(os.urandom(64))
  rc, _, err = launch_process(*LADDER, f'--workdir={tmp_path}', '--config.train.steps=12')
  line = one_error_line(err)
  assert rc == 4, err
  # orbax's metadata reader finds it before the run (the restore would name it the same way)
  assert 'checkpoint step 8 cannot be read' in line and f'delete {step}' in line


DISK = 'mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@"'


def _can_mount(directory):
  try:
    return subprocess.run(['unshare', '-rm', 'sh', '-c', DISK, str(directory), 'true'],
                          capture_output=True, timeout=30).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def test_a_full_disk_is_one_line_naming_the_path_and_the_space(tmp_path):
  disk = tmp_path / 'disk'
  disk.mkdir()
  if not _can_mount(disk):
    pytest.skip('no tmpfs here (needs a mount namespace: unshare -rm)')
  # The cell's checkpoints take about 2 MiB on a 4 MiB disk: the first fits, the next not.
  rc, _, err = launch_process(*LADDER, '--config.train.steps=14', f'--workdir={disk}/run',
                              prefix=('unshare', '-rm', 'sh', '-c', DISK, str(disk)))
  line = one_error_line(err)
  assert rc == 4, err
  assert 'space' in line and 'MiB' in line and f'({disk}/run' in line and 'another' in line


# ---------------------------------------------------------------------------------------------
# SIGKILL at random moments: every rerun resumes, and the end is the uninterrupted run's.


def test_killed_at_random_moments_and_rerun_it_ends_as_the_uninterrupted_run(tmp_path, monkeypatch):
  args = [*LADDER, '--config.train.epochs=6', '--config.checkpoint.every_steps=8']
  t0 = time.time()
  rc, _, err = launch_process(*args, f'--workdir={tmp_path / "reference"}')
  assert rc == 0, err[-3000:]
  duration = time.time() - t0
  rng = random.Random(int(os.environ.get('JAXLAB_FAULT_SEED', '0')))
  workdir = tmp_path / 'killed'
  kills = int(os.environ.get('JAXLAB_FAULT_KILLS', '3'))
  # The killed runs also log to MLflow (a file store), when it is installed: the tracked run
  # must end with metrics.jsonl's records, each step once.
  mlflow = importlib.util.find_spec('mlflow') is not None
  uri = f'file:{tmp_path / "mlruns"}'
  tracked = ['--config.log.mlflow=true', f'--config.log.mlflow_uri={uri}'] if mlflow else []
  env = _env(MLFLOW_ALLOW_FILE_STORE='true')
  for _ in range(kills):
    proc = start(*args, *tracked, f'--workdir={workdir}', env=env)
    time.sleep(rng.uniform(0.3, 1.0) * duration)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  rc, out, err = launch_process(*args, *tracked, f'--workdir={workdir}', env=env)
  assert rc == 0, err[-3000:]
  if mlflow:
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name('ladder').experiment_id])}
    cell = runs[CELL]
    assert cell.info.status == 'FINISHED'
    records = [json.loads(l) for l in open(workdir / CELL / 'metrics.jsonl')]
    for split in ('train', 'train_epoch'):
      want = [(r['step'], r['loss']) for r in records if r['split'] == split]
      got = sorted((m.step, m.value) for m in client.get_metric_history(cell.info.run_id,
                                                                         f'{split}/loss'))
      assert [s for s, _ in got] == [s for s, _ in want], split  # each step once, none lost
      assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), split
  ref = json.load(open(tmp_path / 'reference' / 'ladder.json'))['cells']['bp_k1']
  got = json.load(open(workdir / 'ladder.json'))['cells']['bp_k1']
  assert got['acc'] == ref['acc'] and got['mean'] == ref['mean']
  assert cell_summary(workdir)['nll'] == cell_summary(tmp_path / 'reference')['nll']
  steps = [json.loads(l)['step'] for l in open(workdir / CELL / 'metrics.jsonl')
           if json.loads(l)['split'] == 'train']
  assert steps == sorted(set(steps))  # one writer, no step twice
