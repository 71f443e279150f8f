"""The process's C allocator, set so that XLA:CPU's step buffers stay mapped (Linux, glibc).

XLA:CPU allocates a compiled step's buffers with malloc when the step starts and frees them
when it ends. glibc's malloc serves large requests with a fresh `mmap` (those above its mmap
threshold, at most 32 MB; and any request too large for the 64 MB heaps of the arena of the
thread that asks) and gives them back with `munmap` on free, so the kernel maps and zeroes
every page of those buffers again at every step. On a 2-core CPU a ViT-Ti/4 training step at
batch 64 took ~360,000 page faults (1.46 GB of fresh pages) a step, LeNet-5 at batch 64
~8,600 (35 MB); with the pages kept the steps took 1/1.37 (ViT-Ti/4), 1/1.17 (ViT-S/16 with
LoRA, batch 8) and 1/1.10 (LeNet-5) of that time (docs/benchmarks.md).

`keep_freed_memory()` asks malloc (`mallopt`) for one arena (M_ARENA_MAX 1: a request of any
size goes to the main heap, whatever thread makes it), no mmap (M_MMAP_MAX 0) and no trimming
of freed memory (M_TRIM_THRESHOLD at its maximum): freed buffers stay in the heap and the next
step reuses them. The prices: the process keeps the memory of its largest step until it exits
(as a GPU's allocator keeps its pool), and every thread's malloc goes through one heap and its
lock, which made the small steps slower (the hybrid quick demo: 174 s against 140 s; the
`--small` ViT-Ti/4 at batch 64: 41–44 ms a step against 31–41 ms), so it is opt-in:
`JAXLAB_MALLOC=keep` in the environment of the `jaxlab` command or `python -m benchmarks`
(`from_environment()`, called first thing, before JAX starts its threads: a thread's arena is
chosen at its first malloc), or a call of `keep_freed_memory()` in a library user's own
program. A `GLIBC_TUNABLES` that sets any `glibc.malloc` tunable (the user's own choice) is
left alone; elsewhere than Linux with glibc nothing is done.
"""

import ctypes
import os
import platform
import sys

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: SIZE_MAX, never
CHOICES = ('system', 'keep')  # JAXLAB_MALLOC

_state = {}


def why_not():
  """Why keep_freed_memory() would leave malloc alone here (None when it would set it)."""
  if 'glibc.malloc' in os.environ.get('GLIBC_TUNABLES', ''):
    return 'GLIBC_TUNABLES sets glibc.malloc tunables'
  if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
    return 'not Linux with glibc'
  return None


def from_environment():
  """keep_freed_memory() when JAXLAB_MALLOC=keep; nothing when it is unset or 'system'; a
  checks.BadInput naming the choices otherwise. Returns setting()."""
  choice = os.environ.get('JAXLAB_MALLOC', '') or 'system'
  if choice not in CHOICES:
    # Imported here: the benchmarks' PyTorch children import this module in a Python that has
    # torch and the standard library only (checks needs ml_collections).
    from jaxlab import checks
    raise checks.BadInput(f'unknown JAXLAB_MALLOC {choice!r}', 'JAXLAB_MALLOC',
                          'choose keep (freed memory stays mapped, jaxlab/host.py) or system '
                          '(malloc as it is)')
  if choice == 'keep':
    keep_freed_memory()
  return setting()


def keep_freed_memory():
  """Set malloc as the module docstring says, once per process; returns what it did:
  'kept' (set now or before), or the reason it left malloc alone."""
  if 'outcome' not in _state:
    _state['outcome'] = why_not() or _mallopt()
  return _state['outcome']


def setting():
  """What this process's malloc runs with, for the run's provenance: keep_freed_memory()'s
  outcome, or 'system' where it was not called."""
  return _state.get('outcome', 'system')


def _mallopt():
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return 'no mallopt in this process'
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  failed = [param for param, value in SETTINGS if mallopt(param, value) != 1]
  return f'mallopt refused {failed}' if failed else 'kept'
