"""MLflow and Weights & Biases runs beside metrics.jsonl (--config.log.mlflow=true,
--config.log.wandb=true; pip install 'jaxlab[mlflow]' / 'jaxlab[wandb]').

Each training run (a workdir holding summary.json: the run of a one-run family, each cell of
a sweep) is one tracked run, fed from the records metrics.jsonl gets:

  params     the config, flattened ('train.batch_size'), once when the tracked run starts
  metrics    every metrics record's numbers as `<split>/<metric>` at the record's step
  summary    the summary's numbers (MLflow: metrics `summary/<key>` at the last step; W&B: the
             run summary), and summary.json itself as a file
  files      summary.json, resolved.json and the figures and tables (*.png, *.md) of the
             workdir; a sweep's own figures and tables go to one more tracked run for the
             sweep's workdir (`log_workdir_files`)

A resumed run continues the same tracked run: its id is kept in the workdir
(tracking_mlflow.json, tracking_wandb.json) with the last step it received. A record reaches
the tracker once a checkpoint at or after its step is whole on disk (checkpoint.every_steps
sets how far the tracker lags), because a resume rewrites what came after its checkpoint: so
no step is sent twice and the tracked run ends with exactly the records of metrics.jsonl (for
W&B, whose service writes in the background, see WandbLog). A run started again from scratch
(another config) gets a new tracked run.

The tracker's address comes from the library's own settings unless the config gives it:
MLflow's MLFLOW_TRACKING_URI (or log.mlflow_uri), W&B's login, WANDB_MODE (or log.wandb_mode,
e.g. 'offline': files under workdir/wandb to `wandb sync` later). Only process 0 writes.
"""

import glob
import os
import shutil
import time
import uuid

from jaxlab.checks import BadInput
from jaxlab.io.writers import (flat_config, is_number, is_writer, numbers, plain, read_json,
                               write_json)

WANDB_MODES = ('', 'online', 'offline', 'disabled')
FILE_PATTERNS = ('summary.json', 'resolved.json', '*.png', '*.md')
STATE_FILES = ('tracking_mlflow.json', 'tracking_wandb.json')


def check_config(c):
  """The log.* tracker fields: a valid W&B mode, and the library installed where one is on."""
  log = c.get('log', {})
  if log.get('wandb_mode', '') not in WANDB_MODES:
    raise BadInput(f'log.wandb_mode is {log.wandb_mode!r}', '--config.log.wandb_mode',
                   f'choose one of {", ".join(repr(m) for m in WANDB_MODES)} '
                   "('': W&B's own setting, WANDB_MODE)")
  for field, module, extra in (('mlflow', 'mlflow', 'mlflow'), ('wandb', 'wandb', 'wandb')):
    if log.get(field, False):
      try:
        __import__(module)
      except ImportError:
        raise BadInput(f'log.{field}=true needs the {module} package', f'--config.log.{field}',
                       f"pip install 'jaxlab[{extra}]' (or --config.log.{field}=false)") from None
  if log.get('mlflow', False):
    _check_mlflow_store(log.get('mlflow_uri', ''))
  if log.get('wandb', False):
    _check_wandb_login(log.get('wandb_mode', ''))


def allow_file_store(uri):
  """A file store named in the config (log.mlflow_uri=file:DIR) is what the user asked for:
  MLflow 3 keeps that store behind MLFLOW_ALLOW_FILE_STORE=true, which this process then sets
  (unless set otherwise). Its default store and a server are left to MLflow."""
  if uri and (uri.startswith('file:') or '://' not in uri):
    os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')


def _check_mlflow_store(uri):
  """MLflow builds its store when its client is made: a store it cannot use (MLflow 3's default
  sqlite:///mlflow.db without the full mlflow package; a file: store without
  MLFLOW_ALLOW_FILE_STORE=true) is refused here, before anything runs (no server is called)."""
  from mlflow.tracking import MlflowClient  # pylint: disable=import-outside-toplevel
  allow_file_store(uri)
  try:
    MlflowClient(uri or None)
  except Exception as e:  # pylint: disable=broad-except  # whatever MLflow raised, in one line
    import mlflow  # pylint: disable=import-outside-toplevel
    reason = ' '.join(str(e).split()).split('. ')[0][:300]  # its first sentence
    raise BadInput(f'MLflow cannot use the tracking store {uri or mlflow.get_tracking_uri()} '
                   f'({type(e).__name__}: {reason})', '--config.log.mlflow_uri',
                   'give --config.log.mlflow_uri=http://HOST:PORT (an MLflow server) or '
                   'file:DIR (a folder), or install the full mlflow package for sqlite:') from None


