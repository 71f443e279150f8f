"""Bad input, told in one line: `BadInput(what, where, fix)` and the field checks that raise it.

Every check that runs before compute (jaxlab.experiments.validate and preflight) raises
BadInput; the command line prints it as

    error: <what is wrong> (<field or path>): <how to fix it>

and exits with code 2. BadInput is a ValueError, so library callers that catch ValueError
keep working.
"""

import contextlib
import math

import ml_collections


class BadInput(ValueError):
  """A value, file or directory that a run cannot use; `where` names the field or path."""

  LIMIT = 600  # characters of `what` on the line (--verbosity=1 shows the whole chain)

  def __init__(self, what, where, fix):
    what = ' '.join(str(what).split())  # one line, whatever the cause's message held
    if len(what) > self.LIMIT:
      what = what[:self.LIMIT] + ' … (--verbosity=1 shows the whole message)'
    self.what, self.where, self.fix = what, where, fix
    super().__init__(f'{what} ({where}): {fix}')


class Missing(BadInput):
  """Data or weights that are not on this machine (several are reported together)."""


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
