"""MLflow and W&B runs fed from metrics.jsonl's records: read back with MLflow's own client (a
local file store) and from W&B's offline run files, after a crash and a resume."""

import glob
import importlib.util
import json
import os
import struct

import jax
import pytest

from jaxlab.checks import BadInput
from jaxlab.experiments import preflight
from jaxlab.io import trackers, writers
from jaxlab.io.writers import read_jsonl
from jaxlab.parallel.mesh import make_mesh
from tests.test_trainer import run, small_digits, tiny_config  # noqa: F401  (fixture)

MIRRORED = (('train', 'loss'), ('train', 'acc'), ('train_epoch', 'loss'), ('test', 'acc1'),
            ('test', 'nll'))


def crash_then_resume(c, workdir, small_digits):
  """tiny_config's run crashed after its step-4 records (past checkpoint 3), then resumed:
  the crashed attempt sent the records of steps 2 and 4 to the tracker, the resume redoes 4."""
  mesh = make_mesh(jax.devices()[:2])

  def crash(step, state):
    if step == 5:
      raise RuntimeError('simulated crash')

  with pytest.raises(RuntimeError, match='simulated crash'):
    run(c, workdir, small_digits, mesh, on_chunk=crash)
  summary, _ = run(c, workdir, small_digits, mesh)
  assert summary['resumed_from_step'] == 3
  return summary, read_jsonl(workdir / 'metrics.jsonl')


def check_history(history, records):
  """`history` {'<split>/<metric>': [(step, value)]} holds each record's numbers once, in order."""
  for split, key in MIRRORED:
    want = [(r['step'], r[key]) for r in records if r.get('split') == split]
    got = history[f'{split}/{key}']
    assert [s for s, _ in got] == [s for s, _ in want], (split, key)  # no step twice
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), (split, key)
  assert [s for s, _ in history['train/loss']] == [2, 4, 6, 8]


def test_mlflow_run_holds_the_config_every_record_once_the_summary_and_files(
    tmp_path, small_digits, monkeypatch):
  pytest.importorskip('mlflow')
  from mlflow.tracking import MlflowClient
  monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')  # for this process's reading client
  uri = 'file:' + str(tmp_path / 'mlruns')
  c = tiny_config()  # 2 epochs of 4 steps; logs every 2 steps; checkpoints every 3
  c.log.update(mlflow=True, mlflow_uri=uri, mlflow_experiment='tiny')
  summary, records = crash_then_resume(c, tmp_path / 'run', small_digits)

  client = MlflowClient(uri)
  runs = client.search_runs([client.get_experiment_by_name('tiny').experiment_id])
  assert len(runs) == 1  # the resume continued the crashed attempt's run
  found = runs[0]
  assert found.info.status == 'FINISHED'
  state = json.loads((tmp_path / 'run' / 'tracking_mlflow.json').read_text())
  assert found.info.run_id == state['run_id']
  history = {key: [(m.step, m.value) for m in
                   sorted(client.get_metric_history(found.info.run_id, key),
                          key=lambda m: (m.step, m.timestamp))]
             for key in found.data.metrics}
  check_history(history, records)
  params = found.data.params
  assert params['train.batch_size'] == '16' and params['optim.name'] == 'sgdm'
  assert params['log.mlflow'] == 'True'
  assert found.data.metrics['summary/acc1'] == pytest.approx(summary['acc1'])
  assert history['summary/acc1'] == [(8, pytest.approx(summary['acc1']))]
  artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
  assert {'summary.json', 'resolved.json'} <= artifacts


def wandb_records(path):
  """The protobuf records of a W&B run file (`run-<id>.wandb`): a 7-byte header (':W&B', magic,
  version), then LevelDB-log records in 32 KiB blocks: crc32 (4 bytes), length (2), type (1:
  whole, 2/3/4: first/middle/last piece), data; a block's tail under 7 bytes is padding."""
  from wandb.proto import wandb_internal_pb2
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:4] == b':W&B', path
  pos, block, piece, out = 7, 32768, b'', []
  while pos + 7 <= len(data):
    left = block - pos % block
    if left < 7:
      pos += left
      continue
    _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
    if length == 0 and kind == 0:  # zero padding to the block's end
      pos += left
      continue
    piece += data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(piece)
      out.append(record)
      piece = b''
  return out