def _check_wandb_login(mode):
  """W&B online needs an API key (WANDB_API_KEY or `wandb login`'s netrc entry): without one
  wandb.init would stop the run after its compile, asking on a terminal that may not exist."""
  mode = mode or os.environ.get('WANDB_MODE', '')
  if mode in ('offline', 'disabled', 'dryrun') or os.environ.get('WANDB_API_KEY'):
    return
  import netrc  # pylint: disable=import-outside-toplevel
  import urllib.parse  # pylint: disable=import-outside-toplevel
  host = urllib.parse.urlparse(os.environ.get('WANDB_BASE_URL', 'https://api.wandb.ai')).hostname
  try:
    if netrc.netrc(os.environ.get('NETRC')).authenticators(host):
      return
  except (OSError, netrc.NetrcParseError):
    pass
  raise BadInput(f'log.wandb=true in online mode needs a W&B API key for {host}, and none is set',
                 '--config.log.wandb',
                 'run `wandb login` (or set WANDB_API_KEY), or --config.log.wandb_mode=offline '
                 'to write workdir/wandb/ for `wandb sync`')


def config_fields(config):
  """{'train.batch_size': 64, ...}: every field of a ConfigDict (or dict), JSON-safe."""
  return flat_config(plain(config.to_dict() if hasattr(config, 'to_dict') else dict(config)))


def summary_numbers(summary):
  """The summary's top-level finite numbers (nested records such as 'averaged' flattened as
  'averaged/acc1')."""
  out = {}
  for key, value in summary.items():
    if isinstance(value, dict):
      out.update({f'{key}/{k}': v for k, v in summary_numbers(value).items()})
    elif is_number(value):
      out[key] = float(value)
  return out


def run_name(workdir):
  """A tracked run's name: its workdir's last two path parts ('sweep/cells/bp_k0' → 'cells/bp_k0')."""
  parts = os.path.normpath(os.path.abspath(workdir)).split(os.sep)
  return '/'.join(parts[-2:])


def workdir_files(workdir):
  """The files of a workdir a tracker keeps beside the numbers (FILE_PATTERNS), sorted."""
  found = set()
  for pattern in FILE_PATTERNS:
    found.update(p for p in glob.glob(os.path.join(workdir, pattern)) if os.path.isfile(p))
  return sorted(found)


class _Tracked:
  """What both trackers share: the state file (run id, the last step sent and the splits sent
  at it), and the rule that a record is sent once its step is in a checkpoint on disk.

  metrics.jsonl keeps, on resume, the records up to the checkpoint the run resumes from and
  writes the rest again (a resumed log window averages fewer steps, so those records differ).
  A tracker cannot take a point back, so it is sent only what will stay: `write` holds a
  record until `commit(step)` says a checkpoint at or after its step is whole on disk (the
  trainer commits after each save and at the end). A resume first sends the kept records the
  tracker did not get (`replay`), so the tracked run ends with what metrics.jsonl holds.
  """

  state_file = ''
  # Whether a record sent is on the tracker's side at once (MLflow's client returns when the
  # store has it), so the state file can say so after each send; else only at close.
  durable_sends = True

  def __init__(self, workdir, resumed_from):
    self.workdir = os.fspath(workdir)
    self.path = os.path.join(self.workdir, self.state_file)
    self.state = None
    if resumed_from is not None and os.path.exists(self.path):
      self.state = read_json(self.path)
    self.committed = -1 if resumed_from is None else int(resumed_from)
    self.pending = []

  def _save(self):
    write_json(self.path, self.state)

  def _unsent(self, record):
    """Whether `record` is past what the tracked run holds."""
    step, split = int(record.get('step', 0)), record.get('split', 'train')
    last, sent = self.state.get('step', -1), self.state.get('splits', [])
    return step > last or (step == last and split not in sent)

  def _send(self, record):
    step, split = int(record.get('step', 0)), record.get('split', 'train')
    values = numbers(record)
    if values:
      self._log(values, step)
    self.state['splits'] = (self.state['splits'] if step == self.state['step'] else []) + [split]
    self.state['step'] = step

  def write(self, record):
    """Take a metrics record: sent now if its step is committed, else when it is."""
    if self.state is None or record.get('split') == 'provenance' or not self._unsent(record):
      return
    self.pending.append(record)
    self.commit(self.committed)

  def replay(self, kept):
    """On resume: the records metrics.jsonl kept (all committed) that the tracker lacks."""
    for record in kept:
      self.write(record)

  def commit(self, step):
    """Send the held records up to `step` (a checkpoint at `step` is whole on disk)."""
    if self.state is None or step is None:
      return
    self.committed = max(self.committed, int(step))
    ready = [r for r in self.pending if int(r.get('step', 0)) <= self.committed]
    if not ready:
      return
    self.pending = [r for r in self.pending if int(r.get('step', 0)) > self.committed]
    for record in ready:
      self._send(record)
    if self.durable_sends:
      self._save()


