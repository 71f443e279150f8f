"""A run is either right or stopped: the divergence guard and the resume guard.

Divergence: the step reports `finite/loss` and `finite/params` with the
metrics the trainer fetches anyway (no extra host round-trip); the first
non-finite one stops the run before anything is checkpointed.

Resume: a workdir records the config it was started with; a rerun under a
config that differs in anything that changes the result is refused, naming
each differing field. Fields that only change how the run is watched or
where files are (progress bar, logging cadence, eval batch size, the step to
stop at, ...) may differ.
"""

import dataclasses
import fnmatch
import json
import os
import sys

import numpy as np

from jaxlab import checks
from jaxlab.io.writers import flat_config, plain, read_json, write_json

# Fields of the trainer's own that do not change a run's result (fnmatch patterns over dotted
# names); each family declares its own (`Family`, below) beside the code that reads them.
NEUTRAL_FIELDS = (
    'progress', 'simulated_cpu_devices', 'distributed.*', 'log.*',
    'train.log_every_steps', 'train.eval_batch_size', 'train.ece_batch_size', 'train.steps',
    'train.steps_per_dispatch',
    'checkpoint.every_steps', 'checkpoint.keep',
    'data.dir', 'data.tfds_dir', 'data.placement', 'data.device_budget_mb', 'data.prefetch',
    'sweep.only',  # which cell a job runs: each cell's own record guards the cell
)


@dataclasses.dataclass(frozen=True)
class Family:
  """What an experiment family reads beyond the shared fields of configs/common.py (fnmatch
  patterns over dotted names), declared in its module: `reads`, all of them; `neutral`, those
  that do not change a run's result (a resume may change them); `cells`, those that choose
  which cells of a sweep run (each cell guards its own workdir, so the launch's record may
  change them); `ranges`, the values of those whose range is their own."""
  reads: tuple[str, ...]
  neutral: tuple[str, ...] = ()
  cells: tuple[str, ...] = ()
  # {dotted field: checks.rule(...)}: the values a field may take, checked (where the config
  # has the field) before the family's own validate.
  ranges: dict = dataclasses.field(default_factory=dict)


_FAMILIES = {}


def declare_family(experiment, family):
  """Record `family` (a Family) as what config.experiment == `experiment` reads; returns it."""
  _FAMILIES[experiment] = family
  return family


def neutral_fields(experiment, launch=False):
  """The fields a resume of `experiment` may change: the trainer's NEUTRAL_FIELDS and the
  family's neutral ones (with its cell choices too for the launch's record, `launch`)."""
  family = _FAMILIES.get(experiment, Family(reads=()))
  return NEUTRAL_FIELDS + family.neutral + (family.cells if launch else ())


class DivergenceError(RuntimeError):
  """A non-finite loss or parameter: the run stopped at `step` without saving it."""

  def __init__(self, step, metric, last_checkpoint, workdir, hint, details=None):
    self.step, self.metric, self.last_checkpoint = step, metric, last_checkpoint
    self.details = dict(details or {})  # e.g. the run's name and trainable params, for tables
    saved = (f'the last finite checkpoint is step {last_checkpoint}' if last_checkpoint is not None
             else 'no checkpoint was saved before it')
    super().__init__(
        f'non-finite {metric} at step {step} in {workdir}: the run stopped there and saved '
        f'nothing non-finite ({saved}); {hint}')

  def record(self):
    """What a sweep writes for a diverged cell."""
    return {**self.details, 'status': f'diverged at step {self.step}',
            'diverged_at_step': self.step, 'diverged_metric': self.metric,
            'last_checkpoint_step': self.last_checkpoint}


class SweepDivergedError(DivergenceError):
  """Every cell of a sweep diverged: there is no result at all."""

  def __init__(self, records, hint):
    first = records[0][1]

    def saved(r):
      step = r.get('last_checkpoint_step')
      return f'last finite checkpoint: step {step}' if step is not None else 'no checkpoint saved'

    RuntimeError.__init__(self, 'every run of the sweep diverged: '
                          + '; '.join(f'{name}: non-finite {r["diverged_metric"]} at step '
                                      f'{r["diverged_at_step"]} ({saved(r)})'
                                      for name, r in records)
                          + f'; {hint}; the tables record each one')
    self.step, self.metric = first['diverged_at_step'], first['diverged_metric']
    self.last_checkpoint, self.details = first.get('last_checkpoint_step'), {}


