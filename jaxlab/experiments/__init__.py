"""Experiment families by name: each module has `run(config, workdir) -> summary`."""

import importlib

from jaxlab.data.augment import NORMALIZATIONS
from jaxlab.data.datasets import DATASETS, SOURCES
from jaxlab.io.checkpoint import PARAMS
from jaxlab.models import MODELS
from jaxlab.optim.optimizers import OPTIMIZERS
from jaxlab.optim.schedules import DECAY_SHAPES, SCHEDULES
from jaxlab.train import guards

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
    ('optim.decay_shape', DECAY_SHAPES),
    ('augment.normalization', tuple(NORMALIZATIONS)),
    ('checkpoint.params', PARAMS),
)


def _get(config, dotted):
  for key in dotted.split('.'):
    config = config[key]
  return config


def validate(config):
  """Raise ValueError naming the valid choices for any field outside them."""
  for field, choices in CHOICES:
    value = _get(config, field)
    if value not in choices:
      raise ValueError(f'unknown {field} {value!r}; choose one of {", ".join(choices)} '
                       f'(--config.{field}=...)')
  module = importlib.import_module(EXPERIMENTS[config.experiment])
  if hasattr(module, 'validate'):
    module.validate(config)


# What the workdir of a launch records: the config as launched (after command-line overrides).
LAUNCH_CONFIG = 'launch_config.json'


def run(config, workdir):
  """Validate `config` and run its experiment family in `workdir`.

  The workdir remembers the config it was started with (launch_config.json; each
  run inside it also keeps its own effective config.json): a rerun with a config
  that differs in a result-changing field is refused before anything is loaded.
  """
  validate(config)
  guards.check_resume(workdir, config.to_dict(), LAUNCH_CONFIG,
                      guards.NEUTRAL_FIELDS + guards.SWEEP_FIELDS)
  return importlib.import_module(EXPERIMENTS[config.experiment]).run(config, workdir)
