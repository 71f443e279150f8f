"""What a run reads is declared once, beside the code that reads it: every optimizer, schedule,
averaging mode and family has a declaration, and each builder reads exactly what it declares
(recorded through a config that notes every field asked for)."""

import importlib

import jax.numpy as jnp
import ml_collections
import pytest

from configs.common import base_config
from jaxlab import checks, experiments
from jaxlab.optim import averaging, optimizers, schedules
from jaxlab.train import guards


class Recording:
  """A ConfigDict that records the name of each field read from it."""

  def __init__(self, config):
    object.__setattr__(self, '_config', config)
    object.__setattr__(self, 'read', set())

  def __getattr__(self, name):
    self.read.add(name)
    return getattr(self._config, name)

  def __getitem__(self, name):
    self.read.add(name)
    return self._config[name]

  def __contains__(self, name):
    self.read.add(name)
    return name in self._config

  def get(self, name, default=None):
    self.read.add(name)
    return self._config.get(name, default)


def optim_config(**fields):
  c = base_config().optim
  c.large_batch_form = 'textbook'
  c.record_last_grads = False
  c.update(fields)
  return c


LABELS = {'w': 'base', 'b': 'base'}


@pytest.mark.parametrize('name', optimizers.OPTIMIZERS)
def test_each_optimizer_reads_what_it_declares(name):
  read = set()
  for form in optimizers.LARGE_BATCH_FORMS:  # lars reads nesterov in one form only
    cfg = Recording(optim_config(name=name, schedule='constant', large_batch_form=form))
    optimizers.optimizer_from_config(cfg, LABELS, 10, 5)
    read |= cfg.read
  assert read - set(optimizers.COMMON_READS) == set(optimizers.OPTIMIZER_READS[name])


@pytest.mark.parametrize('kind', schedules.SCHEDULES)
def test_each_schedule_reads_what_it_declares(kind):
  cfg = Recording(optim_config(schedule=kind, warmup_fraction=0.0, warmup_epochs=1.0))
  fn = schedules.schedule_from_config(cfg, 0.1, 100, 10)
  assert jnp.isfinite(fn(50))
  assert cfg.read - {'schedule'} == set(schedules.SCHEDULE_READS[kind])
  # The optimizer reads the same of it.
  cfg = Recording(optim_config(name='sgd', schedule=kind, warmup_fraction=0.0))
  optimizers.optimizer_from_config(cfg, LABELS, 100, 10)
  assert cfg.read - set(optimizers.COMMON_READS) == set(schedules.SCHEDULE_READS[kind])


def test_the_builders_accept_only_declared_names():
  labels = {'w': 'base'}
  with pytest.raises(ValueError, match='unknown optimizer'):
    optimizers.optimizer_from_config(optim_config(name='rmsprop'), labels, 10, 5)
  with pytest.raises(ValueError, match='unknown schedule'):
    schedules.make_schedule('linear', 1.0, 10)
  assert optimizers.OPTIMIZERS == tuple(optimizers.OPTIMIZER_READS)
  assert schedules.SCHEDULES == tuple(schedules.SCHEDULE_READS)
  assert set(schedules.EPOCH_SCHEDULES) <= set(schedules.SCHEDULES)


def test_every_declared_field_has_its_values_declared():
  for reads, fields in ((optimizers.OPTIMIZER_READS, optimizers.FIELDS),
                        (schedules.SCHEDULE_READS, schedules.FIELDS),
                        (averaging.READS, averaging.FIELDS)):
    assert {f for names in reads.values() for f in names} <= set(fields)


@pytest.mark.parametrize('every', [0, 5])
def test_averaging_reads_what_its_mode_declares(every):
  cfg = Recording(ml_collections.ConfigDict(dict(every_steps=every, start_fraction=0.5,
                                                 window=0)))
  averaging.from_config(cfg, 100)
  assert cfg.read == set(averaging.READS[averaging.mode(cfg._config)])