class MlflowLog(_Tracked):
  """One MLflow run per training run, through MlflowClient (no global active run)."""

  state_file = STATE_FILES[0]

  def __init__(self, workdir, config, resumed_from=None):
    super().__init__(workdir, resumed_from)
    if not is_writer():
      self.state = None
      return
    from mlflow.tracking import MlflowClient  # pylint: disable=import-outside-toplevel
    log = config.get('log', {})
    uri = log.get('mlflow_uri', '') or (self.state or {}).get('uri') or None
    allow_file_store(uri)
    self.client = MlflowClient(uri)
    if self.state is None:
      name = log.get('mlflow_experiment', '') or config.get('experiment', 'jaxlab')
      found = self.client.get_experiment_by_name(name)
      experiment = found.experiment_id if found else self.client.create_experiment(name)
      run = self.client.create_run(experiment, run_name=run_name(workdir),
                                   tags={'jaxlab.workdir': os.path.abspath(workdir)})
      self.state = {'run_id': run.info.run_id, 'uri': self.client.tracking_uri,
                    'experiment': name, 'step': -1, 'splits': []}
      self._params(config)
      self._save()
    else:
      self.client.update_run(self.state['run_id'], status='RUNNING')

  def _params(self, config):
    from mlflow.entities import Param  # pylint: disable=import-outside-toplevel
    params = [Param(k, str(v)[:6000]) for k, v in sorted(config_fields(config).items())]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
      self.client.log_batch(self.state['run_id'], params=params[i:i + 100])

  def _log(self, values, step):
    from mlflow.entities import Metric  # pylint: disable=import-outside-toplevel
    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, step) for k, v in sorted(values.items())]
    for i in range(0, len(metrics), 1000):
      self.client.log_batch(self.state['run_id'], metrics=metrics[i:i + 1000])

  def finish(self, summary, step):
    if self.state is None:
      return
    self.commit(step)
    values = summary_numbers(summary)
    self._log({f'summary/{k}': v for k, v in values.items()}, step)
    self.files(workdir_files(self.workdir))
    self.close('FINISHED')

  def files(self, paths):
    if self.state is None:
      return
    for path in paths:
      self.client.log_artifact(self.state['run_id'], path)

  def close(self, status='KILLED'):
    if self.state is not None:
      self.client.set_terminated(self.state['run_id'], status=status)
      self.state = None


class WandbLog(_Tracked):
  """One W&B run per training run (wandb.init with the kept id and resume='allow').

  W&B's service writes (and uploads) what `run.log` hands it in the background: a process
  killed outright can lose what it sent last, so the state file records the sent records
  only after `run.finish()` has flushed them (at the end, after an error, on a signal). After
  a kill the resume sends again what the state file does not record; W&B keeps a run's steps
  increasing and ignores a step it already has, so no step is doubled.
  """

  state_file = STATE_FILES[1]
  durable_sends = False

  def __init__(self, workdir, config, resumed_from=None):
    super().__init__(workdir, resumed_from)
    self.run = None
    if not is_writer():
      self.state = None
      return
    import wandb  # pylint: disable=import-outside-toplevel
    log = config.get('log', {})
    if self.state is None:
      self.state = {'run_id': uuid.uuid4().hex[:12], 'step': -1, 'splits': []}
    kwargs = dict(project=log.get('wandb_project', '') or 'jaxlab',
                  entity=log.get('wandb_entity', '') or None,
                  mode=log.get('wandb_mode', '') or None)
    self.run = wandb.init(id=self.state['run_id'], resume='allow', name=run_name(workdir),
                          dir=self.workdir, group=config.get('experiment', None), reinit='create_new',
                          settings=wandb.Settings(silent=True), **kwargs)
    self.run.config.update(config_fields(config), allow_val_change=True)
    self._save()

  def _log(self, values, step):
    self.run.log(values, step=step)

  def finish(self, summary, step):
    if self.run is None:
      return
    self.commit(step)
    self.run.summary.update(summary_numbers(summary))
    self.files(workdir_files(self.workdir))
    self.close(0)

  def files(self, paths):
    if self.run is None:
      return
    for path in paths:  # copied into the run's folder: W&B would link (and say so) otherwise
      kept = os.path.join(self.run.dir, os.path.basename(path))
      shutil.copyfile(path, kept)
      self.run.save(kept, base_path=self.run.dir, policy='now')

  def close(self, status=1):
    if self.run is not None:
      self.run.finish(exit_code=0 if status in (0, 'FINISHED') else 1)  # waits for the writes
      self._save()
      self.run = None
      self.state = None


def open_trackers(workdir, config, resumed_from=None):
  """The trackers the config turns on (log.mlflow, log.wandb) for the run in `workdir`."""
  log = config.get('log', {})
  out = []
  if log.get('mlflow', False):
    out.append(MlflowLog(workdir, config, resumed_from))
  if log.get('wandb', False):
    out.append(WandbLog(workdir, config, resumed_from))
  return out


def log_workdir_files(workdir, config):
  """A launch's figures and tables (workdir/*.png, *.md, ...) to the tracked run of `workdir`:
  the run itself for a one-run family, one more tracked run for a sweep's workdir."""
  log = config.get('log', {})
  if not (log.get('mlflow', False) or log.get('wandb', False)) or not is_writer():
    return
  paths = workdir_files(workdir)
  if not paths:
    return
  resumed = 0 if any(os.path.exists(os.path.join(workdir, f)) for f in STATE_FILES) else None
  for tracker in open_trackers(workdir, config, resumed):
    tracker.files(paths)
    tracker.close('FINISHED' if isinstance(tracker, MlflowLog) else 0)
