"""The command line: errors before anything is computed, and one real quick run."""

import json
import os
import subprocess
import sys

import pytest

from jaxlab import cli, experiments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = 'configs/distributed.py:quick'


def launch(*args, timeout=240):
  env = dict(os.environ, XLA_FLAGS='', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def check(*overrides):
  argv = ['launch.py', f'--config={os.path.join(ROOT, QUICK)}', *overrides]
  return cli.check_command_line(argv)


def test_unknown_field_names_valid_fields():
  with pytest.raises(cli.CommandLineError, match=r"optim has no 'lrr'.*lr, lr_floor"):
    check('--config.optim.lrr=0.1')


def test_wrong_type_is_named():
  with pytest.raises(cli.CommandLineError, match=r"'train.batch_size' is a int.*'abc'"):
    check('--config.train.batch_size=abc')


def test_unknown_variant_lists_variants():
  with pytest.raises(ValueError, match='centralized_sgdm, centralized_adamw, sgdm_augmented'):
    cli.load_config(os.path.join(ROOT, 'configs/distributed.py:nope'))


def test_good_overrides_pass():
  config = check('--config.optim.lr=0.1', '--config.progress=false')
  assert config.experiment == 'distributed'


@pytest.mark.parametrize('field,value,choices', [
    ('experiment', 'nope', 'distributed'),
    ('data.name', 'imagenet', 'digits, cifar10, cifar100'),
    ('optim.name', 'rmsprop', 'sgdm, adamw'),
])
def test_unknown_choice_lists_choices(field, value, choices):
  config = check()
  with config.unlocked():
    node, key = config, field.split('.')
    for k in key[:-1]:
      node = node[k]
    node[key[-1]] = value
  with pytest.raises(ValueError, match=choices):
    experiments.validate(config)


def test_launch_errors_are_one_clean_line(tmp_path):
  r = launch(f'--config={QUICK}', '--config.train.epochs=x', f'--workdir={tmp_path}')
  assert r.returncode != 0 and 'is a int' in r.stderr and 'Traceback' not in r.stderr
  r = launch(f'--config={QUICK}', '--config.data.name=cifar100', '--config.data.source=archive',
             f'--config.data.dir={tmp_path}/missing', f'--workdir={tmp_path}')
  assert r.returncode != 0 and 'cifar-100-python' in r.stderr and 'Traceback' not in r.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_quick_run_writes_its_files(tmp_path):
  # The distributed quick run: synchronous data parallelism and local SGD on 4 simulated devices.
  r = launch(f'--config={QUICK}', '--config.train.epochs=2', '--config.progress=false',
             f'--workdir={tmp_path}')
  assert r.returncode == 0, r.stderr[-2000:]
  sync = json.load(open(tmp_path / 'sync' / 'summary.json'))
  local = json.load(open(tmp_path / 'local_sgd' / 'summary.json'))
  # Every example every epoch: 1437 training images are 23 steps of 64 (the last one partial).
  assert sync['num_devices'] == 4 and sync['steps'] == 2 * 23 and sync['eval_split'] == 'test'
  # 4 workers, each on its own quarter (359 or 360) of the 1437 training images: 6 steps of 64
  # per epoch; averages after step 8 and at the end.
  assert local['workers'] == 4 and local['steps'] == 2 * 6 and local['comm_rounds'] == 2
  assert sync['acc1'] > 0.5  # two epochs of LeNet on digits are far above chance (0.1)
  for arm in ('sync', 'local_sgd'):
    assert os.path.exists(tmp_path / arm / 'config.json')
    assert os.listdir(tmp_path / arm / 'checkpoints')
  assert os.path.exists(tmp_path / 'comparison.md') and '| local_sgd | 4 | 8 |' in r.stdout
