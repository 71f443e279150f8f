"""Where a result came from: the code, the libraries, the machine and the time.

`describe()` is what every summary.json (under 'provenance') and the first record of every
metrics.jsonl hold: the git commit of the checkout the run came from and whether its tracked
files had uncommitted changes (None when jaxlab was not run from a git checkout, e.g. an
installed wheel, or git is not installed), the versions of Python, jax, jaxlib, flax, optax
and orbax-checkpoint, the device kind, platform and count, the process count, and how the
process's malloc was set (`jaxlab.host`: 'kept' when freed memory stays mapped). `now()` is
the UTC time in ISO 8601, as every record's 'time' and the runs' start and end times.
"""

import datetime
import functools
import importlib.metadata
import os
import platform
import subprocess

from jaxlab import host

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint')
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def now():
  """The current UTC time, e.g. '2026-12-03T09:01:02.345Z'."""
  t = datetime.datetime.now(datetime.timezone.utc)
  return t.strftime('%Y-%m-%dT%H:%M:%S.') + f'{t.microsecond // 1000:03d}Z'


def _version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git(*args):
  return subprocess.run(['git', '-C', _CHECKOUT, *args], capture_output=True, text=True,
                        timeout=10, check=True).stdout.strip()


@functools.lru_cache(maxsize=None)
def git_state():
  """{'commit': sha, 'dirty': bool} of the checkout this jaxlab was imported from, or None
  (not a git checkout: an installed package; or git is missing)."""
  if not os.path.exists(os.path.join(_CHECKOUT, '.git')):
    return None
  try:
    commit = _git('rev-parse', 'HEAD')
    dirty = bool(_git('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.SubprocessError):
    return None
  return {'commit': commit, 'dirty': dirty}


def describe(num_devices=None):
  """The run's provenance (the module docstring says what it holds); `num_devices`: the
  devices the run's mesh spans (default: all of them)."""
  import jax  # pylint: disable=g-import-not-at-top  # now() alone stays light
  devices = jax.devices()
  return {
      'git': git_state(),
      'versions': {'python': platform.python_version(),
                   **{p: _version(p) for p in PACKAGES}},
      'platform': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': int(num_devices or len(devices)),
      'process_count': jax.process_count(),
      'malloc': host.setting(),
  }
