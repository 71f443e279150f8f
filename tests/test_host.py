"""jaxlab.host: under JAXLAB_MALLOC=keep, a large buffer freed and allocated again from another
thread (as XLA:CPU's threads allocate a step's buffers) comes back without the kernel mapping its
pages again; under the default, every round maps them all."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxlab import checks, host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 256
# Allocates, touches and frees MB megabytes 4 times on a thread of its own; prints the minor
# page faults of rounds 2-4 together, with malloc as JAXLAB_MALLOC asks.
SCRIPT = textwrap.dedent(f"""
    import ctypes, resource, sys, threading
    from jaxlab import host
    outcome = host.from_environment()
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


def _read(path):
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return ''


def faults_of_three_rounds(mode):
  env = {k: v for k, v in os.environ.items() if k not in ('JAXLAB_MALLOC', 'GLIBC_TUNABLES')}
  out = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, check=True,
                       cwd=ROOT, env=dict(env, PYTHONPATH=ROOT, JAXLAB_MALLOC=mode)).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(host.why_not() not in (None, 'GLIBC_TUNABLES sets glibc.malloc tunables'),
                    reason='malloc is set only under Linux with glibc')
def test_freed_buffers_stay_mapped():
  pages = 3 * (MB << 20) // os.sysconf('SC_PAGE_SIZE')
  # Where the kernel backs every large mapping with 2 MB pages, a round faults once per 2 MB.
  thp = _read('/sys/kernel/mm/transparent_hugepage/enabled')
  mapped = 3 * MB // 2 if '[always]' in thp else pages
  outcome, faults = faults_of_three_rounds('system')
  assert outcome == 'system' and faults > 0.9 * mapped, faults  # each round maps its pages anew
  outcome, faults = faults_of_three_rounds('keep')
  assert outcome == 'kept' and faults < 0.01 * pages, faults


def test_jaxlab_malloc_chooses(monkeypatch):
  kept = []
  monkeypatch.setattr(host, 'keep_freed_memory', lambda: kept.append(1))  # this process stays
  for value in ('', 'system'):
    monkeypatch.setenv('JAXLAB_MALLOC', value)
    assert host.from_environment() == 'system' and not kept
  monkeypatch.setenv('JAXLAB_MALLOC', 'keep')
  host.from_environment()
  assert kept == [1]
  monkeypatch.setenv('JAXLAB_MALLOC', 'kept')
  with pytest.raises(checks.BadInput,
                     match="unknown JAXLAB_MALLOC 'kept' .*: choose keep .* or system"):
    host.from_environment()


def test_the_users_own_setting_is_left_alone(monkeypatch):
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
  assert host.why_not() == 'GLIBC_TUNABLES sets glibc.malloc tunables'
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.pthread.rseq=0')
  assert host.why_not() in (None, 'not Linux with glibc')


def test_a_bad_choice_stops_the_command_in_one_line():
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/distributed.py:quick'],
                        capture_output=True, text=True, cwd=ROOT,
                        env=dict(os.environ, JAXLAB_MALLOC='fast'))
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().count('\n') == 0
  assert "error: unknown JAXLAB_MALLOC 'fast' (JAXLAB_MALLOC): choose keep" in proc.stderr
