"""Every launcher command in README.md and docs/*.md passes the launcher's checks as written.

A command is `python launch.py ...`, `jaxlab ...` or `python -m jaxlab ...` in a fenced code
block or an inline code span (continuation lines joined; shell prefixes such as `srun` or a
`for` loop around it left out). Each goes through what the launcher does before it computes
anything: --config resolved to a file (cli.resolve_argv), the command line checked
(cli.check_command_line: the variant and every overridden field and its type), the flags parsed
by absl's config_flags as `jaxlab` parses them, and the config validated
(jaxlab.experiments.validate: ranges, choices, relations, overrides a run would ignore). The
files a run needs (data sets, weights, checkpoints) are not checked: docs may name data this
machine lacks. Nothing is compiled or trained.

Lines that start with `$ ` are transcripts of a command and its error, shown on purpose; they
are not commands to check.
"""

import glob
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from jaxlab import cli, experiments
from jaxlab.launch import overridden

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))
# Where a launcher command starts inside a line.
START = re.compile(r'(?:^|(?<=[\s"\'(]))(?:python3? launch\.py|python3? -m jaxlab(?=\s)|jaxlab(?=\s+--))')
FENCE = re.compile(r'^\s*```')
DEVICE_COUNT = re.compile(r'xla_force_host_platform_device_count=(\d+)')


def _lines(text):
  """(line number, text) of every line inside a fenced block, continuation lines joined, and of
  every inline code span outside the blocks."""
  out, inside, pending, first = [], False, '', 0
  for number, line in enumerate(text.split('\n'), 1):
    if FENCE.match(line):
      inside = not inside
      continue
    if not inside:
      out += [(number, span) for span in re.findall(r'`([^`]+)`', line)]
      continue
    if not pending:
      first = number
    if line.rstrip().endswith('\\'):
      pending += line.rstrip()[:-1] + ' '
      continue
    out.append((first, pending + line))
    pending = ''
  return out


def _command(line):
  """The launcher's arguments in `line` (a list), or None when it holds no launcher command."""
  if line.lstrip().startswith('$ '):
    return None
  found = START.search(line)
  if found is None:
    return None
  rest = line[found.end():]
  rest = re.split(r'\s(?:&&|\|\||;|&|\|)(?:\s|$)|\s&$', rest)[0]
  if rest.count('"') % 2:  # the end of a quoted --command="... python launch.py ..."
    rest = rest[:rest.rindex('"')]
  rest = rest.replace('$i', '0')  # a shell loop's variable: the first process
  env = DEVICE_COUNT.search(line[:found.start()])
  return shlex.split(rest, comments=True), int(env.group(1)) if env else None


def commands():
  found = []
  for page in PAGES:
    with open(os.path.join(ROOT, page), encoding='utf-8') as f:
      text = f.read()
    for number, line in _lines(text):
      parsed = _command(line)
      if parsed is not None and '...' not in parsed[0]:
        found.append(pytest.param(*parsed, id=f'{page}:{number}'))
  return found


def check(args, env_devices=None):
  """Run the launcher's checks on `args` (what follows `jaxlab`); raise what it would report."""
  argv = cli.resolve_argv(['jaxlab'] + list(args))
  cli.check_command_line(argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'workdir', flag_values=values)
  values(argv)
  config = values.config
  devices = config.get('simulated_cpu_devices', 0) or env_devices or 1
  processes = config.get('distributed', {}).get('num_processes', -1)
  experiments.validate(config, frozenset(overridden(argv)), devices * max(processes, 1))


COMMANDS = commands()


def test_the_docs_hold_commands_of_every_family():
  names = ' '.join(' '.join(p.values[0]) for p in COMMANDS)
  assert len(COMMANDS) >= 25, [p.id for p in COMMANDS]
  for family in ('hybrid', 'ladder', 'mhc', 'distributed'):
    assert family in names
  assert any(p.id.startswith('README.md:') for p in COMMANDS)


@pytest.mark.parametrize('args,env_devices', COMMANDS)
def test_docs_command_passes_the_launchers_checks(args, env_devices):
  check(args, env_devices)


@pytest.mark.parametrize('args,match', [
    (['--config=configs/hybrid.py:week5'], "renamed 'five_epochs'"),
    (['--config=configs/hybrid.py:no_such_variant'], 'unknown config variant'),
    (['--config=configs/ladder.py:quick', '--config.optim.no_such_field=1'],
     'unknown config field'),
    (['--config=configs/mhc.py:quick', '--config.train.epochs=many'], 'not a valid int'),
    (['--config=hybrid:quick', '--config.augment.recipe=seed'], "renamed 'reference'"),
    (['--config=distributed:quick', '--config.train.batch_size=0'], 'train.batch_size'),
])
def test_the_check_rejects_what_the_launcher_rejects(args, match):
  with pytest.raises(ValueError, match=match):
    check(args)


def test_extraction_reads_shell_forms():
  line = ('gcloud ssh --command="cd jaxlab && python launch.py --config=configs/mhc.py:quick '
          '--workdir=/x"')
  assert _command(line) == (['--config=configs/mhc.py:quick', '--workdir=/x'], None)
  assert _command('  python launch.py --config=a.py --config.b=$i &') == (
      ['--config=a.py', '--config.b=0'], None)
  assert _command('XLA_FLAGS=--xla_force_host_platform_device_count=4 jaxlab --config=x  # c') == (
      ['--config=x'], 4)
  assert _command('$ jaxlab --config=x --config.train.batch_size=0') is None
  assert _command('python -m jaxlab.export --workdir=RUN') is None
  text = 'a\n```bash\npython launch.py --config=a.py \\\n  --config.b=1\n```\n`jaxlab --config=c`\n'
  assert [(n, _command(l)) for n, l in _lines(text) if _command(l)] == [
      (3, (['--config=a.py', '--config.b=1'], None)), (6, (['--config=c'], None))]
