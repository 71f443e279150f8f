"""Experiment families by name: each module has `run(config, workdir) -> summary`."""

import importlib
import os
import shutil

from jaxlab import checks
from jaxlab.data.augment import NORMALIZATIONS
from jaxlab.data.datasets import DATASETS, SOURCES
from jaxlab.experiments import preflight
from jaxlab.io import lock, trackers
from jaxlab.io.checkpoint import PARAMS
from jaxlab.models import MODELS
from jaxlab.optim.optimizers import OPTIMIZERS
from jaxlab.optim.schedules import SCHEDULES
from jaxlab.train import guards, sweep

EXPERIMENTS = {
    'distributed': 'jaxlab.experiments.distributed',
    'peft': 'jaxlab.experiments.peft',
    'ladder': 'jaxlab.experiments.ladder',
    'mhc': 'jaxlab.experiments.mhc',
}

# (dotted config field, valid values) checked before anything is computed.
CHOICES = (
    ('experiment', tuple(EXPERIMENTS)),
    ('data.name', DATASETS),
    ('data.source', SOURCES),
    ('model.name', MODELS),
    ('optim.name', OPTIMIZERS),
    ('optim.schedule', SCHEDULES),
    ('augment.normalization', tuple(NORMALIZATIONS)),
    ('checkpoint.params', PARAMS),
)


def validate(config, overridden=(), devices=None):
  """Raise checks.BadInput for the first field outside its range or choices, or a relation
  between fields that cannot hold (a batch the devices cannot split, a warm-up longer than
  the run, ...), before anything is loaded or computed. `overridden`: the dotted fields the
  command line set, so that an override the config would ignore (a field a sweep sets per
  run) is an error too. `devices`: the devices the run's mesh spans (default: all of them)."""
  for field, choices in CHOICES:
    checks.one_of(config, field, choices)
  preflight.check_fields(config)
  preflight.check_unread(config, frozenset(overridden))
  if devices is None:
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.device_count()
  preflight.check_divisible(config, 'train.eval_batch_size', devices)
  family = family_module(config)
  for field, spec in family.FIELDS.ranges.items():
    if checks.has(config, field):
      spec(config, field)
  family.validate(config, frozenset(overridden), devices)
  sweep.check_only(sweep.only_of(config), family.cell_names(config))


def check_files(config, workdir):
  """The workdir, the data's files, the family's own inputs (pretrained weights) and any
  checkpoint a rerun would restore: checks.BadInput naming the path."""
  preflight.check_workdir(workdir)
  family = family_module(config)
  missing = []  # data and weights that are not here: reported together
  for check in (preflight.check_data, getattr(family, 'check_files', None)):
    try:
      if check:
        check(config)
    except checks.Missing as e:
      missing.append(e)
  if len(missing) == 1:
    raise missing[0]
  if missing:
    raise checks.Missing(' and '.join(e.what for e in missing),
                         '; '.join(e.where for e in missing),
                         ' | '.join(e.fix for e in missing))
  preflight.check_checkpoints(workdir)


# What the workdir of a launch records: the config as launched (after command-line overrides).
LAUNCH_CONFIG = 'launch_config.json'


def family_module(config):
  """The module of `config.experiment`'s family (imported on first use)."""
  return importlib.import_module(EXPERIMENTS[config.experiment])


def run(config, workdir, overridden=()):
  """Validate `config` and the files it names, then run its experiment family in `workdir`.

  The workdir remembers the config it was started with (launch_config.json; each
  run inside it also keeps its own effective config.json): a rerun with a config
  that differs in a result-changing field is refused before anything is loaded.
  The workdir is locked for the run (a second launch on it is refused; sweep.only jobs
  share it with each other, each holding its own cell's sub-workdir alone), and a launch
  that fails on bad input before anything trained leaves the workdir as it found it
  (unless other jobs are at work in it).
  """
  validate(config, overridden)
  check_files(config, workdir)
  before = _paths(workdir)
  try:
    with lock.hold(workdir, shared=bool(sweep.only_of(config))):
      with lock.serial(workdir):  # sweep.only jobs check and record the launch one at a time
        guards.check_resume(workdir, config.to_dict(), LAUNCH_CONFIG,
                            guards.neutral_fields(config.experiment, launch=True))
      result = family_module(config).run(config, workdir)
      trackers.log_workdir_files(workdir, config)  # the figures and tables, where tracked
      return result
  except ValueError:  # bad input found late (e.g. by the data): nothing of it stays
    if not guards.results_in(workdir) and lock.free(workdir):
      _remove_new(workdir, before)
    raise


def _paths(workdir):
  """Every path under `workdir` (None when it does not exist)."""
  if not os.path.isdir(workdir):
    return None
  return {os.path.join(root, name) for root, dirs, files in os.walk(workdir)
          for name in dirs + files}


def _remove_new(workdir, before):
  """Remove what appeared under `workdir` since `_paths` gave `before` (all of it, the
  workdir too, when it did not exist)."""
  if before is None:
    shutil.rmtree(workdir, ignore_errors=True)
    return
  for path in sorted(_paths(workdir) - before, key=len, reverse=True):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
      os.remove(path)
