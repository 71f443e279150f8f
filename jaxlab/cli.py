"""Command-line checks that run before anything is computed.

ml_collections' config flags already reject unknown fields and bad values, but
with a traceback and without the valid choices. `check_command_line` loads the
config (the one time its file runs: the entry point hands this ConfigDict to absl,
which applies the overrides to it) and explains each bad override in one message.

A config is named by a path (`--config=configs/hybrid.py:quick`, read as it is when the
file exists) or by the name of a config that ships inside the package
(`--config=hybrid:quick`, `hybrid.py:quick`, or `configs/hybrid.py:quick` where there is no
such file): `resolve_argv` rewrites the command line to the file's path before absl parses
it, so an installed `jaxlab` command runs from any directory.
"""

import importlib.util
import os

import ml_collections

from jaxlab import checks

_SCALARS = (bool, int, float, str)
_FLAG = '--config'


class CommandLineError(checks.BadInput):
  """A bad --config or --config.FIELD=value: BadInput(what, where, fix)."""


def packaged_configs():
  """{name: path} of the configs that ship inside the package (jaxlab.configs: the
  top-level configs/ of a checkout): each file there that defines get_config."""
  spec = importlib.util.find_spec('jaxlab.configs')
  if spec is None or not spec.submodule_search_locations:
    return {}
  directory = list(spec.submodule_search_locations)[0]
  found = {}
  for entry in sorted(os.listdir(directory)):
    name, ext = os.path.splitext(entry)
    if ext != '.py' or name.startswith('_'):
      continue
    path = os.path.join(directory, entry)
    with open(path, encoding='utf-8') as f:
      if 'def get_config(' in f.read():
        found[name] = path
  return found


def resolve_spec(spec):
  """`path[:variant]` for a `--config` value: a path to a file is kept as it is; otherwise
  `NAME`, `NAME.py` or `configs/NAME.py` (with any `:variant`) becomes the path of the
  packaged config NAME. Anything else is a CommandLineError that lists the packaged configs."""
  path, sep, variant = spec.partition(':')
  if os.path.isfile(path):
    return spec
  configs = packaged_configs()
  head, base = os.path.split(os.path.normpath(path)) if path else ('', '')
  name = base[:-len('.py')] if base.endswith('.py') else base
  if head in ('', 'configs') and name in configs:
    return configs[name] + sep + variant
  choices = ', '.join(configs) or '(none found: is jaxlab installed?)'
  what = (f'config file {path!r} does not exist' if head not in ('', 'configs')
          else f'no config file {path!r} here and no packaged config {name!r}')
  raise CommandLineError(what, f'--config={spec}',
                         f'name a packaged config ({choices}; e.g. --config=hybrid:quick) '
                         'or give a path: --config=path/to/file.py[:variant]')


def resolve_argv(argv):
  """argv with every `--config=VALUE` (or `--config VALUE`) as `--config=PATH[:variant]`
  (resolve_spec); everything else as it was."""
  out, rest = list(argv[:1]), iter(argv[1:])
  for arg in rest:
    if arg == _FLAG:
      value = next(rest, None)
      if value is None:
        raise CommandLineError('--config needs a value', '--config',
                               'give --config=NAME[:variant], e.g. --config=hybrid:quick')
      arg = f'{_FLAG}={value}'
    if arg.startswith(_FLAG + '='):
      arg = f'{_FLAG}={resolve_spec(arg[len(_FLAG) + 1:])}'
    out.append(arg)
  return out


def load_config(spec):
  """The ConfigDict of `path[:variant]` (or a packaged config's name; see resolve_spec), as
  config_flags builds it."""
  path, _, arg = resolve_spec(spec).partition(':')
  module_spec = importlib.util.spec_from_file_location('_jaxlab_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _coerce(text, like):
  if isinstance(like, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError
  return type(like)(text)


def _a(noun):
  return f'{"an" if noun[:1] in "aeiou" else "a"} {noun}'


def check_override(config, dotted, text):
  """Raise CommandLineError unless `dotted` names a field and `text` fits its type."""
  node, walked = config, []
  for key in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      where = '.'.join(walked) or 'config'
      choices = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise CommandLineError(
          f'unknown config field {dotted!r}: {where} has no {key!r}', f'--config.{dotted}',
          f'valid fields of {where}: {", ".join(choices) or "(none: it is a value)"}')
    node = node[key]
    walked.append(key)
  if isinstance(node, _SCALARS):
    try:
      _coerce(text, node)
    except ValueError:
      raise CommandLineError(
          f'{text!r} is not a valid {type(node).__name__}', f'--config.{dotted}',
          f'config field {dotted!r} is {_a(type(node).__name__)} (now {node!r}); give one') from None


def check_command_line(argv):
  """Check `--config=FILE[:variant]` (or a packaged config's name) and every
  `--config.a.b=value` in argv."""
  spec, overrides = None, []
  for arg in argv[1:]:
    if arg.startswith('--config='):
      spec = arg.split('=', 1)[1]
    elif arg.startswith('--config.'):
      name, _, value = arg[len('--config.'):].partition('=')
      overrides.append((name, value))
  if spec is None:
    raise CommandLineError(
        'no config given', '--config',
        f'add --config=NAME[:variant] (a packaged config: {", ".join(packaged_configs())}) or '
        '--config=path/to/file.py[:variant]; e.g. --config=distributed:quick')
  config = load_config(spec)
  for name, value in overrides:
    check_override(config, name, value)
  return config