def check_sweep(records, config):
  """Raise SweepDivergedError when every (name, result) of a sweep diverged."""
  records = list(records)
  if records and all(r.get('diverged_at_step') is not None for _, r in records):
    raise SweepDivergedError(records, divergence_hint(config))


def run_or_diverged(fn, log=print):
  """fn(), or the record of its divergence (a sweep goes on past a diverged cell)."""
  try:
    return fn()
  except DivergenceError as e:
    log(f'{e} — recorded as {e.record()["status"]}; the sweep goes on')
    return e.record()


class ResumeMismatchError(checks.BadInput):
  """A rerun in a workdir that was started with a different config."""


def first_nonfinite(metrics, first_step):
  """(step, metric) of the first step in a chunk whose loss or params are not finite, or None.

  `metrics` holds per-step 'finite/loss' and 'finite/params' ([n] or [n, copies]); steps
  are numbered by the step count after them (the chunk's first is first_step + 1).
  """
  bad_loss = np.asarray(metrics['finite/loss']) < 1
  bad_params = np.asarray(metrics['finite/params']) < 1
  per_step = (bad_loss | bad_params).reshape(bad_loss.shape[0], -1).any(axis=1)
  if not per_step.any():
    return None
  i = int(np.argmax(per_step))
  metric = 'loss' if bad_loss.reshape(bad_loss.shape[0], -1)[i].any() else 'parameters'
  return first_step + i + 1, metric


def divergence_hint(config):
  """What to try after a divergence, naming the fields and their values."""
  oc = config.optim
  if oc.get('name') == 'lamb' and oc.get('lamb_lr', 0) > 0:
    lrs = [f'optim.lamb_lr (now {oc.lamb_lr:g})']
  else:
    lrs = [f'optim.lr (now {oc.lr:g})']
  lrs += [f'optim.groups.{g}.lr (now {v.lr:g})' for g, v in oc.get('groups', {}).items()
          if 'lr' in v]
  hint = 'lower ' + ', '.join(lrs)
  if oc.get('warmup_epochs', 0) == 0 and oc.get('warmup_fraction', 0) == 0:
    hint += ' or add a warm-up (optim.warmup_fraction)'
  return hint + ', and run it in another --workdir'


# Fields added to the configs after runs were recorded without them, each with the value that
# changes nothing (the behaviour before it existed): a record without the field holds it.
ADDED_FIELDS = {'optim.clip_grad_norm': 0.0, 'train.label_smoothing': 0.0,
                'train.grad_accumulation': 1, 'train.ema_decay': 0.0, 'model.drop_path_rate': 0.0,
                'augment.mixup_alpha': 0.0, 'augment.cutmix_alpha': 0.0, 'augment.mix_prob': 1.0,
                'augment.mix_switch_prob': 0.5, 'pretrained.name': '',
                # Before the field, XLA's attention everywhere: what 'auto' is on a CPU, where
                # every run so far was made.
                'model.remat': False, 'model.attention': 'auto'}


def config_diff(old, new, neutral=NEUTRAL_FIELDS):
  """[(field, old value, new value)] for every result-changing field that differs (a field
  of ADDED_FIELDS absent from `old` holds its value there)."""
  old, new = flat_config(old), flat_config(_jsonable(new))
  missing = object()
  out = []
  for field in sorted(set(old) | set(new)):
    if any(fnmatch.fnmatchcase(field, pattern) for pattern in neutral):
      continue
    a, b = old.get(field, ADDED_FIELDS.get(field, missing)), new.get(field, missing)
    if a != b:
      out.append((field, '(absent)' if a is missing else a, '(absent)' if b is missing else b))
  return out


def _jsonable(config_dict):
  return json.loads(json.dumps(plain(config_dict)))


def results_in(workdir):
  """What under `workdir` came from training: each checkpoints/ folder that holds a step and
  each summary.json (paths relative to `workdir`)."""
  found = []
  for root, dirs, files in os.walk(workdir):
    rel = os.path.relpath(root, workdir)
    if 'summary.json' in files:
      found.append(os.path.normpath(os.path.join(rel, 'summary.json')))
    if 'checkpoints' in dirs and os.listdir(os.path.join(root, 'checkpoints')):
      found.append(os.path.normpath(os.path.join(rel, 'checkpoints')) + '/')
    dirs[:] = [d for d in dirs if d != 'checkpoints']
  return sorted(found)


