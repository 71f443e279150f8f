"""TensorBoard scalars beside metrics.jsonl (--config.log.tensorboard=true; pip install
'jaxlab[tensorboard]', tensorboardX: no TensorFlow needed).

Every record the trainer logs becomes scalars `<split>/<metric>` (its finite numbers) at its
step in workdir/tensorboard. A resumed run purges what was logged after the checkpoint it resumed
from, as metrics.jsonl is trimmed: `tensorboard --logdir WORKDIR` shows one uninterrupted run.
`read_scalars` reads the events back (with the same purge) without TensorBoard installed.
"""

import glob
import os
import shutil
import struct
import time

from jaxlab.io.writers import is_writer, numbers


class TensorBoardLog:
  """Writes each metrics record's numbers as scalars through tensorboardX's SummaryWriter,
  flushed at once (a record logged is on disk, as in metrics.jsonl); process 0 only. A resumed
  run opens its writer with purge_step = the resumed step + 1: TensorBoard then hides what
  earlier attempts logged from that step on."""

  def __init__(self, logdir, resumed_from=None):
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      raise ValueError("log.tensorboard=true needs tensorboardX: pip install 'jaxlab[tensorboard]' "
                       '(or --config.log.tensorboard=false)') from None
    self.writer = None
    if not is_writer():
      return
    if resumed_from is None and os.path.isdir(logdir):
      shutil.rmtree(logdir)  # a fresh start: nothing of an earlier attempt stays visible
    # Its own file per attempt (the writer's name has only the second it was made).
    self.writer = SummaryWriter(
        logdir, purge_step=None if resumed_from is None else int(resumed_from) + 1,
        filename_suffix=f'.{os.getpid()}.{time.time_ns()}')

  def write(self, record):
    if self.writer is None:
      return
    for tag, value in numbers(record).items():
      self.writer.add_scalar(tag, value, int(record['step']))
    self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()
      self.writer = None


def _records(path):
  """The serialized records of one TFRecord event file."""
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    yield data[pos + 12:pos + 12 + length]
    pos += 12 + length + 4  # length, its crc, the data, the data's crc


def read_scalars(logdir):
  """{tag: [(step, value), ...]} of every event file in `logdir`, in write order, with what a
  later restart purged (its SessionLog START at step p hides earlier events at steps ≥ p)
  left out, as TensorBoard shows it."""
  from tensorboardX.proto import event_pb2
  scalars = {}
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*')),
                     key=os.path.getmtime):
    for raw in _records(path):
      event = event_pb2.Event.FromString(raw)
      if event.HasField('session_log') and event.session_log.status == event.session_log.START:
        scalars = {tag: [(s, v) for s, v in points if s < event.step]
                   for tag, points in scalars.items()}
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars
