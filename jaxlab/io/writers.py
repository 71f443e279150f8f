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

from jaxlab.checks import Damaged
from jaxlab.io.provenance import now


def plain(x):
  """JSON-safe version of numpy / jax scalars and arrays; NaN and inf become null."""
  if isinstance(x, dict):
    return {str(k): plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [plain(v) for v in x]
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    x = np.asarray(x)
    return plain(x.item() if x.ndim == 0 else x.tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def flat_config(tree, prefix=''):
  """{dotted field: value} of a config as a dict (ConfigDict.to_dict()): {'train.batch_size': 64}."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(flat_config(value, name + '.'))
    else:
      out[name] = value
  return out


def is_number(value):
  """Whether `value` is a finite int or float (not a bool): a number a plot can show."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def numbers(record):
  """The finite numbers of a metrics record as `<split>/<metric>` (step and split are not
  metrics; flags and text are left out): what TensorBoard and the trackers plot."""
  split = record.get('split', 'train')
  return {f'{split}/{key}': float(value) for key, value in record.items()
          if key not in ('step', 'split') and is_number(value)}


def is_writer():
  """Whether this process writes files: always, except in processes 1.. of a multi-process run."""
  from jaxlab.parallel import processes  # only here: tools that read files never import JAX
  return processes.is_main()


def write_json(path, obj):
  """Write `obj` to `path` atomically (a reader never sees half a file); process 0 only."""
  write_text(path, json.dumps(plain(obj), indent=2, sort_keys=True) + '\n')


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


def _damaged(path, what, fix=None):
  return Damaged(f'{os.path.basename(path)} is damaged: {what}', path,
                 fix or 'restore the file (it is rewritten only by the run that owns it), '
                 'or move the workdir aside and run again in a fresh one')


def read_json(path, fix=None):
  """The JSON object in `path`; a file that is not whole JSON (truncated by a crash or a full
  disk, or edited) is checks.Damaged naming the file, the place and `fix`."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _damaged(path, f'not JSON ({e})', fix) from e


def read_jsonl(path, fix=None):
  """The records of a JSON-lines file (an empty list if it does not exist); a line that is
  not JSON is checks.Damaged naming the file and the line."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise _damaged(path, f'line {number} is not JSON ({e})', fix) from e
  return records


class JsonlLog:
  """Appends one JSON object per line, flushed at once.

  Every record gets 'time', when it was written (UTC, ISO 8601). `keep_until_step`: on a
  resumed run, records with a larger 'step' (written after the checkpoint the run resumed
  from) are dropped first, so that the log reads as one uninterrupted run (a start's
  provenance record carries the step it started from, so it stays). `kept` holds the records
  kept (the same on every process); only process 0 touches the file.
  """

  def __init__(self, path, keep_until_step=None, also=None):
    self.path = os.fspath(path)
    # Mirrors written every record too (a TensorBoardLog, an MLflow or W&B tracker; each trims
    # or skips what a resumed run writes again itself): one, a sequence of them, or None.
    self.also = [m for m in (also if isinstance(also, (list, tuple)) else [also]) if m is not None]
    fix = (f'delete the damaged line of {self.path} (the run rewrites what came after its last '
           'checkpoint), or move the workdir aside and run again in a fresh one')
    self.kept = ([r for r in read_jsonl(self.path, fix) if r.get('step', 0) <= keep_until_step]
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

  def write(self, record, mirror=True):
    """Append `record` with its 'time'; `mirror`: write it to `also` too (metrics only)."""
    record = {**record, 'time': now()}
    if mirror:
      for m in self.also:
        m.write(record)
    if not self.writer:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(plain(record), sort_keys=True) + '\n')
