"""Failures told in one line, and the field checks that raise them.

Every check that runs before compute (jaxlab.experiments.validate and preflight) raises
`BadInput(what, where, fix)`; a failure of the machine or of the workdir's files raises
`EnvFailure(what, where, fix)` (a full disk, an unavailable platform, a path too long, a
damaged file or checkpoint), and a workdir another run is writing raises `WorkdirBusy`. The
command line prints each as

    error: <what is wrong> (<field or path>): <how to fix it>

and exits with its own code (2 bad input, 4 environment, 5 workdir busy). BadInput is a
ValueError, so library callers that catch ValueError keep working. The package's other
command-line tools (export, claims, record, prepare) report the same way: `ToolParser` for
their command lines, `run_tool` for what they do.
"""

import argparse
import contextlib
import errno
import math
import os
import shutil
import sys

import ml_collections


LIMIT = 600  # characters of `what` on the line (--verbosity=1 shows the whole chain)


class _OneLine:
  """`what (where): fix`, forced onto one line (a cause's message may hold several)."""

  def __init__(self, what, where, fix):
    what = ' '.join(str(what).split())
    if len(what) > LIMIT:
      what = what[:LIMIT] + ' … (--verbosity=1 shows the whole message)'
    self.what, self.where, self.fix = what, where, fix
    super().__init__(f'{what} ({where}): {fix}')


class BadInput(_OneLine, ValueError):
  """A value, file or directory that a run cannot use; `where` names the field or path."""


class EnvFailure(_OneLine, RuntimeError):
  """Not the config but the machine or the workdir's files: a full disk, an unavailable
  platform, a path too long for the file system, a damaged file or checkpoint."""


class Damaged(EnvFailure):
  """A file of the workdir that cannot be read back (truncated JSON, a damaged checkpoint),
  or checkpoints without the config record that says what they are."""


class WorkdirBusy(EnvFailure):
  """Another live run holds the workdir's lock."""


class Missing(BadInput):
  """Data or weights that are not on this machine (several are reported together)."""


class SeedsDoNotFit(BadInput):
  """The seeds a run trains together in one program need more memory on a device than it has,
  by XLA's memory analysis of the compiled training step (checked before the step first runs).
  A family whose seeds can run one after another catches it and does so."""

  def __init__(self, seeds, needed, available):
    self.seeds, self.needed, self.available = tuple(seeds), needed, available
    super().__init__(
        f'the {len(self.seeds)} seeds {self.seeds} trained together need {size_text(needed)} '
        f'on a device (XLA\'s memory analysis of the compiled training step), more than the '
        f'{size_text(available)} a device has', flag('seeds'),
        'train fewer seeds together (e.g. --config.seeds="(0,)", the others in runs of their '
        'own) or use a smaller train.batch_size')


def flag(field):
  """How a config field is set on the command line: --config.train.batch_size."""
  return f'--config.{field}'


def get(config, field):
  """config's dotted `field` ('train.batch_size')."""
  for key in field.split('.'):
    config = config[key]
  return config


def has(config, field):
  node = config
  for key in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      return False
    node = node[key]
  return True


def fail(field, what, fix):
  raise BadInput(what, flag(field), fix)


@contextlib.contextmanager
def about(field, fix):
  """Re-raise a ValueError from the block as BadInput naming `field` (for checks that live
  with the code they guard, e.g. peft.methods.lora_blocks)."""
  try:
    yield
  except BadInput:
    raise
  except ValueError as e:
    raise BadInput(str(e).rstrip('.'), flag(field), fix) from e


def _number(config, field):
  value = get(config, field)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    fail(field, f'{field} is {value!r}, not a finite number', f'set {flag(field)}=<a number>')
  return value


def at_least(config, field, low, why=''):
  """field ≥ low (counts and sizes: at_least(c, 'train.batch_size', 1))."""
  value = _number(config, field)
  if value < low:
    fail(field, f'{field} is {value!r}; it must be at least {low:g}{why}',
         f'set {flag(field)} to {low:g} or more')
  return value


def positive(config, field, why=''):
  """field > 0 (learning rates, epsilons, temperatures)."""
  value = _number(config, field)
  if not value > 0:
    fail(field, f'{field} is {value!r}; it must be greater than 0{why}',
         f'set {flag(field)} to a positive value')
  return value


def within(config, field, low, high, *, high_open=False, low_open=False, why=''):
  """low ≤ field ≤ high (probabilities), with either end open ([0, 1) for momentum)."""
  value = _number(config, field)
  ok = (value > low if low_open else value >= low) and (value < high if high_open else
                                                        value <= high)
  if not ok:
    interval = f'{"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'
    fail(field, f'{field} is {value!r}; it must lie in {interval}{why}',
         f'set {flag(field)} to a value in {interval}')
  return value


def one_of(config, field, choices):
  value = get(config, field)
  if value not in choices:
    fail(field, f'unknown {field} {value!r}', f'choose one of {", ".join(map(str, choices))}')
  return value