def test_wandb_offline_run_holds_every_record_once_and_the_summary(tmp_path, small_digits):
  pytest.importorskip('wandb')
  c = tiny_config()
  c.log.update(wandb=True, wandb_mode='offline', wandb_project='tiny')
  summary, records = crash_then_resume(c, tmp_path / 'run', small_digits)

  run_id = json.loads((tmp_path / 'run' / 'tracking_wandb.json').read_text())['run_id']
  files = sorted(glob.glob(str(tmp_path / 'run' / 'wandb' / 'offline-run-*' / f'run-{run_id}.wandb')))
  assert len(files) == 2  # the crashed attempt and the resume, one W&B run id
  history, summaries, config, saved = {}, {}, {}, set()
  for path in files:
    for record in wandb_records(path):
      kind = record.WhichOneof('record_type')
      if kind == 'history':
        items = {'/'.join(i.nested_key) or i.key: json.loads(i.value_json)
                 for i in record.history.item}
        for key, value in items.items():
          if not key.startswith('_'):
            history.setdefault(key, []).append((items['_step'], value))
      elif kind == 'summary':
        summaries.update({i.key: json.loads(i.value_json) for i in record.summary.update
                          if i.key})
      elif kind == 'config':
        config.update({i.key: json.loads(i.value_json) for i in record.config.update})
      elif kind == 'run':
        assert record.run.run_id == run_id and record.run.project == 'tiny'
        config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
      elif kind == 'files':
        saved.update(f.path for f in record.files.files)
  check_history(history, records)
  assert summaries['acc1'] == pytest.approx(summary['acc1'])
  assert config['train.batch_size'] == 16 and config['optim.name'] == 'sgdm'
  assert {'summary.json', 'resolved.json'} <= saved


def test_tracker_fields_are_checked_before_the_run(tmp_path, monkeypatch):
  c = tiny_config()
  c.log.wandb_mode = 'ofline'
  with pytest.raises(BadInput, match='log.wandb_mode'):
    preflight.check_fields(c)
  if importlib.util.find_spec('wandb'):  # online without an API key: refused before the run
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'no_netrc'))
    c = tiny_config()
    c.log.wandb = True
    with pytest.raises(BadInput, match='W&B API key') as e:
      preflight.check_fields(c)
    assert 'wandb_mode=offline' in e.value.fix
    c.log.wandb_mode = 'offline'
    preflight.check_fields(c)
  if importlib.util.find_spec('mlflow'):
    monkeypatch.chdir(tmp_path)
    # A file store the user names is allowed for them (MLflow 3 keeps it behind a variable) ...
    monkeypatch.delenv('MLFLOW_ALLOW_FILE_STORE', raising=False)
    c = tiny_config()
    c.log.update(mlflow=True, mlflow_uri=f'file:{tmp_path / "mlruns"}')
    preflight.check_fields(c)
    assert os.environ['MLFLOW_ALLOW_FILE_STORE'] == 'true'
    # ... unless the user said no: then MLflow's refusal is one line naming the field.
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'false')
    c.log.mlflow_uri = f'file:{tmp_path / "other"}'  # MLflow keeps the stores it made
    with pytest.raises(BadInput, match='MLflow cannot use the tracking store file:') as e:
      preflight.check_fields(c)
    assert '\n' not in str(e.value) and 'mlflow_uri=http://HOST:PORT' in e.value.fix
  if not importlib.util.find_spec('mlflow'):  # the package missing: the extra named
    c = tiny_config()
    c.log.mlflow = True
    with pytest.raises(BadInput, match=r"jaxlab\[mlflow\]"):
      preflight.check_fields(c)


def test_numbers_are_split_prefixed_finite_and_never_the_step():
  record = {'step': 4, 'split': 'test', 'acc1': 0.5, 'nll': float('nan'), 'ok': True,
            'note': 'x', 'epoch': 1}
  assert writers.numbers(record) == {'test/acc1': 0.5, 'test/epoch': 1.0}
  assert trackers.summary_numbers({'acc1': 0.5, 'ema': {'acc1': 0.6}, 'seeds': [0]}) == {
      'acc1': 0.5, 'ema/acc1': 0.6}
  assert trackers.run_name(os.path.join('a', 'sweep', 'cells', 'bp_k0')) == 'cells/bp_k0'


def test_a_sweep_tracks_each_cell_and_its_own_figures(tmp_path, monkeypatch):
  """The one-cell ladder through experiments.run: the cell is a tracked run, and the sweep's
  workdir one more, holding the ladder's table and figure."""
  pytest.importorskip('mlflow')
  from mlflow.tracking import MlflowClient
  from jaxlab import experiments
  from tests.test_faults import ladder_config  # one cell (bp_k1), two seeds
  monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
  uri = 'file:' + str(tmp_path / 'mlruns')
  c = ladder_config(steps=2)
  c.log.update(mlflow=True, mlflow_uri=uri, mlflow_experiment='ladder')
  experiments.run(c, str(tmp_path / 'sweep'))
  client = MlflowClient(uri)
  runs = {r.info.run_name: r for r in client.search_runs(
      [client.get_experiment_by_name('ladder').experiment_id])}
  assert set(runs) == {'cells/bp_k1', f'{tmp_path.name}/sweep'}
  cell = runs['cells/bp_k1']
  assert cell.info.status == 'FINISHED' and 'summary/acc1' in cell.data.metrics
  sweep = runs[f'{tmp_path.name}/sweep']
  assert sweep.info.status == 'FINISHED'
  files = {a.path for a in client.list_artifacts(sweep.info.run_id)}
  assert {'ladder.md', 'ladder.png'} <= files, files
