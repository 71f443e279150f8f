"""jaxlab.host: with malloc set, a large buffer freed and allocated again from another thread
(as XLA:CPU's threads allocate a step's buffers) comes back without the kernel mapping its pages
again; without, every round maps them all."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxlab import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 256
# Allocates, touches and frees MB megabytes 4 times on a thread of its own; prints the minor
# page faults of rounds 2-4 together, after `keep_freed_memory()` or not (argv[1]).
SCRIPT = textwrap.dedent(f"""
    import ctypes, resource, sys, threading
    from jaxlab import host
    outcome = host.keep_freed_memory() if sys.argv[1] == 'keep' else 'system'
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    faults = []

    def rounds():
      for i in range(4):
        if i == 1:
          faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        p = libc.malloc({MB} << 20)
        ctypes.memset(p, 1, {MB} << 20)
        libc.free(p)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    t = threading.Thread(target=rounds)
    t.start()
    t.join()
    print(outcome, faults[1] - faults[0])
""")


def faults_of_three_rounds(mode):
  env = {k: v for k, v in os.environ.items() if k not in ('JAXLAB_MALLOC', 'GLIBC_TUNABLES')}
  out = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                       check=True, cwd=ROOT, env=dict(env, PYTHONPATH=ROOT)).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(host.why_not() not in (None, 'JAXLAB_MALLOC=system',
                                           'GLIBC_TUNABLES sets glibc.malloc tunables'),
                    reason='malloc is set only under Linux with glibc')
def test_freed_buffers_stay_mapped():
  pages = 3 * (MB << 20) // os.sysconf('SC_PAGE_SIZE')
  outcome, faults = faults_of_three_rounds('system')
  assert outcome == 'system' and faults > 0.9 * pages, faults  # each round maps its pages anew
  outcome, faults = faults_of_three_rounds('keep')
  assert outcome == 'kept' and faults < 0.01 * pages, faults


def test_the_users_own_setting_is_left_alone(monkeypatch):
  monkeypatch.setenv('JAXLAB_MALLOC', 'system')
  assert host.why_not() == 'JAXLAB_MALLOC=system'
  monkeypatch.delenv('JAXLAB_MALLOC')
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
  assert host.why_not() == 'GLIBC_TUNABLES sets glibc.malloc tunables'
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.pthread.rseq=0')
  assert host.why_not() in (None, 'not Linux with glibc')


def test_the_session_runs_as_the_jaxlab_command():
  """conftest.py sets malloc first thing, as the jaxlab command does."""
  assert host.setting() == (host.why_not() or 'kept')