def rule(check, *args, **kwargs):
  """A field's range declared beside the code that reads the field, e.g.
  `{'b1': rule(within, 0, 1, high_open=True)}`; `spec(config, 'optim.b1')` runs the check."""
  return lambda config, field: check(config, field, *args, **kwargs)


def check_declared(config, prefix, specs):
  """Run each declared range of `specs` ({name: rule or None}) on the fields of `prefix`
  ('optim') that the config has."""
  for name, spec in specs.items():
    field = f'{prefix}.{name}'
    if spec is not None and has(config, field):
      spec(config, field)


def ignored_override(field, overridden, setter, fix):
  """A field given on the command line that `setter` (a sweep, an arm list, a recipe) sets
  itself: the run would silently ignore it."""
  if field in overridden:
    raise BadInput(f'{field} is set by {setter}, so this override would be ignored',
                   flag(field), fix)


def unread_override(field, overridden, why, fix):
  """A field given on the command line that this run never reads (an Adam setting under SGD,
  a warm-up under a schedule without one, ...): the override would have no effect."""
  if field in overridden:
    raise BadInput(f'{field} is not read {why}, so this override would have no effect',
                   flag(field), fix)


# ---------------------------------------------------------------------------------------------
# The machine's own failures, found in whatever a library raised.


def existing_ancestor(path):
  """`path` made absolute, or its nearest ancestor that exists (what a workdir not yet
  created will live in)."""
  probe = os.path.abspath(os.path.expanduser(path))
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  return probe


def _chain(error):
  """`error`, its causes and contexts, and the members of exception groups, each once."""
  seen, todo = [], [error]
  while todo:
    e = todo.pop()
    if e is None or any(e is s for s in seen):
      continue
    seen.append(e)
    todo += [e.__cause__, e.__context__, *getattr(e, 'exceptions', ())]
  return seen


_NO_SPACE = ('no space left on device', 'disk quota exceeded')
_TOO_LONG = ('file name too long',)


def _found(error, errnos, texts):
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno in errnos:
      return e
    if any(t in str(e).lower() for t in texts):
      return e
  return None


def size_text(nbytes):
  """'512 B', '3.2 MiB', ..."""
  for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
    if nbytes < 1024 or unit == 'TiB':
      return f'{nbytes:.0f} {unit}' if unit == 'B' else f'{nbytes:.1f} {unit}'
    nbytes /= 1024


def environment_failure(error, workdir, needed_bytes=None):
  """EnvFailure for a full disk or a path too long for the file system somewhere in `error`'s
  chain (naming the path, the space free and, when known, the space a checkpoint needs), or
  None when `error` is something else."""
  full = _found(error, (errno.ENOSPC, errno.EDQUOT), _NO_SPACE)
  if full is not None:
    path = getattr(full, 'filename', None) or workdir
    free = size_text(shutil.disk_usage(existing_ancestor(workdir)).free)
    need = (f'; a checkpoint of this run takes about {size_text(needed_bytes)}'
            if needed_bytes else '')
    return EnvFailure(f'no space left on the device that holds the workdir ({free} free{need})',
                      path, 'free some space there (or give --workdir on another '
                      'disk and move the workdir there), then rerun the same command: it '
                      'resumes from the last checkpoint, which is intact')
  long = _found(error, (errno.ENAMETOOLONG,), _TOO_LONG)
  if long is not None:
    return EnvFailure('a path of the run is too long for the file system',
                      getattr(long, 'filename', None) or workdir,
                      'choose a shorter --workdir')
  return None


BAD_INPUT = 2  # exit code of a bad value, file or directory (nothing computed or written)
ENVIRONMENT = 4  # the machine or the files: disk, platform, path, damaged files


def error_line(error):
  """`error: <what> (<field or path>): <fix>`, on one line whatever the message holds."""
  return 'error: ' + ' '.join(str(error).split())


def tool_failure(error, where='.'):
  """(exit code, line on stderr) of a failure a user can act on: bad input (2) or the
  environment (4: a full disk, a path too long, a damaged file, the file system refusing);
  None for anything else (a bug: its traceback is shown). `where`: the folder written to."""
  if isinstance(error, EnvFailure):
    return ENVIRONMENT, error_line(error)
  found = environment_failure(error, where)
  if found is not None:
    return ENVIRONMENT, error_line(found)
  if isinstance(error, (ValueError, FileNotFoundError)):  # BadInput among them
    return BAD_INPUT, error_line(error)
  if isinstance(error, OSError):  # the file system said no: permissions, I/O errors
    return ENVIRONMENT, error_line(error)
  return None


class ToolParser(argparse.ArgumentParser):
  """argparse for the package's tools: a bad command line is one line on stderr, exit 2."""

  def error(self, message):
    print(f'error: {message} (see {self.prog} --help)', file=sys.stderr)
    sys.exit(BAD_INPUT)


def run_tool(work, where='.'):
  """Runs `work()` for a command-line tool: 0, or a failure's code (tool_failure) after its
  one line on stderr."""
  try:
    work()
  except Exception as e:  # pylint: disable=broad-except  # classified, or raised again
    found = tool_failure(e, where)
    if found is None:
      raise
    print(found[1], file=sys.stderr)
    return found[0]
  return 0
