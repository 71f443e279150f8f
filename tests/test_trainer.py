"""The shared trainer: data parallelism, resumption, outputs, evaluation."""

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess

import jax
import numpy as np
import pytest

from configs.common import base_config
from jaxlab import host
from jaxlab.data.datasets import Dataset, load_dataset
from jaxlab.data.pipeline import Split
from jaxlab.experiments.distributed import make_task
from jaxlab.parallel.mesh import make_mesh
from jaxlab.params import flatten
from jaxlab.train.loop import fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUMMARY_FIELDS = ('acc1', 'nll', 'ece', 'trainable_params', 'avg_step_time_s',
                  'throughput_img_s', 'peak_mem_bytes', 'peak_mem_source')


@pytest.fixture(scope='module')
def small_digits():
  d = load_dataset(base_config().data)
  return Dataset(name='digits', train=Split(d.train.images[:64], d.train.labels[:64]),
                 test=Split(d.test.images[:30], d.test.labels[:30]), num_classes=10,
                 eval_split='test')


def tiny_config(**train):
  c = base_config()
  c.experiment = 'distributed'
  c.progress = False
  c.augment.update(crop_padding=2, flip=True)
  c.optim.update(name='sgdm', lr=0.05, weight_decay=1e-4)
  c.train.update(batch_size=16, epochs=2, eval_batch_size=8, log_every_steps=2)
  c.train.update(train)
  c.checkpoint.update(every_steps=3, keep=2)
  return c


def run(config, workdir, dataset, mesh, **kw):
  task = make_task(config, dataset.num_classes, (32, 32, 3))
  return fit(config, str(workdir), task, dataset, mesh=mesh, **kw)


def params_of(state):
  return {k: np.asarray(v) for k, v in flatten(jax.device_get(state.params)).items()}


def test_four_devices_equal_one_device(tmp_path, small_digits):
  c = tiny_config(epochs=1)
  s1, st1 = run(c, tmp_path / 'one', small_digits, make_mesh(jax.devices()[:1]))
  s4, st4 = run(c, tmp_path / 'four', small_digits, make_mesh(jax.devices()[:4]))
  assert s1['num_devices'] == 1 and s4['num_devices'] == 4
  p1, p4 = params_of(st1), params_of(st4)
  for k in p1:
    np.testing.assert_allclose(p4[k], p1[k], rtol=2e-5, atol=2e-6, err_msg=k)
  # The step moved the parameters (the comparison is not trivially of the init).
  init = flatten(make_task(c, 10, (32, 32, 3)).params)
  assert any(not np.allclose(p1[k], init[k]) for k in p1)
  assert s4['acc1'] == pytest.approx(s1['acc1'], abs=1 / 30 + 1e-6)


def test_kill_and_resume_equals_uninterrupted(tmp_path, small_digits):
  c = tiny_config()  # 2 epochs of 4 steps; checkpoints every 3 steps
  mesh = make_mesh(jax.devices()[:2])
  _, full = run(c, tmp_path / 'full', small_digits, mesh)

  def crash(step, state):
    if step == 5:
      raise RuntimeError('simulated crash')

  with pytest.raises(RuntimeError, match='simulated crash'):
    run(c, tmp_path / 'resumed', small_digits, mesh, on_chunk=crash)
  summary, resumed = run(c, tmp_path / 'resumed', small_digits, mesh)
  assert summary['resumed_from_step'] == 3
  # Counted over the whole run: steps 1-3 (restored with checkpoint 3) and 4-8 after it.
  assert summary['timed_steps'] == 8
  p_full, p_res = params_of(full), params_of(resumed)
  for k in p_full:
    np.testing.assert_array_equal(p_res[k], p_full[k], err_msg=k)
  steps = [r['step'] for r in map(json.loads, open(tmp_path / 'resumed' / 'metrics.jsonl'))
           if r['split'] == 'train']
  # Records after the checkpoint (step 3) were dropped and rewritten: no duplicates.
  assert steps == [2, 4, 6, 8]
  records = map(json.loads, open(tmp_path / 'resumed' / 'metrics.jsonl'))
  starts = [r['provenance'] for r in records if r['split'] == 'provenance']
  assert [p['resumed_from_step'] for p in starts] == [None, 3]  # each start says where it began
  assert summary['provenance']['resumed_from_step'] == 3


