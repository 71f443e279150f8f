"""What `pip install .` ships: the wheel holds every module of jaxlab/ and configs/ (the configs as
jaxlab.configs), the `jaxlab` console script and the declared requirements; installed without
the checkout (pip install --target), `jaxlab --config=ladder:quick` runs from another directory.
Also: how `--config` names a packaged config."""

import configparser
import email.parser
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

import jaxlab
from jaxlab import cli
from jaxlab.launch import default_workdir
import xla_flags  # tests/xla_flags.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where each source directory lands in the wheel (pyproject's package-dir).
SHIPPED = {'jaxlab': 'jaxlab', 'configs': 'jaxlab/configs'}
FAMILIES = ['distributed', 'hybrid', 'ladder', 'mhc']
DIST_INFO = f'jaxlab-{jaxlab.__version__}.dist-info'
# A ladder run a few steps long: one seed, one cell, a width-16 MLP.
TINY_LADDER = ['--config=ladder:quick', '--config.progress=false', '--config.seeds=(1,)',
               "--config.credit.rules=('bp',)", '--config.credit.ks=(0,)',
               '--config.model.width=16', '--config.train.steps=2',
               '--config.train.batch_size=16', '--config.train.steps_per_dispatch=1',
               '--config.train.log_every_steps=1', '--config.train.eval_batch_size=100']


def _skipped(name):
  """Not source: caches, editors' dotfiles and backups."""
  return name == '__pycache__' or name.startswith('.') or name.endswith(('.pyc', '.pyo', '~'))


def source_files():
  """The wheel paths the source tree says should ship: every file under jaxlab/ and configs/."""
  out = set()
  for src, dest in SHIPPED.items():
    top = os.path.join(ROOT, src)
    for dirpath, dirnames, filenames in os.walk(top):
      dirnames[:] = [d for d in dirnames if not _skipped(d)]
      rel = os.path.relpath(dirpath, top)
      for f in filenames:
        if not _skipped(f):
          out.add('/'.join(p for p in (dest, rel, f) if p and p != '.'))
  return out


def _ignore(directory, names):
  top = os.path.abspath(directory) == ROOT
  return [n for n in names if _skipped(n) or (top and (
      n in ('workdirs', 'build', 'dist') or n.endswith('.egg-info')))]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """The wheel of a copy of the checkout (a build in place would leave build/ and an egg-info in
  the checkout, and setuptools' build/ keeps files since deleted)."""
  tmp = tmp_path_factory.mktemp('wheel')
  src = tmp / 'src'
  shutil.copytree(ROOT, src, ignore=_ignore)
  r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                      '--no-index', '-q', '-w', str(tmp / 'dist'), str(src)],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, (f'pip wheel failed (tests need setuptools>=70.1: '
                             f'pip install -e ".[test]"):\n{r.stdout}\n{r.stderr}')
  (path,) = (tmp / 'dist').glob('jaxlab-*.whl')
  return path


def read(wheel, name):
  with zipfile.ZipFile(wheel) as z:
    return z.read(name).decode()


def test_wheel_holds_exactly_the_source_tree(wheel):
  with zipfile.ZipFile(wheel) as z:
    shipped = {n for n in z.namelist() if not n.startswith(DIST_INFO + '/')}
  expected = source_files()
  missing = sorted(expected - shipped)
  assert not missing, (
      f'not in the wheel: {missing}; add each package (a directory with __init__.py) to '
      f"pyproject.toml's [tool.setuptools] packages, and data files to package-data")
  assert not sorted(shipped - expected), 'the wheel ships files the source tree does not have'
  # One top-level package: no `configs`, `tests`, `benchmarks` or `launch` beside jaxlab.
  assert {n.split('/')[0] for n in shipped} == {'jaxlab'}
  assert read(wheel, f'{DIST_INFO}/top_level.txt').split() == ['jaxlab']
  assert {f'jaxlab/configs/{f}.py' for f in FAMILIES} <= shipped
  assert {'jaxlab/launch.py', 'jaxlab/__main__.py', 'jaxlab/cli.py'} <= shipped


def test_wheel_declares_the_console_script(wheel):
  entry_points = configparser.ConfigParser()
  entry_points.read_string(read(wheel, f'{DIST_INFO}/entry_points.txt'))
  assert dict(entry_points['console_scripts']) == {'jaxlab': 'jaxlab.launch:console'}


