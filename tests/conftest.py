"""Shared test setup: eight simulated CPU devices, set before JAX starts (tests that need
four take the first four), the session's compile level (tests/xla_flags.py), and one
persistent compilation cache for the whole session. JAXLAB_TEST_PLATFORM=gpu starts JAX on CUDA
instead (tests/test_gpu.py)."""

import os
import shutil
import socket
import sys
import tempfile

import pytest

import timings  # tests/timings.py: this folder is on sys.path (pytest's rootdir conftest)
import xla_flags  # tests/xla_flags.py: the session's compile level

os.environ['XLA_FLAGS'] = ' '.join(filter(None, (
    os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=8',
    xla_flags.COMPILE)))
# JAXLAB_TEST_PLATFORM=gpu: JAX starts CUDA as the default backend (the CPU backend, with its eight
# simulated devices, beside it), for tests/test_gpu.py and the device-agnostic tests on a lent GPU
# (docs/devices.md says which). Otherwise the suite runs on the CPU.
_PLATFORM = os.environ.get('JAXLAB_TEST_PLATFORM', 'cpu').lower()
if _PLATFORM not in ('cpu', 'gpu'):
  raise SystemExit(f'JAXLAB_TEST_PLATFORM={_PLATFORM!r}: choose cpu (the default) or gpu')
os.environ.setdefault('JAX_PLATFORMS', 'cuda,cpu' if _PLATFORM == 'gpu' else 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# JAX's persistent compilation cache, shared by every test of the session: the in-process ones,
# the pytest-xdist workers (they inherit the controller's environment, so they find the folder
# it made) and every command the tests start (launch.py, the installed jaxlab, the
# multi-process runs), which inherit it too. Every program is still compiled, and checked, by
# the first test that needs it; another test compiling the same program (the same tiny LeNet,
# ViT or ResMLP step in many runs, a resumed run, a rerun) loads it instead. Entries are keyed
# by the program, the compile options, the devices and the JAX version, so a hit is the
# identical executable. JAXLAB_TEST_XLA_CACHE=DIR keeps it between sessions (opt-in),
# JAXLAB_TEST_XLA_CACHE=off compiles everything in every process; a JAX_COMPILATION_CACHE_DIR
# already set is respected.
_SESSION_CACHE = '_JAXLAB_TEST_SESSION_XLA_CACHE'
_OWN_CACHE = None
if (not os.environ.get('JAX_COMPILATION_CACHE_DIR')
    and os.environ.get('JAXLAB_TEST_XLA_CACHE', '').lower() != 'off'):
  if os.environ.get('JAXLAB_TEST_XLA_CACHE'):
    os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ['JAXLAB_TEST_XLA_CACHE']
  else:
    if not os.environ.get(_SESSION_CACHE):  # the first process of the session: it cleans up
      _OWN_CACHE = os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix='jaxlab-test-xla-cache-')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ[_SESSION_CACHE]
  # Every program, however quick to compile: a test's tiny programs add up.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
  if 'jax' in sys.modules:  # imported before this file (by a plugin): it read its settings
    import jax
    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
    jax.config.update('jax_persistent_cache_min_entry_size_bytes',
                      int(os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES']))


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(name='no_network')
def _no_network(monkeypatch):
  """Makes any attempt to open a network connection fail the test."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


# ---------------------------------------------------------------------------------------------
# The tiers, and under pytest-xdist (python -m pytest -n 2) the slowest tests first.
#
# tests/timings.py holds the measured seconds of every test of 1 s or more; a test of
# SLOW_SECONDS or more, or one that needs an expensive module fixture, is marked `slow`, so
# `-m "not slow"` is the quick tier; a test of LONG_SECONDS or more is marked `long`, which the
# suite leaves to its own run (`-m long`; pyproject.toml's addopts deselect it). Under xdist
# each worker takes the next work unit when it is free, longest first, so that the run does not
# end with one worker alone on a long test. A work unit is one test, or a whole module where
# its tests share an expensive module-scoped fixture (the fixture is then built once, on one
# worker). Unlisted tests count as 0 s and keep their collection order, after the others: a
# renamed or new slow test only runs later (and in the quick tier and the suite, not the long
# tier, until the table is regenerated); the results are the same either way.
TOGETHER = (
    'tests/test_mhc.py',  # two_arms: two full runs of the family
    'tests/test_export.py',  # runs: three PEFT runs
    'tests/test_multiprocess.py',  # reference: a one-process run of both arms
)


def _unit(nodeid):
  module = nodeid.split('::', 1)[0]
  return module if module in TOGETHER else nodeid


def _seconds(unit):
  return sum(s for nodeid, s in timings.SECONDS.items() if _unit(nodeid) == unit)


def _slow(item):
  if set(timings.EXPENSIVE_FIXTURES) & set(getattr(item, 'fixturenames', ())):
    return True
  return timings.SECONDS.get(item.nodeid, 0) >= timings.SLOW_SECONDS


def _long(item):
  return timings.SECONDS.get(item.nodeid, 0) >= timings.LONG_SECONDS


def pytest_collection_modifyitems(config, items):
  for item in items:
    if _slow(item):
      item.add_marker(pytest.mark.slow)
    if _long(item):
      item.add_marker(pytest.mark.long)
  if not hasattr(config, 'workerinput'):  # one process: the order makes no difference
    return
  units = {}
  for item in items:  # a unit's tests stay together, in their order
    units.setdefault(_unit(item.nodeid), []).append(item)
  items[:] = [item for unit in sorted(units, key=lambda u: -_seconds(u)) for item in units[unit]]


def pytest_xdist_make_scheduler(config, log):
  """The default distribution (--dist load) by work units, in the order collected."""
  if config.getvalue('dist') != 'load':
    return None
  from xdist.scheduler import LoadScopeScheduling

  class LongestFirst(LoadScopeScheduling):
    """LoadScopeScheduling with our units for scopes: a worker is given the next unit when it
    has at most two tests left to run."""

    def _split_scope(self, nodeid):
      return _unit(nodeid)

  config.option.loadscopereorder = False  # the units' order is the collection's (above)
  return LongestFirst(config, log)
