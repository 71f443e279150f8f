"""One writer per workdir: a lock held for the life of the run that writes it.

`hold(workdir)` takes an exclusive `flock` on `workdir/.jaxlab.lock` and writes who holds
it (host, pid, start time, command). A second run on the same workdir is refused with
checks.WorkdirBusy naming the holder. The kernel releases a `flock` when its process dies,
however it dies, so a lock whose holder was killed is free: the next run takes it over and
says whose it was. A run that ends empties the file.

Within one process `hold` nests (a sweep holds its workdir, each cell its own, and `fit` the
one it writes). `hold(workdir, shared=True)` is what a sweep.only job holds on the sweep's
workdir: any number of shared holders go together (each also holds its own cell's workdir,
exclusively), while a whole sweep (exclusive) and a sweep.only job refuse each other.
`serial(workdir)` waits its turn for a short section (assembling a sweep's outputs) that
jobs sharing a workdir must run one at a time. In a multi-process run (jax.distributed) process 0 holds the lock for the
job and the processes agree on the outcome before any of them goes on.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys

from jaxlab import checks

LOCK_FILE = '.jaxlab.lock'
_held = {}  # real path of a workdir -> how many nested holds of this process


def _record():
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
          'command': ' '.join(sys.argv)}


def _read(fd):
  os.lseek(fd, 0, os.SEEK_SET)
  raw = os.read(fd, 1 << 16)
  try:
    return json.loads(raw) if raw.strip() else None
  except ValueError:
    return None  # torn by a crash mid-write: nobody's


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def describe(holder):
  """'host H, pid P, started T: COMMAND' of a lock record."""
  if not holder:
    return 'a run that did not say who it is'
  text = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"
  return text + (f": {holder['command']}" if holder.get('command') else '')


def _take(workdir, log, shared=False):
  """The locked file descriptor of `workdir`'s lock, or checks.WorkdirBusy."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
      locked = True
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        holder = _read(fd)
        who = describe(holder) if holder else 'sweep.only jobs, one per cell'
        raise checks.WorkdirBusy(f'another run is writing this workdir ({who})',
                                 path, 'wait for it to end (or stop it), or use another '
                                 '--workdir') from None
      locked = False  # a file system without flock: the record alone decides
    if shared:  # the record names an exclusive holder alone (shared ones would overwrite it)
      return fd
    previous = _read(fd)
    if previous:
      here = previous.get('host') == socket.gethostname()
      if not locked and here and previous.get('pid') != os.getpid() and _alive(previous['pid']):
        raise checks.WorkdirBusy(
            f'another run is writing this workdir ({describe(previous)})', path,
            'wait for it to end (or stop it), or use another --workdir')
      why = ('is no longer running' if here and not _alive(previous.get('pid', -1))
             else 'no longer holds it')
      log(f'note: {workdir}: took over the lock of a run that {why} ({describe(previous)})')
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(_record()) + '\n').encode())
    os.fsync(fd)
    return fd
  except BaseException:
    os.close(fd)
    raise


def _release(fd, shared=False):
  if shared:
    os.close(fd)  # the record is not this holder's to empty
    return
  try:
    os.ftruncate(fd, 0)  # empty: free (the file stays, so that nobody locks a deleted inode)
  except OSError:
    pass
  os.close(fd)  # releases the flock


def _agree(error):
  """In a multi-process run: whether process 0 took the lock, told to every process (each
  raises when it did not). One process: `error` as it is."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return error
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  failed = bool(np.max(multihost_utils.process_allgather(np.int32(error is not None))))
  if failed and error is None:
    return checks.WorkdirBusy('process 0 could not take the workdir\'s lock', LOCK_FILE,
                              'see process 0\'s error')
  return error


@contextlib.contextmanager
def hold(workdir, log=None, shared=False):
  """Hold `workdir`'s lock for the block (created if needed; nested holds of one process are
  free). Raises checks.WorkdirBusy while another live run holds it (`shared`: while another
  holds it exclusively; shared holders go together)."""
  log = log or (lambda line: print(line, file=sys.stderr))
  key = os.path.realpath(workdir)
  if key in _held:
    _held[key] += 1
    try:
      yield
    finally:
      _held[key] -= 1
    return
  from jaxlab.io.writers import is_writer  # pylint: disable=g-import-not-at-top
  fd, error = None, None
  if is_writer():
    try:
      fd = _take(workdir, log, shared)
    except checks.WorkdirBusy as e:
      error = e
  error = _agree(error)
  if error is not None:
    if fd is not None:
      _release(fd, shared)
    raise error
  _held[key] = 1
  try:
    yield
  finally:
    del _held[key]
    if fd is not None:
      _release(fd, shared)


SERIAL_FILE = '.jaxlab.serial.lock'


@contextlib.contextmanager
def serial(workdir):
  """Run the block while no other process runs a `serial` block of `workdir`: waits its turn
  (process 0 alone takes it; the others write nothing)."""
  from jaxlab.io.writers import is_writer  # pylint: disable=g-import-not-at-top
  if not is_writer():
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(os.path.join(workdir, SERIAL_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
      pass  # a file system without flock: nothing to wait for
    yield
  finally:
    os.close(fd)


def free(workdir):
  """Whether no process holds `workdir`'s lock at all (shared or exclusive) right now."""
  path = os.path.join(workdir, LOCK_FILE)
  if not os.path.exists(path):
    return True
  fd = os.open(path, os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except OSError:
    return False
  finally:
    os.close(fd)
