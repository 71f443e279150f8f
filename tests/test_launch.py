"""The command line: errors before anything is computed, and one real quick run."""

import os
import subprocess
import sys

import pytest

from jaxlab import cli, experiments
import xla_flags  # tests/xla_flags.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = 'configs/distributed.py:quick'


def launch(*args, timeout=240):
  env = dict(os.environ, XLA_FLAGS=xla_flags.for_command(), PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def check(*overrides):
  argv = ['launch.py', f'--config={os.path.join(ROOT, QUICK)}', *overrides]
  return cli.check_command_line(argv)


def test_unknown_field_names_valid_fields():
  with pytest.raises(cli.CommandLineError, match=r"optim has no 'lrr'.*lr, lr_floor"):
    check('--config.optim.lrr=0.1')


def test_wrong_type_is_named():
  with pytest.raises(cli.CommandLineError, match=r"'abc' is not a valid int.*'train.batch_size' is an int"):
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
  assert r.returncode == 2 and 'is an int' in r.stderr and 'Traceback' not in r.stderr
  r = launch(f'--config={QUICK}', '--config.data.name=cifar100', '--config.data.source=archive',
             f'--config.data.dir={tmp_path}/missing', f'--workdir={tmp_path}')
  assert r.returncode != 0 and 'cifar-100-python' in r.stderr and 'Traceback' not in r.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_a_device_count_in_the_environment_beats_the_configs_default(monkeypatch):
  from jaxlab import launch
  monkeypatch.delenv('JAX_NUM_CPU_DEVICES', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert launch._env_device_count(['launch.py', f'--config={QUICK}'])
  # ... unless the command line asks for simulated devices itself.
  assert not launch._env_device_count(['launch.py', '--config.simulated_cpu_devices=4'])
  monkeypatch.setenv('XLA_FLAGS', '')
  assert not launch._env_device_count(['launch.py', f'--config={QUICK}'])
  monkeypatch.setenv('JAX_NUM_CPU_DEVICES', '2')
  assert launch._env_device_count(['launch.py', f'--config={QUICK}'])
