"""Stopping on a signal: SIGTERM (what SLURM, Kubernetes and spot VMs send before they kill)
and SIGINT (Ctrl-C) stop the run at the end of the current dispatch with a checkpoint of the
step it reached.

`watching()` installs the handlers for a block (from the main thread only; nested blocks
share them, and the ones before are put back after the outermost). Inside `training()` (the
training loop) the first signal only raises a flag: the trainer asks `requested()` after
every dispatch, saves and raises `Preempted`. Inside `deferred()` (the launcher's imports of
JAX and the other C++ extensions) it raises the flag too, and `Preempted` follows when the
block ends. Anywhere else (loading data, compiling, between the cells of a sweep, the final
evaluation) there is nothing half-done to save, so the signal raises `Preempted` at once.
Either way a second signal kills the process at once. In a multi-process run the processes
agree through a reduction of their flags, so all of them stop after the same step, even when
only one of them received the signal.
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NAMES = {signal.SIGINT: 'interrupted (Ctrl-C)', signal.SIGTERM: 'preempted (SIGTERM)'}

_flag = threading.Event()
_received = []  # the signal numbers received since the last clear()
_depth = 0  # nested watching() blocks
_previous = {}  # the handlers watching() replaced
_deferring = 0  # nested deferred() blocks (the training loop is one)


class Preempted(BaseException):
  """The run was stopped by SIGINT or SIGTERM; `step` is the step its checkpoint holds (None
  when it stopped before training or after its last checkpoint). A BaseException, like
  KeyboardInterrupt: no `except Exception` on the way up swallows it."""

  def __init__(self, step, workdir, signum=signal.SIGTERM):
    self.step, self.workdir, self.signum = step, workdir, signum
    self.exit_code = 128 + int(signum)  # 130 for Ctrl-C, 143 for SIGTERM: what shells expect
    name = _NAMES.get(signum, f'stopped by signal {int(signum)}')
    if step is None:
      text = (f'{name}: stopped before training (or after its last checkpoint); nothing was '
              'lost; rerun the same command to go on')
    else:
      text = (f'{name}: {workdir} saved a checkpoint at step {step} and stopped; rerun the '
              'same command to resume from there')
    super().__init__(text)


def _on_signal(signum, frame):
  del frame
  _received.append(signum)
  for s in SIGNALS:  # a second signal ends the process at once
    signal.signal(s, signal.SIG_DFL)
  _flag.set()
  if not _deferring:
    raise Preempted(None, None, signum)


@contextlib.contextmanager
def watching():
  """Catch SIGINT and SIGTERM during the block (a no-op off the main thread, where signals
  cannot be caught)."""
  global _depth
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  if _depth == 0:
    for s in SIGNALS:
      _previous[s] = signal.signal(s, _on_signal)
  _depth += 1
  try:
    yield
  finally:
    _depth -= 1
    if _depth == 0:
      for s, handler in _previous.items():
        signal.signal(s, handler)
      _previous.clear()


@contextlib.contextmanager
def deferred():
  """A block a signal must not cut: the first signal only raises the flag, and Preempted is
  raised when the outermost such block ends. The training loop is one (it asks `requested()`
  after every dispatch and saves first); importing JAX and the other C++ extensions is
  another (an exception raised inside an extension's initialisation aborts the interpreter or
  turns into an ImportError)."""
  global _deferring
  _deferring += 1
  try:
    yield
  finally:
    _deferring -= 1
  if _flag.is_set() and not _deferring:  # a signal after the block's last look at the flag
    raise Preempted(None, None, signal_received())


training = deferred  # the training loop: a signal only raises the flag `requested()` reads


def signal_received():
  """The first signal received since the last clear() (SIGTERM when the stop was asked by
  `request()`)."""
  return _received[0] if _received else signal.SIGTERM


def request():
  """Ask the run to stop as a SIGTERM would (tests, or a library user's own signal handler)."""
  _flag.set()


def clear():
  """Forget a request (after the run that honoured it stopped) and watch for the next one."""
  _flag.clear()
  _received.clear()
  if _depth and threading.current_thread() is threading.main_thread():
    for s in SIGNALS:
      signal.signal(s, _on_signal)


def requested():
  """Whether any process of the run was asked to stop. Every process must call it at the same
  point of the loop: with several processes it is a collective (a max over their flags)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  local = np.int32(_flag.is_set())
  if jax.process_count() == 1:
    return bool(local)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.max(multihost_utils.process_allgather(local)))