def test_wheel_metadata_lists_the_requirements(wheel):
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  meta = email.parser.Parser().parsestr(read(wheel, f'{DIST_INFO}/METADATA'))
  assert meta['Name'] == 'jaxlab' and meta['Version'] == project['version'] == jaxlab.__version__
  assert meta['Requires-Python'] == project['requires-python']
  requires = {r.replace(' ', '') for r in meta.get_all('Requires-Dist')}
  for dep in project['dependencies']:
    assert dep.replace(' ', '') in requires, f'{dep} missing from METADATA'
  assert set(meta.get_all('Provides-Extra')) == set(project['optional-dependencies'])
  for extra, deps in project['optional-dependencies'].items():
    for dep in deps:
      assert f'{dep};extra=="{extra}"'.replace(' ', '') in requires, f'{dep} ({extra})'


def test_installed_wheel_runs_a_family_from_another_directory(wheel, tmp_path):
  """`pip install --target` (not editable, no checkout on the path), then the console script from
  an empty directory: jaxlab and its configs come from the install, the workdir lands here."""
  site = tmp_path / 'site'
  r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q',
                      f'--target={site}', str(wheel)], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert not (site / 'configs').exists() and (site / 'jaxlab' / 'configs' / 'hybrid.py').exists()
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  # PYTHONPATH=site comes before the editable install's finder, which could otherwise supply
  # jaxlab (or just jaxlab.configs) from the checkout.
  env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'XLA_', 'JAX_'))}
  env.update(PYTHONPATH=str(site), XLA_FLAGS=xla_flags.for_command(), JAX_PLATFORMS='cpu')

  def run(*cmd):
    return subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)

  r = run(sys.executable, '-c', 'import jaxlab, jaxlab.configs, jaxlab.launch; '
          'from jaxlab import cli; print(jaxlab.__file__); print(jaxlab.configs.__file__); '
          "print(cli.resolve_spec('ladder:quick'))")
  assert r.returncode == 0, r.stderr
  for line in r.stdout.split():
    assert line.startswith(str(site) + os.sep), f'{line} is not from the installed wheel'
  r = run(sys.executable, '-m', 'jaxlab', '--config=nope')
  assert r.returncode == 2 and 'distributed, hybrid, ladder, mhc' in r.stderr
  r = run(str(site / 'bin' / 'jaxlab'), *TINY_LADDER)
  assert r.returncode == 0, r.stdout + r.stderr
  workdir = elsewhere / 'workdirs' / 'ladder-quick'
  for name in ('launch_config.json', 'identity_check.json', 'ladder.json', 'ladder.md',
               'ladder.png', 'cells/bp_k0/summary.json', 'cells/bp_k0/metrics.jsonl'):
    assert (workdir / name).is_file(), name
  assert '| 0 |' in (workdir / 'ladder.md').read_text()


def test_packaged_configs_are_the_families():
  assert sorted(cli.packaged_configs()) == FAMILIES


@pytest.mark.parametrize('spec,variant', [
    ('hybrid:quick', ':quick'), ('hybrid.py:quick', ':quick'), ('hybrid', ''),
    ('configs/hybrid.py:quick', ':quick'),  # no configs/ here: the packaged one
])
def test_a_name_resolves_to_the_packaged_config(spec, variant, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  resolved = cli.resolve_spec(spec)
  assert resolved == cli.packaged_configs()['hybrid'] + variant
  assert default_workdir(resolved) == os.path.join('workdirs', f'hybrid{variant.replace(":", "-")}')
  assert cli.load_config(spec).experiment == 'peft'


def test_a_path_that_exists_is_kept(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  assert cli.resolve_spec('configs/ladder.py:quick') == 'configs/ladder.py:quick'
  own = tmp_path / 'hybrid.py'
  shutil.copy(os.path.join(ROOT, 'configs', 'ladder.py'), own)
  monkeypatch.chdir(tmp_path)
  assert cli.resolve_spec('hybrid.py:quick') == 'hybrid.py:quick'  # a file here beats the name


@pytest.mark.parametrize('spec', ['nope', 'nope:quick', 'configs/nope.py', '/no/such/hybrid.py'])
def test_an_unknown_config_lists_the_packaged_ones(spec, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(cli.CommandLineError, match='distributed, hybrid, ladder, mhc'):
    cli.resolve_spec(spec)


def test_resolve_argv_rewrites_only_the_config(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = cli.packaged_configs()['mhc']
  assert cli.resolve_argv(['jaxlab', '--config', 'mhc:quick', '--config.seed=1', '--workdir=w']) \
      == ['jaxlab', f'--config={path}:quick', '--config.seed=1', '--workdir=w']
  with pytest.raises(cli.CommandLineError, match='needs a value'):
    cli.resolve_argv(['jaxlab', '--config'])
