"""Every bad input gets one line before anything runs (issue 16).

Each case is a command line a user might type, for one of the four families. It goes through
the `jaxlab` command's own entry point (jaxlab.launch.console: flag parsing, the config's
checks, the files' checks) in this process, and must:
  - exit with code 2 (4 for a damaged checkpoint: the workdir's files, not the config) and
    print one line `error: <what> (<field or path>): <fix>` on stderr, naming the field or
    the path;
  - not reach the family's run (each family's `run` is replaced by one that fails the test),
    and compile nothing (no XLA compile event while it runs);
  - leave the workdir as it was (a new one is not created; an old one keeps its files).
A few cases run as real processes too (exit code, no traceback; --verbosity=1 shows it).
Devices: the checks are shown 4 (jax.device_count patched; conftest simulates 8), the count
that distributed:quick simulates as a process.
"""

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags

from jaxlab import experiments, launch
from tests.test_headline import write_augreg_npz, write_cifar100
import xla_flags  # tests/xla_flags.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D, H, L, M = 'distributed:quick', 'hybrid:quick', 'ladder:quick', 'mhc:quick'
# hybrid:quick's ViT (patch 8, width 64, depth 4, 8 heads, MLP 128, 32 px) as AugReg weights.
DEVICES = 4
QUICK_VIT = dict(depth=4, width=64, heads=8, mlp_dim=128, patch=8, image_size=32, num_classes=10)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Inputs of the file cases: archives, weights, a plain file, a workdir with a broken step."""
  root = tmp_path_factory.mktemp('bad_input')
  partial = root / 'partial'
  write_cifar100(partial)
  os.remove(partial / 'cifar-100-python' / 'test')
  truncated = root / 'truncated'
  write_cifar100(truncated)
  train = truncated / 'cifar-100-python' / 'train'
  train.write_bytes(train.read_bytes()[:-100])
  weights = write_augreg_npz(root / 'vit.npz', **QUICK_VIT)
  narrow = write_augreg_npz(root / 'narrow.npz', **{**QUICK_VIT, 'width': 32, 'heads': 4})
  arrays = dict(np.load(weights))
  del arrays['Transformer/encoderblock_3/MlpBlock_3/Dense_1/kernel']
  np.savez(root / 'missing_key.npz', **arrays)
  (root / 'corrupt.npz').write_bytes(b'PK not really a zip archive')
  (root / 'corrupt.safetensors').write_bytes(b'\xff' * 8 + b'{"a": 1}')
  (root / 'a_file').write_text('not a directory')
  # A workdir whose latest checkpoint lost its tree metadata (an interrupted copy).
  broken = root / 'broken_run' / 'sync' / 'checkpoints'
  (broken / '40' / 'default').mkdir(parents=True)
  (broken / '40' / 'commit_success.txt').write_text('done')
  return {'root': root, 'partial': partial, 'truncated': truncated, 'weights': weights,
          'narrow': narrow}


def _case(config, *args, names, workdir=None, code=launch.BAD_INPUT):
  return dict(config=config, args=list(args), names=names, workdir=workdir, code=code)


# (id, case). `names`: what the message must name (a field, or a path under the files fixture
# written as '{root}/...'). The first eight are the table.
CASES = {
    # The table.
    'epochs_negative': _case(D, '--config.train.epochs=-1', names='train.epochs'),
    'batch_zero': _case(D, '--config.train.batch_size=0', names='train.batch_size'),
    'lr_negative': _case(D, '--config.optim.lr=-0.1', names='optim.lr'),
    'workdir_is_file': _case(D, names='{root}/a_file', workdir='{root}/a_file'),
    'eval_batch_indivisible': _case(D, '--config.train.eval_batch_size=7',
                                    names='train.eval_batch_size'),
    'unknown_schedule': _case(D, '--config.optim.schedule=linear', names='optim.schedule'),
    'method_ignored_by_sweep': _case(H, '--config.peft.method=norm', names='peft.method'),
    'weights_not_npz': _case(H, '--config.pretrained.source=npz',
                             '--config.pretrained.path={root}/corrupt.npz',
                             names='{root}/corrupt.npz'),
    # distributed
    'momentum_one': _case(D, '--config.optim.momentum=1.0', names='optim.momentum'),
    'workers_indivisible': _case(D, '--config.local.workers=3', names='local.workers'),
    'method_ignored_by_arms': _case(D, '--config.local.method=slowmo', names='local.method'),
    'grid_cell_bad_lr': _case(D, '--config.grid=optim.lr=0.1,-1', names='optim.lr'),
    'grid_field_also_set': _case(D, '--config.grid=optim.lr=0.1,0.2', '--config.optim.lr=0.3',
                                 names='optim.lr'),
    'erasing_p_above_one': _case(D, '--config.augment.erasing_p=1.5', names='augment.erasing_p'),
    'validation_fraction_one': _case(D, '--config.data.validation_fraction=1.0',
                                     names='data.validation_fraction'),
    'warmup_longer_than_run': _case(D, '--config.optim.schedule=warmup_cosine',
                                    '--config.optim.warmup_epochs=8', names='optim.warmup_epochs'),
    'aug_set_ignores_padding': _case('distributed', '--config.augment.crop_padding=0',
                                     names='augment.crop_padding'),
    'unknown_lr_scaling': _case(D, '--config.optim.lr_scaling=cube', names='optim.lr_scaling'),
    'unknown_field': _case(D, '--config.train.batchsize=64', names='train.batchsize'),
    'wrong_type': _case(D, '--config.train.batch_size=abc', names='train.batch_size'),
    'partial_archive': _case(D, '--config.data.name=cifar100', '--config.data.source=archive',
                             '--config.data.dir={root}/partial', names='{root}/partial'),
    'truncated_archive': _case(D, '--config.data.name=cifar100', '--config.data.source=archive',
                               '--config.data.dir={root}/truncated', names='{root}/truncated'),
    'checkpoint_unreadable': _case(D, names='{root}/broken_run/sync/checkpoints/40',
                                   workdir='{root}/broken_run', code=launch.ENVIRONMENT),
    'workdir_under_a_file': _case(D, names='{root}/a_file/run', workdir='{root}/a_file/run'),
    'adam_setting_under_sgdm': _case(D, '--config.optim.b2=0.99', names='optim.b2'),
    'warmup_under_cosine': _case(D, '--config.optim.warmup_epochs=1', names='optim.warmup_epochs'),
    'lamb_lr_under_sgdm': _case(D, '--config.optim.lamb_lr=0.001', names='optim.lamb_lr'),
    'slowmo_beta_without_slowmo': _case(D, '--config.local.slowmo_beta=0.5',
                                        names='local.slowmo_beta'),
    'data_dir_under_tfds': _case('distributed', '--config.data.dir=/somewhere',
                                 names='data.dir'),
    # peft
    'weights_path_without_source': _case(H, '--config.pretrained.path={root}/vit.npz',
                                         names='pretrained.path'),
    'weights_wrong_width': _case(H, '--config.pretrained.source=npz',
                                 '--config.pretrained.path={root}/narrow.npz',
                                 names='{root}/narrow.npz'),
    'weights_missing_key': _case(H, '--config.pretrained.source=npz',
                                 '--config.pretrained.path={root}/missing_key.npz',
                                 names='{root}/missing_key.npz'),
    'weights_not_safetensors': _case(H, '--config.pretrained.source=timm',
                                     '--config.pretrained.path={root}/corrupt.safetensors',
                                     names='{root}/corrupt.safetensors'),
    'weights_absent': _case(H, '--config.pretrained.source=npz',
                            '--config.pretrained.path={root}/nowhere.npz',
                            names='{root}/nowhere.npz'),
    'weights_path_empty': _case(H, '--config.pretrained.source=timm', names='pretrained.path'),
    'lora_block_outside_depth': _case(H, "--config.sweep.runs=('hybrid_layerwise/explicit',)",
                                      '--config.peft.lora_blocks=(7,)', names='peft.lora_blocks'),
    'classes_outside_data': _case(H, '--config.data.classes=(5, 12)', names='data.classes'),
    'image_not_multiple_of_patch': _case(H, '--config.model.image_size=30',
                                         names='model.image_size'),
    'heads_do_not_divide_width': _case(H, '--config.model.heads=5', names='model.heads'),
    'float16_compute': _case(H, '--config.model.dtype=float16', names='model.dtype'),
    'float16_mhc': _case(M, '--config.model.dtype=float16', names='model.dtype'),
    'dropout_one': _case(H, '--config.peft.dropout=1.0', names='peft.dropout'),
    'flip_ignored_by_recipe': _case(H, '--config.augment.flip=true', names='augment.flip'),
    'depth_ignored_by_variant': _case('hybrid', '--config.model.depth=6', names='model.depth'),
    # ladder
    'k_beyond_depth': _case(L, '--config.credit.ks=(0, 5)', names='credit.ks'),
    'unknown_rule': _case(L, "--config.credit.rules=('bp', 'xx')", names='credit.rules'),
    'no_seeds': _case(L, '--config.seeds=()', names='seeds'),
    'width_zero': _case(L, '--config.model.width=0', names='model.width'),
    'batch_indivisible': _case(L, '--config.train.batch_size=10', names='train.batch_size'),
    # mhc
    'unknown_arm': _case(M, "--config.mhc.arms=('regular', 'bogus')", names='mhc.arms'),
    'residual_ignored_by_arms': _case(M, '--config.model.residual=static',
                                      names='model.residual'),
    'streams_under_regular_only': _case(M, "--config.mhc.arms=('regular',)",
                                        '--config.model.hc.streams=2', names='model.hc.streams'),
    'tau_zero': _case(M, '--config.model.hc.tau=0.0', names='model.hc.tau'),
    'no_streams': _case(M, '--config.model.hc.streams=0', names='model.hc.streams'),
    'warmup_after_decay': _case(M, '--config.optim.schedule=whd', '--config.optim.warmup_fraction=0.9',
                                names='optim.warmup_fraction'),
    'decay_start_under_whd_latent_space': _case(M, '--config.optim.decay_start_fraction=0.5',
                                                names='optim.decay_start_fraction'),
    'image_size_not_the_data': _case(M, '--config.model.image_size=64', names='model.image_size'),
    'rope_head_width': _case(M, '--config.model.heads=32', names='model.heads'),
}


class _Ran(Exception):
  pass


@pytest.fixture
def guarded(monkeypatch):
  """Each family's run replaced by one that records the call; XLA compiles counted."""
  ran, compiles = [], []
  monkeypatch.setattr(jax, 'device_count', lambda: DEVICES)
  for module in experiments.EXPERIMENTS.values():
    family = __import__(module, fromlist=['run'])
    monkeypatch.setattr(family, 'run', lambda *a, **k: ran.append(a) or {})

  def on_event(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(event)
  jax.monitoring.register_event_duration_secs_listener(on_event)
  yield ran, compiles
  jax.monitoring.unregister_event_duration_listener(on_event)


def _tree(path):
  if not os.path.exists(path):
    return None
  if not os.path.isdir(path):
    return ('file', os.path.getsize(path))
  return sorted((os.path.relpath(os.path.join(r, f), path), os.path.getsize(os.path.join(r, f)))
                for r, _, fs in os.walk(path) for f in fs + [''])


def run_console(argv, capsys):
  """(exit code, stderr) of the jaxlab command with `argv`, in this process."""
  saved = sys.argv[:]
  sys.argv[:] = ['jaxlab', *argv]
  try:
    with pytest.raises(SystemExit) as exit_info:
      launch.console()
  finally:
    sys.argv[:] = saved
    # absl defines a flag per config field at each parse: forget them for the next case.
    for flag_name in [n for n in flags.FLAGS if n.startswith('config.')]:
      delattr(flags.FLAGS, flag_name)
    flags.FLAGS.unparse_flags()
  code = exit_info.value.code
  return (0 if code is None else code), capsys.readouterr().err


def test_there_are_enough_cases():
  assert len(CASES) >= 30
  assert {c['config'].split(':')[0] for c in CASES.values()} >= {'distributed', 'hybrid',
                                                                 'ladder', 'mhc'}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_is_one_line_before_anything_runs(name, files, guarded, capsys, tmp_path):
  case = CASES[name]
  fill = lambda s: s.replace('{root}', str(files['root']))
  workdir = fill(case['workdir']) if case['workdir'] else str(tmp_path / 'run')
  argv = [f'--config={case["config"]}', f'--workdir={workdir}', '--config.progress=false',
          *map(fill, case['args'])]
  before = _tree(workdir)
  code, err = run_console(argv, capsys)
  ran, compiles = guarded
  lines = err.strip().splitlines()
  shown = 'jaxlab ' + ' '.join(argv)
  assert code == case['code'], f'{shown}: exit {code}\n{err}'
  assert len(lines) == 1 and lines[0].startswith('error: '), f'{shown}:\n{err}'
  named = fill(case['names'])
  assert f'({named}' in lines[0] or f'(--config.{named}' in lines[0] or named in lines[0], (
      f'{shown}: the message does not name {named}:\n{lines[0]}')
  assert '): ' in lines[0], f'not "error: <what> (<where>): <fix>": {lines[0]}'
  assert not ran, f'{shown}: the family ran'
  assert not compiles, f'{shown}: {len(compiles)} XLA compiles before the error'
  assert _tree(workdir) == before, f'{shown}: the workdir changed'


def _launch(*args):
  env = dict(os.environ, XLA_FLAGS=xla_flags.for_command(), PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_as_a_process_one_line_and_exit_2_traceback_on_request(tmp_path):
  workdir = tmp_path / 'run'
  args = [f'--config={D}', f'--workdir={workdir}', '--config.train.batch_size=0']
  r = _launch(*args)
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [
      'error: train.batch_size is 0; it must be at least 1 (--config.train.batch_size): '
      'set --config.train.batch_size to 1 or more'], r.stderr
  assert not workdir.exists()
  r = _launch(*args, '--verbosity=1')
  assert r.returncode != 0 and 'Traceback' in r.stderr and 'BadInput' in r.stderr, r.stderr[-2000:]
  assert not workdir.exists()


def test_a_sound_config_passes_every_check(files):
  """The checks do not refuse what the families' own configs and the files above give."""
  from jaxlab import cli
  for spec in ('distributed:quick', 'distributed', 'distributed:large_batch', 'distributed:diloco',
               'distributed:post_local', 'distributed:tune_adamw', 'hybrid:quick', 'hybrid',
               'hybrid:table', 'hybrid:alt50', 'ladder:quick', 'ladder', 'mhc:quick', 'mhc',
               'mhc:average,quick', 'mhc:n1'):
    config = cli.load_config(spec)
    experiments.validate(config, devices=4 if spec.startswith('distributed') else 1)
  config = cli.load_config('hybrid:quick')
  with config.unlocked():
    config.pretrained.update(source='npz', path=str(files['weights']))
  experiments.check_files(config, str(files['root'] / 'fresh'))
  with contextlib.suppress(FileNotFoundError):
    os.rmdir(files['root'] / 'fresh')
  assert pathlib.Path(files['weights']).is_file()


def test_a_checkpoint_orbax_cannot_restore_names_the_step(tmp_path):
  """Files that look whole but do not decode: orbax's reader names the step before the run, and
  the restore's error names the step folder and how to go on."""
  import jax.numpy as jnp
  from jaxlab.checks import Damaged
  from jaxlab.io.checkpoint import Checkpointer, unreadable_latest
  state = {'w': jnp.ones((4, 4)), 'b': jnp.zeros(3)}
  saver = Checkpointer(tmp_path, 1, 2)
  saver.save(2, state, force=True)
  saver.close()
  (tmp_path / '2' / 'default' / 'manifest.ocdbt').write_bytes(b'garbage')
  # orbax's metadata reader decodes the manifest too: the check before a run finds it ...
  step, folder, reason = unreadable_latest(str(tmp_path))
  assert (step, folder) == (2, str(tmp_path / '2')) and 'Error decoding' in reason
  # ... and the restore, were it reached, names the step the same way.
  with pytest.raises(Damaged) as e:
    Checkpointer(tmp_path, 1, 2).restore(state)
  assert e.value.where == str(tmp_path / '2') and 'checkpoint step 2' in e.value.what
  assert f'delete {tmp_path / "2"}' in e.value.fix and '\n' not in str(e.value)


@pytest.mark.parametrize('damage', ['metadata_removed', 'metadata_garbled', 'item_removed'])
def test_a_checkpoint_whose_metadata_orbax_cannot_read_is_named_before_the_run(tmp_path, damage):
  """The latest step's tree metadata gone or garbled, or its whole item: orbax's own reader
  (a read-only CheckpointManager) finds it, and preflight names the step; the step before
  it is intact and listed."""
  import jax.numpy as jnp
  from jaxlab.checks import Damaged
  from jaxlab.experiments import preflight
  from jaxlab.io.checkpoint import Checkpointer, saved_steps, unreadable_latest
  ckpts = tmp_path / 'run' / 'checkpoints'
  saver = Checkpointer(ckpts, 1, 3)
  for step in (1, 2):
    saver.save(step, {'w': jnp.ones((4, 4))}, force=True)
  saver.close()
  assert saved_steps(str(ckpts)) == [1, 2] and unreadable_latest(str(ckpts)) is None
  item = ckpts / '2' / 'default'
  if damage == 'metadata_removed':
    (item / '_METADATA').unlink()
  elif damage == 'metadata_garbled':
    (item / '_METADATA').write_text('{garbage')
  else:
    shutil.rmtree(item)
  step, folder, reason = unreadable_latest(str(ckpts))
  assert (step, folder) == (2, str(ckpts / '2')) and reason
  with pytest.raises(Damaged) as e:
    preflight.check_checkpoints(str(tmp_path))
  assert 'checkpoint step 2 cannot be read' in e.value.what and e.value.where == str(ckpts / '2')
  assert f'delete {ckpts / "2"}' in e.value.fix and '\n' not in str(e.value)


# ---------------------------------------------------------------------------------------------
# The package's other command-line tools report the same way: one line, exit 2 for bad input
# (4 for a damaged file).


def _tool_exit(main, argv, capsys):
  """(exit code, stderr) of a tool's main(argv): returned, or raised by its parser."""
  try:
    code = main(argv)
  except SystemExit as e:
    code = e.code
  return code, capsys.readouterr().err


@pytest.mark.parametrize('tool', ['export', 'claims', 'record', 'prepare'])
def test_every_tool_reports_bad_input_in_one_line_with_exit_2(tool, tmp_path, capsys):
  from jaxlab import claims, export
  from jaxlab.data import prepare
  from jaxlab.io import record
  main = {'export': export.main, 'claims': claims.main, 'record': record.main,
          'prepare': prepare.main}[tool]
  nowhere = str(tmp_path / 'nowhere')
  cases = {  # a command line the parser refuses, and one whose input is not there
      'export': (['--workdir', nowhere], ['--workdir', nowhere, '--format', 'timm', '--out',
                                           str(tmp_path / 'x')]),
      'claims': (['--out'], [nowhere]),
      'record': ([], [nowhere]),
      'prepare': (['--dataset=mnist'], None),
  }[tool]
  for argv in filter(None, cases):
    code, err = _tool_exit(main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: '), (argv, code, err)
  assert not os.path.exists(nowhere)


def test_a_damaged_record_is_one_line_with_exit_4(tmp_path, capsys):
  from jaxlab.io import record
  for name in ('a', 'b'):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'record.json').write_text('{"title": "cut sho')
  code, err = _tool_exit(record.main, [str(tmp_path / 'a'), str(tmp_path / 'b')], capsys)
  assert code == 4 and len(err.strip().splitlines()) == 1 and 'record.json' in err, err