def test_workdir_files(tmp_path, small_digits):
  c = tiny_config(epochs=1)
  run(c, tmp_path, small_digits, make_mesh(jax.devices()[:1]))
  config = json.load(open(tmp_path / 'config.json'))
  assert config['train']['batch_size'] == 16
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert {r['split'] for r in records} == {'provenance', 'train', 'train_epoch', 'test'}
  summary = json.load(open(tmp_path / 'summary.json'))
  for field in SUMMARY_FIELDS:
    assert summary[field] is not None, field
  # LeNet-5 with 10 classes: conv 4,864 + 102,464, fc 614,784 + 73,920, head 1,930.
  assert summary['trainable_params'] == 797_962
  assert summary['peak_mem_source'] == 'xla_memory_analysis'
  assert summary['runtime_peak_mem_source'] in ('device_memory_stats', 'process_peak_rss')
  # The compiled step holds at least the data set, the state and its output state.
  assert summary['peak_mem_bytes'] > small_digits.train.images.nbytes + 2 * 4 * 797_962
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3', '4']
  check_provenance(summary, records)


def utc(text):
  assert text.endswith('Z'), text
  return datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=datetime.timezone.utc)


def check_provenance(summary, records):
  """The summary and the log's first record say where the run came from, from independent
  sources (importlib.metadata, git itself, the clock around the test)."""
  first, prov = records[0], summary['provenance']
  assert first['split'] == 'provenance'
  assert first['provenance'] == {k: v for k, v in prov.items() if k != 'ended'}
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'):
    assert prov['versions'][package] == importlib.metadata.version(package)
  assert prov['versions']['python'] == platform.python_version()
  assert (prov['platform'], prov['device_count'], prov['process_count']) == ('cpu', 1, 1)
  assert prov['device_kind'] == jax.devices()[0].device_kind
  assert prov['malloc'] == host.setting() == 'system'  # JAXLAB_MALLOC=keep is the command's
  if shutil.which('git') and os.path.isdir(os.path.join(ROOT, '.git')):  # run from a checkout
    head = subprocess.run(['git', '-C', ROOT, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert prov['git']['commit'] == head and isinstance(prov['git']['dirty'], bool)
  times = [utc(r['time']) for r in records]  # every record, in the order written
  assert times == sorted(times)
  assert utc(prov['started']) <= times[1] and times[-1] <= utc(prov['ended'])
  now = datetime.datetime.now(datetime.timezone.utc)
  assert now - datetime.timedelta(minutes=10) < utc(prov['started']) <= now


def test_indivisible_batch_is_an_error(tmp_path, small_digits):
  c = tiny_config(batch_size=18)
  with pytest.raises(ValueError, match='not divisible by the 4 devices'):
    run(c, tmp_path, small_digits, make_mesh(jax.devices()[:4]))


def test_checkpoint_averaging_is_the_mean_of_the_snapshots_and_resumes(tmp_path, small_digits):
  # 2 epochs of 4 steps, snapshots after steps 4, 6, 8 (every 2 steps past step 8·0.25 = 2).
  c = tiny_config()
  c.averaging.update(every_steps=2, start_fraction=0.25, window=0)
  mesh = make_mesh(jax.devices()[:1])
  seen = {}

  def keep(step, state):
    seen[step] = params_of(state)

  summary, state = run(c, tmp_path / 'full', small_digits, mesh, on_chunk=keep)
  assert summary['averaged']['snapshots'] == 3
  mean = {k: np.mean([seen[s][k] for s in (4, 6, 8)], axis=0) for k in seen[8]}
  got = flatten(jax.device_get(state.extra['average']['mean']))
  for k in mean:
    np.testing.assert_allclose(got[k], mean[k], rtol=1e-5, atol=1e-7, err_msg=k)
  assert not np.allclose(got['conv1/kernel'], seen[8]['conv1/kernel'])  # not the last params
  for field in ('acc1', 'nll', 'ece'):
    assert 0 <= summary['averaged'][field] < 10

  # A crash after step 5 resumes from the checkpoint at step 3 and ends with the same average.
  def crash(step, state):
    if step == 5:
      raise RuntimeError('simulated crash')

  with pytest.raises(RuntimeError):
    run(c, tmp_path / 'resumed', small_digits, mesh, on_chunk=crash)
  _, resumed = run(c, tmp_path / 'resumed', small_digits, mesh)
  again = flatten(jax.device_get(resumed.extra['average']['mean']))
  for k in mean:
    np.testing.assert_allclose(again[k], got[k], rtol=1e-6, err_msg=k)


# Numbers you can trust: divergence, resume, every example, per-run memory, best epoch.

def test_nonfinite_loss_stops_the_run_and_nothing_nonfinite_is_saved(tmp_path, small_digits):
  from jaxlab.io.checkpoint import Checkpointer
  from jaxlab.train.guards import DivergenceError
  c = tiny_config(epochs=2)
  c.optim.lr = 1e4
  c.checkpoint.every_steps = 1
  with pytest.raises(DivergenceError, match=r'non-finite (loss|parameters) at step \d+') as e:
    run(c, tmp_path, small_digits, make_mesh(jax.devices()[:1]))
  assert 'optim.lr (now 10000)' in str(e.value)
  bad = e.value.step
  ckpt = Checkpointer(tmp_path / 'checkpoints', 1, 10)
  saved = ckpt.manager.all_steps()
  ckpt.close()
  assert all(s < bad for s in saved) and e.value.last_checkpoint == max(saved, default=None)
  summary = json.load(open(tmp_path / 'summary.json'))
  assert summary['status'] == f'diverged at step {bad}' and summary['diverged_at_step'] == bad
  # Every checkpoint that was written is finite.
  task = make_task(c, 10, (32, 32, 3))
  from jaxlab.train.setup import build_setup
  like = build_setup(c, task, make_mesh(jax.devices()[:1]), 8, 4).state
  for s in saved:
    restored = Checkpointer(tmp_path / 'checkpoints', 1, 10).restore(like, s)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.params))


