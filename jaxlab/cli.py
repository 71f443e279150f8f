"""Command-line checks that run before anything is computed.

ml_collections' config flags already reject unknown fields and bad values, but
with a traceback and without the valid choices. `check_command_line` loads the
config the same way and explains each bad override in one message.
"""

import importlib.util
import os

import ml_collections

_SCALARS = (bool, int, float, str)


class CommandLineError(ValueError):
  pass


def load_config(spec):
  """The ConfigDict of `path[:variant]`, as config_flags builds it."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise CommandLineError(f'config file {path!r} does not exist; '
                           f'try --config=configs/distributed.py:quick')
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


def check_override(config, dotted, text):
  """Raise CommandLineError unless `dotted` names a field and `text` fits its type."""
  node, walked = config, []
  for key in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      where = '.'.join(walked) or 'config'
      choices = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise CommandLineError(
          f'unknown config field {dotted!r}: {where} has no {key!r}; '
          f'valid fields of {where}: {", ".join(choices) or "(none: it is a value)"}')
    node = node[key]
    walked.append(key)
  if isinstance(node, _SCALARS):
    try:
      _coerce(text, node)
    except ValueError:
      raise CommandLineError(
          f'config field {dotted!r} is a {type(node).__name__} (now {node!r}); '
          f'{text!r} is not a valid {type(node).__name__}') from None


def check_command_line(argv):
  """Check `--config=FILE[:variant]` and every `--config.a.b=value` in argv."""
  spec, overrides = None, []
  for arg in argv[1:]:
    if arg.startswith('--config='):
      spec = arg.split('=', 1)[1]
    elif arg.startswith('--config.'):
      name, _, value = arg[len('--config.'):].partition('=')
      overrides.append((name, value))
  if spec is None:
    raise CommandLineError('missing --config=configs/FILE.py[:variant]; '
                           'e.g. --config=configs/distributed.py:quick')
  config = load_config(spec)
  for name, value in overrides:
    check_override(config, name, value)
  return config