def check_resume(workdir, config_dict, filename='config.json', neutral=NEUTRAL_FIELDS):
  """Record `config_dict` in workdir/filename, or refuse if the workdir was started with a
  config that differs in a result-changing field (ResumeMismatchError naming each one).

  A workdir with nothing trained in it yet (an attempt that stopped before its first
  checkpoint, e.g. on missing data) takes the new config. One that holds checkpoints or
  results but no readable record of its config is refused (checks.Damaged): nothing could
  tell whether they belong to this config. The workdir is created; one that is a file is
  an error.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise checks.BadInput('the workdir is a file, not a directory', workdir,
                          'choose another --workdir (or move the file away)')
  path = os.path.join(workdir, filename)
  found = results_in(workdir) if os.path.isdir(workdir) else []
  if found:
    shown = ', '.join(found[:4]) + (f' and {len(found) - 4} more' if len(found) > 4 else '')
    ways_out = (f'put the record back (e.g. from a backup) to resume, or move {shown} out of '
                f'{workdir} to start over, or use another --workdir')
    if not os.path.exists(path):
      raise checks.Damaged(f'the workdir holds results ({shown}) but not the record of the '
                           f'config they were trained with ({filename})', path, ways_out)
    old = read_json(path, ways_out)
    if not isinstance(old, dict):
      raise checks.Damaged(f'{filename} is damaged: not a config record', path, ways_out)
    diff = config_diff(old, config_dict, neutral)
    if diff:
      changes = '; '.join(f'{field} {a!r} → {b!r}' for field, a, b in diff)
      raise ResumeMismatchError(
          f'the workdir was started with another config ({changes})', path,
          'use another --workdir for the new config, or rerun with the config it was '
          'started with to resume it')
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config_dict)


RESOLVED = 'resolved.json'
# Resolved values that make the experiment: a resume under other values is refused.
EXPERIMENT_VALUES = ('layout', 'copies', 'frozen_copies', 'seeds', 'train_examples',
                     'eval_examples', 'eval_split', 'steps_per_epoch', 'planned_steps')
# Values a record written before they were recorded holds implicitly: frozen parameters were
# then held once per model.
IMPLICIT_VALUES = {'frozen_copies': lambda old: old.get('copies')}
# Values that change only the last bits of the arithmetic (the order of sums over devices,
# the kernels of another platform or JAX): a resume under them is said, in one line.
MACHINE_VALUES = ('num_devices', 'platform', 'jax_version')


def check_resolved(workdir, resolved, log=None):
  """Record what the run resolved at its start (`resolved`: devices, examples, steps per epoch,
  seeds, workers, ...) in workdir/resolved.json, or compare a resumed run with the record:
  a value of EXPERIMENT_VALUES that differs is refused (ResumeMismatchError: the run would
  not be the one it was), a value of MACHINE_VALUES that differs is said in one line (the
  run goes on as the same experiment, but not bit for bit the uninterrupted one)."""
  log = log or (lambda line: print(line, file=sys.stderr))
  path = os.path.join(workdir, RESOLVED)
  if os.path.exists(path) and results_in(workdir):
    old = read_json(path, f'delete {path}: the rerun records the values it resolves anew')
    old = {**{k: f(old) for k, f in IMPLICIT_VALUES.items()}, **old}
    changed = [(k, old[k], resolved.get(k)) for k in EXPERIMENT_VALUES
               if k in old and old[k] != _jsonable(resolved.get(k))]
    if changed:
      what = '; '.join(f'{k} {a!r} → {b!r}' for k, a, b in changed)
      raise ResumeMismatchError(
          f'the run in the workdir resolved to another experiment ({what})', path,
          'resume it with the data and config it started with, or use another --workdir')
    moved = [(k, old[k], resolved.get(k)) for k in MACHINE_VALUES
             if k in old and old[k] != _jsonable(resolved.get(k))]
    if moved:
      log('note: resumed with ' + ', '.join(f'{k} {b} (started with {a})' for k, a, b in moved)
          + ': the same experiment, but sums run in another order, so it will not be bit for '
          'bit the uninterrupted run')
    return old
  os.makedirs(workdir, exist_ok=True)
  write_json(path, resolved)
  return resolved