def _settles(monkeypatch):
  """The number of steps taken in at each of the loop's waits for the device."""
  from jaxlab.train import loop
  seen, settle = [], loop._Queue.settle

  def counted(self):
    got = settle(self)
    if got is not None:
      seen.append(got[2])
    return got
  monkeypatch.setattr(loop._Queue, 'settle', counted)
  return seen


def _train_records(workdir):
  return [json.loads(line) for line in open(workdir / 'metrics.jsonl')
          if json.loads(line)['split'] == 'train']


def test_metrics_fetched_lazily_equal_the_eager_ones(tmp_path, small_digits, monkeypatch):
  # log every 4 steps, no checkpoint in between: four dispatches queue before one wait. An
  # on_chunk callback makes the loop wait after every dispatch (the eager fetch).
  c = tiny_config(epochs=2, log_every_steps=4)
  c.checkpoint.every_steps = 100
  mesh = make_mesh(jax.devices()[:1])
  seen = _settles(monkeypatch)
  _, lazy = run(c, tmp_path / 'lazy', small_digits, mesh)
  assert seen == [4, 4]
  seen.clear()
  _, eager = run(c, tmp_path / 'eager', small_digits, mesh, on_chunk=lambda step, state: None)
  assert seen == [1] * 8
  a, b = _train_records(tmp_path / 'lazy'), _train_records(tmp_path / 'eager')
  assert [r['step'] for r in a] == [r['step'] for r in b] == [4, 8]
  for ra, rb in zip(a, b):
    assert (ra['loss'], ra['acc']) == (rb['loss'], rb['acc'])
  p_lazy, p_eager = params_of(lazy), params_of(eager)
  for k in p_lazy:
    np.testing.assert_array_equal(p_lazy[k], p_eager[k], err_msg=k)
  # A divergence inside a queue is reported at the step it happened, as when fetched eagerly.
  c.optim.lr = 1e4
  from jaxlab.train.guards import DivergenceError
  steps = []
  for name, kw in (('lazy_bad', {}), ('eager_bad', {'on_chunk': lambda step, state: None})):
    with pytest.raises(DivergenceError) as e:
      run(c, tmp_path / name, small_digits, mesh, **kw)
    steps.append(e.value.step)
  assert steps[0] == steps[1] and steps[0] < 8