@pytest.mark.parametrize('override,field', [
    ('optim.large_batch_form', 'optim.large_batch_form'),  # sgdm reads no large-batch form
    ('optim.warmup_epochs', 'optim.warmup_epochs'),  # cosine_epoch has no warm-up
    ('optim.decay_shape', 'optim.decay_shape'),
])
def test_an_override_no_declaration_reads_is_refused(override, field):
  c = importlib.import_module('configs.distributed').get_config('quick')
  assert (c.optim.name, c.optim.schedule) == ('sgdm', 'cosine_epoch')
  with pytest.raises(checks.BadInput, match='would have no effect') as e:
    experiments.validate(c, {override}, devices=1)
  assert e.value.where == f'--config.{field}'


def test_whd_latent_space_says_why_it_reads_no_decay_start():
  c = importlib.import_module('configs.mhc').get_config('quick')
  assert c.optim.schedule == 'whd_latent_space'
  with pytest.raises(checks.BadInput, match='cooldown at') as e:
    experiments.validate(c, {'optim.decay_start_fraction'}, devices=1)
  assert 'only the schedules whd read it' in e.value.fix


FAMILY_CONFIGS = {'distributed': 'distributed', 'peft': 'hybrid', 'ladder': 'ladder',
                  'mhc': 'mhc'}


@pytest.mark.parametrize('experiment', list(experiments.EXPERIMENTS))
def test_each_family_declares_every_field_its_configs_hold(experiment):
  """Every field of the family's configs is shared (configs/common.py), read by the
  optimizers, or declared by the family; what it calls neutral it reads."""
  import fnmatch  # pylint: disable=g-import-not-at-top
  family = importlib.import_module(experiments.EXPERIMENTS[experiment]).FIELDS
  declared = (set(guards.flat_config(base_config().to_dict())) | {
      f'optim.{f}' for f in (*optimizers.COMMON_READS, *optimizers.FIELDS)})
  patterns = family.reads + guards.NEUTRAL_FIELDS + ('optim.groups.*',)
  module = importlib.import_module(f'configs.{FAMILY_CONFIGS[experiment]}')
  for variant in module.VARIANTS:
    for field in guards.flat_config(module.get_config(variant).to_dict()):
      assert field in declared or any(fnmatch.fnmatchcase(field, p) for p in patterns), (
          f'{variant}: {field} is read by nobody that says so')
  for field in family.neutral + family.cells + tuple(family.ranges):
    assert any(fnmatch.fnmatchcase(field, p) for p in family.reads), field


def test_resume_ignores_what_the_family_calls_neutral():
  importlib.import_module('jaxlab.experiments.peft')
  old = {'peft': {'diagnostics': True, 'rank': 4}, 'progress': True}
  changed = {'peft': {'diagnostics': False, 'rank': 4}, 'progress': False}
  assert guards.config_diff(old, changed, guards.neutral_fields('peft')) == []
  assert guards.config_diff(old, changed, guards.NEUTRAL_FIELDS) == [
      ('peft.diagnostics', True, False)]
  assert 'sweep.runs' in guards.neutral_fields('peft', launch=True)
  assert 'sweep.runs' not in guards.neutral_fields('peft')


@pytest.mark.parametrize('name,source,field,fix', [
    ('digits', 'tfds', 'data.label', 'cifar10 or cifar100'),
    ('digits', 'tfds', 'data.source', 'cifar10 or cifar100'),
    ('cifar10', 'tfds', 'data.dir', '--config.data.source=archive'),
    ('cifar10', 'archive', 'data.tfds_dir', '--config.data.source=tfds'),
])
def test_a_data_field_its_origin_does_not_read_is_refused(name, source, field, fix):
  c = importlib.import_module('configs.distributed').get_config('quick')
  c.data.update(name=name, source=source)
  with pytest.raises(checks.BadInput, match='would have no effect') as e:
    experiments.validate(c, {field}, devices=1)
  assert e.value.where == f'--config.{field}' and fix in e.value.fix
  experiments.validate(c, set(), devices=1)


@pytest.mark.parametrize('name', optimizers.OPTIMIZERS)
def test_the_distributed_family_reads_lambs_own_fields_under_lamb_alone(name):
  from jaxlab.experiments import distributed  # pylint: disable=g-import-not-at-top
  c = importlib.import_module('configs.distributed').get_config('quick').optim
  c.name = name
  cfg = Recording(c)
  distributed.base_lr(cfg), distributed.weight_decay_of(cfg)
  lamb = {f for f in cfg.read if f.startswith('lamb')}
  assert lamb == (set(distributed.LAMB_READS) if name == 'lamb' else set())
