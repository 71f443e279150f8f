"""Files a person reads: JSON written atomically, JSON lines appended and flushed.

In a multi-process run (jax.distributed) every process computes the same
results; only process 0 writes them (`is_writer`), so a workdir holds one copy
of each file whichever the number of processes.
"""

import json
import math
import os
import tempfile

import numpy as np


def _plain(x):
  """JSON-safe version of numpy / jax scalars and arrays; NaN and inf become null."""
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    x = np.asarray(x)
    return _plain(x.item() if x.ndim == 0 else x.tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def is_writer():
  """Whether this process writes files: always, except in processes 1.. of a multi-process run."""
  from jaxlab.parallel import processes  # only here: tools that read files never import JAX
  return processes.is_main()


def write_json(path, obj):
  """Write `obj` to `path` atomically (a reader never sees half a file); process 0 only."""
  write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=True) + '\n')


def write_text(path, text):
  """Write `text` to `path` atomically; process 0 only."""
  if not is_writer():
    return
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def read_jsonl(path):
  """The records of a JSON-lines file (an empty list if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class JsonlLog:
  """Appends one JSON object per line, flushed at once.

  `keep_until_step`: on a resumed run, records with a larger 'step' (written
  after the checkpoint the run resumed from) are dropped first, so that the
  log reads as one uninterrupted run. `kept` holds the records kept (the same
  on every process); only process 0 touches the file.
  """

  def __init__(self, path, keep_until_step=None, also=None):
    self.path = os.fspath(path)
    self.also = also  # e.g. a TensorBoardLog: written every record too (it trims itself)
    self.kept = ([r for r in read_jsonl(self.path) if r.get('step', 0) <= keep_until_step]
                 if keep_until_step is not None else [])
    self.writer = is_writer()
    if not self.writer:
      return
    if keep_until_step is not None and os.path.exists(self.path):
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(json.dumps(r, sort_keys=True) + '\n' for r in self.kept)
      os.replace(tmp, self.path)
    elif keep_until_step is None and os.path.exists(self.path):
      os.remove(self.path)

  def write(self, record):
    if self.also is not None:
      self.also.write(record)
    if not self.writer:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(_plain(record), sort_keys=True) + '\n')