def test_the_loop_times_the_device_not_the_dispatch(tmp_path, small_digits):
  # Every training step also runs a chain of matrix products whose time alone is measured
  # here: a dispatch returns long before it ends, so the time the loop counts for a step
  # must come from waiting for the device.
  import dataclasses
  import time

  import jax.numpy as jnp

  def heavy(s):
    x = jnp.eye(384) + s * 1e-3
    for _ in range(16):
      x = jnp.tanh(x @ x)
    return jnp.mean(x)

  timed = jax.jit(heavy)
  timed(1.0).block_until_ready()
  alone = []
  for _ in range(3):
    t0 = time.perf_counter()
    timed(1.0).block_until_ready()
    alone.append(time.perf_counter() - t0)
  c = tiny_config(epochs=2, log_every_steps=4)
  c.checkpoint.every_steps = 100
  task = make_task(c, small_digits.num_classes, (32, 32, 3))

  def apply(params, images, train, key):
    logits = task.apply(params, images, train, key)
    if not train:
      return logits
    return logits + jax.lax.stop_gradient(heavy(jnp.mean(images)) * 0)

  summary, _ = fit(c, str(tmp_path), dataclasses.replace(task, apply=apply), small_digits,
                   mesh=make_mesh(jax.devices()[:1]))
  assert summary['timed_steps'] == 8
  # Generous for a noisy machine; a dispatch alone takes a small fraction of it.
  assert summary['avg_step_time_s'] > 0.5 * min(alone), (summary['avg_step_time_s'], alone)
  records = _train_records(tmp_path)
  assert len(records) == 2 and all(r['step_time_s'] > 0.5 * min(alone) for r in records)


def test_rerun_with_another_config_is_refused_and_a_finished_run_is_not_retrained(
    tmp_path, small_digits, capsys):
  from jaxlab.train.guards import ResumeMismatchError
  mesh = make_mesh(jax.devices()[:1])
  c = tiny_config(epochs=1)
  first, _ = run(c, tmp_path, small_digits, mesh)
  log_before = open(tmp_path / 'metrics.jsonl').read()
  other = tiny_config(epochs=1)
  other.optim.update(lr=0.1, name='adamw')
  with pytest.raises(ResumeMismatchError) as e:
    run(other, tmp_path, small_digits, mesh)
  assert "optim.lr 0.05 → 0.1" in str(e.value) and "optim.name 'sgdm' → 'adamw'" in str(e.value)
  assert '--workdir' in str(e.value)
  # Fields that do not change the result may differ; the finished run is reported, not rerun.
  same = tiny_config(epochs=1, log_every_steps=1, eval_batch_size=10)
  again, _ = run(same, tmp_path, small_digits, mesh)
  assert 'finished earlier' in capsys.readouterr().out
  assert again.pop('finished_earlier') is True and again == json.loads(json.dumps(first))
  assert open(tmp_path / 'metrics.jsonl').read() == log_before


def test_steps_per_epoch_keep_the_last_partial_batch():
  from jaxlab.data.pipeline import EpochIndices, steps_per_epoch
  from jaxlab.parallel.local import WorkerIndices, worker_steps_per_epoch
  assert steps_per_epoch(50_000, 128) == 391 and steps_per_epoch(50_000, 8192) == 7
  assert steps_per_epoch(50_000, 128, drop_last=True) == 390
  assert steps_per_epoch(50_000, 8192, drop_last=True) == 6
  key = jax.random.PRNGKey(0)
  ix = EpochIndices(key, 50, 16)
  for epoch in range(2):
    rows = ix.chunk(epoch * ix.steps_per_epoch, ix.steps_per_epoch)
    assert rows.shape == (4, 16)
    real = rows[rows >= 0]
    assert sorted(real.tolist()) == list(range(50)) and (rows < 0).sum() == 14
  # Local SGD: 50 examples over 4 workers (13, 13, 12, 12), batch 4: 4 steps for every worker.
  wx = WorkerIndices(key, 50, 4, 4)
  assert wx.steps_per_epoch == 4 == worker_steps_per_epoch(50, 4, 4)
  rows = wx.chunk(0, 4)  # [steps, workers, batch]
  assert sorted(rows[rows >= 0].tolist()) == list(range(50))
  for k, (lo, hi) in enumerate([(0, 13), (13, 26), (26, 38), (38, 50)]):
    mine = rows[:, k][rows[:, k] >= 0]
    assert mine.min() >= lo and mine.max() < hi and len(mine) == hi - lo


@pytest.mark.parametrize('devices', [1, 4])
def test_padded_and_masked_step_equals_the_step_on_the_real_examples(small_digits, devices):
  """12 real examples padded to a batch of 16 take exactly the step of the batch of 12."""
  from jaxlab.parallel.mesh import replicate, shard_leading
  from jaxlab.train.setup import build_setup
  c = tiny_config()
  c.augment.update(crop_padding=2, flip=True)
  mesh = make_mesh(jax.devices()[:devices])
  data = replicate({'image': small_digits.train.images, 'label': small_digits.train.labels}, mesh)
  real = np.arange(5, 17, dtype=np.int32)
  out = {}
  for name, idx in (('real', real), ('padded', np.concatenate([real, np.full(4, -1, np.int32)]))):
    c.train.batch_size = len(idx)
    task = make_task(c, 10, (32, 32, 3))
    setup = build_setup(c, task, mesh, 8, 4)
    state = setup.place(setup.state)
    init = params_of(state)  # the step donates the state
    new, metrics = setup.chunk_fn(frozenset())(state, data, shard_leading(idx[None], mesh, 1))
    # SGD momentum's first buffer is the gradient plus weight decay: the gradients, compared.
    trace = jax.device_get(jax.tree.leaves(new.opt_state))
    out[name] = (params_of(new), jax.device_get(metrics), init, trace)
  (p_real, m_real, init, g_real), (p_pad, m_pad, _, g_pad) = out['real'], out['padded']
  for k in p_real:
    np.testing.assert_allclose(p_pad[k], p_real[k], rtol=1e-5, atol=1e-7, err_msg=k)
  for a, b in zip(g_pad, g_real):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(not np.allclose(p_real[k], init[k]) for k in p_real)
  for key in ('loss', 'acc'):
    np.testing.assert_allclose(m_pad[key], m_real[key], rtol=1e-5)


def test_summary_reports_the_best_epoch(tmp_path, small_digits):
  c = tiny_config(epochs=3, eval_every_epochs=1)
  summary, _ = run(c, tmp_path, small_digits, make_mesh(jax.devices()[:1]))
  evals = [r for r in map(json.loads, open(tmp_path / 'metrics.jsonl')) if r['split'] == 'test']
  assert [r['epoch'] for r in evals] == [1, 2, 3]
  best = max(evals, key=lambda r: (r['acc1'], -r['step']))
  assert summary['acc1_best'] == best['acc1'] and summary['best_epoch'] == best['epoch']
  assert summary['acc1'] == evals[-1]['acc1'] and summary['acc1_best'] >= summary['acc1']
