"""Preemption: SIGTERM (what SLURM, Kubernetes and spot VMs send before they kill) stops the
run at the end of the current dispatch with a checkpoint of the step it reached.

`watch()` installs the handler (idempotent; from the main thread only): the
first SIGTERM only raises a flag, a second one kills as usual. The trainer
asks `requested()` after every dispatch; in a multi-process run the processes
agree through a reduction of their flags, so all of them stop after the same
step, even when only one of them received the signal.
"""

import signal
import threading

import numpy as np

_flag = threading.Event()
_installed = False


class Preempted(RuntimeError):
  """The run was asked to stop (SIGTERM) and saved a checkpoint at `step`."""

  EXIT_CODE = 143  # 128 + SIGTERM: what a scheduler expects of a terminated job

  def __init__(self, step, workdir):
    self.step, self.workdir = step, workdir
    super().__init__(
        f'preempted (SIGTERM): {workdir} saved a checkpoint at step {step} and stopped; '
        'rerun the same command to resume from there')


def _on_sigterm(signum, frame):
  del frame
  _flag.set()
  signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once


def watch():
  """Catch SIGTERM from now on (a no-op off the main thread, where signals cannot be caught)."""
  global _installed
  if _installed or threading.current_thread() is not threading.main_thread():
    return
  signal.signal(signal.SIGTERM, _on_sigterm)
  _installed = True


def request():
  """Ask the run to stop as a SIGTERM would (tests, or a library user's own signal handler)."""
  _flag.set()


def clear():
  """Forget a request (after the run that honoured it stopped) and watch for the next one."""
  global _installed
  _flag.clear()
  _installed = False
  watch()


def requested():
  """Whether any process of the run was asked to stop. Every process must call it at the same
  point of the loop: with several processes it is a collective (a max over their flags)."""
  import jax
  local = np.int32(_flag.is_set())
  if jax.process_count() == 1:
    return bool(local)
  from jax.experimental import multihost_utils
  return bool(np.max(multihost_utils.process_allgather(local)))
