"""Orbax checkpoints of the train state: periodic, atomic, resumable.

With `trainable_only` (config `checkpoint.params='trainable'`) a checkpoint leaves out the
frozen parameters (for PEFT, the whole pretrained backbone): a resumed run takes them from
the state it rebuilt from the same config, and `backbone.json` in the workdir records where
they came from and their fingerprint, so a resume or an export with other weights is refused
instead of silently mixing adapters with the wrong backbone.
"""

import hashlib
import os
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlab import checks
from jaxlab.io.writers import read_json, write_json
from jaxlab.params import flatten

PARAMS = ('all', 'trainable')  # checkpoint.params: what a checkpoint holds
BACKBONE = 'backbone.json'


def fingerprint(tree):
  """sha256 of a tree of arrays: every leaf's path, dtype, shape and bytes, in path order."""
  h = hashlib.sha256()
  for path, leaf in sorted(flatten(tree).items()):
    a = np.ascontiguousarray(jax.device_get(leaf))
    h.update(f'{path}|{a.dtype}|{a.shape}|'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def backbone_record(frozen, source=None):
  """What backbone.json holds: the frozen parameters' source (a dict the family gives, e.g.
  {'source': 'timm', 'path': ...}), fingerprint, count and bytes."""
  leaves = jax.tree.leaves(frozen)
  return {**(source or {}), 'fingerprint': fingerprint(frozen),
          'frozen_parameters': int(sum(np.size(x) for x in leaves)),
          'frozen_bytes': int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves))}


def describe_backbone(record):
  return (f"{record.get('source', '?')} {record.get('path', '')}".strip()
          + f" (fingerprint {record.get('fingerprint', '?')[:12]})")


def check_backbone(workdir, record):
  """Write workdir/backbone.json, or check it against `record` when it exists (a resume).
  Returns None when it matches (or is new), or the saved record when the run in the workdir was
  trained on the sweep's own pretraining (source 'pretrain', the same folder) as it stood
  earlier: a shorter pretraining since continued, whose runs are superseded (the file then
  records `record`). Any other difference is a ValueError that names both sources."""
  path = os.path.join(workdir, BACKBONE)
  if not os.path.exists(path):
    write_json(path, record)
    return None
  saved = read_json(path)
  if saved.get('fingerprint') == record['fingerprint']:
    return None
  if saved.get('source') == record.get('source') == 'pretrain' and (
      saved.get('path') == record.get('path')):
    write_json(path, record)
    return saved
  raise ValueError(
      f'{workdir} holds a run on the frozen backbone {describe_backbone(saved)}, but the '
      f'backbone now is {describe_backbone(record)}. Resume it with the same weights, or use '
      'another --workdir')


def saved_steps(directory):
  """The steps saved in a checkpoint directory, ascending: orbax's checkpoint_steps (finished
  saves only, not one still being written). A plain listing: no orbax manager, so no
  cross-process synchronisation (each process of a multi-process run may call it alone)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(s) for s in ocp.utils.checkpoint_steps(directory))


def unreadable_latest(directory):
  """(step, folder, reason) when orbax cannot read the tree metadata of the latest step under
  `directory` (the one a resume restores): its item or the item's metadata missing or not
  decodable, as orbax's StandardCheckpointHandler.metadata finds. None when it reads, or
  nothing is saved. The arrays themselves are read by the restore (Checkpointer.restore names
  a step whose arrays do not decode)."""
  steps = saved_steps(directory)
  if not steps:
    return None
  step = steps[-1]
  folder = os.path.join(os.fspath(directory), str(step))
  try:
    meta = ocp.StandardCheckpointHandler().metadata(pathlib.Path(folder) / 'default')
  except Exception as e:  # pylint: disable=broad-except  # whatever orbax raised, named
    reason = ' '.join(str(e).split()).split('. See full TensorStore details')[0][:200]
    return step, folder, f'orbax cannot read its metadata ({type(e).__name__}: {reason})'
  if meta is None:
    return step, folder, 'orbax finds no metadata of its saved tree in it'
  return None


class Checkpointer:
  """Saves the state every `every_steps` steps (and when forced), keeping the last `keep`;
  with `trainable_only`, without `state.frozen` (restored from the state given to `restore`)."""

  def __init__(self, directory, every_steps, keep, trainable_only=False):
    self.every = max(int(every_steps), 1)
    self.trainable_only = trainable_only
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)),
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(every_steps), 1), max_to_keep=keep, create=True))
    self._durable, self._writing, self._closed = self.manager.latest_step(), None, False

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, like, step=None):
    """The saved state at `step` (default: the latest) with the structure of `like`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._saved(like))
    try:
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except  # whatever orbax raised, named
      folder = os.path.join(os.fspath(self.manager.directory), str(step))
      reason = str(e).split('. See full TensorStore details')[0]
      raise checks.Damaged(
          f'checkpoint step {step} cannot be restored ({type(e).__name__}: {reason})', folder,
          f'delete {folder} to resume from the checkpoint before it (or from the start when '
          'there is none), or use another --workdir') from e
    return restored.replace(frozen=like.frozen) if self.trainable_only else restored

  def counters(self, step):
    """The host-side counters saved with `step` (time spent, steps timed, ...): {} when it
    has none."""
    try:
      return dict(self.manager.metadata(step).custom_metadata or {})
    except Exception:  # pylint: disable=broad-except  # no metadata: counters start again
      return {}

  def nbytes(self, state):
    """Bytes of what a checkpoint of `state` holds (before orbax's own small overhead)."""
    return int(sum(np.size(x) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(self._saved(state))))

  def check_space(self, state):
    """checks.EnvFailure, naming the run's workdir (the folder above the checkpoints), when
    its disk cannot hold one more checkpoint of `state` (orbax writes a new one before it
    deletes an old one): before training and before each save, so that a filling disk stops
    the run in one line, before orbax's writes fail."""
    directory = os.fspath(self.manager.directory)
    need, free = self.nbytes(state), shutil.disk_usage(directory).free
    if free < need * 1.05 + (1 << 20):
      raise checks.EnvFailure(
          f'not enough space left for a checkpoint: it takes about {checks.size_text(need)} '
          f'and {checks.size_text(free)} are free', os.path.dirname(directory),
          'free some space on that disk, or give --workdir on another one')

  def _saved(self, state):
    return state.replace(frozen={}) if self.trainable_only else state

  def due(self, step):
    """Whether `save` saves at `step` without being forced."""
    return int(step) % self.every == 0

  def save(self, step, state, force=False, counters=None):
    """Save if `step` is on the interval (or `force`); returns whether it saved. (The interval
    is decided here: orbax's own also saves the first step it is offered.) `counters`: host
    numbers saved with it (`counters(step)` reads them back). Every process of a
    multi-process run calls it at the same steps; orbax writes one checkpoint."""
    if not force and not self.due(step):
      return False
    self.check_space(state)
    saved = self.manager.save(int(step), args=ocp.args.StandardSave(self._saved(state)),
                              force=True, custom_metadata=dict(counters or {}))
    if saved:  # orbax finished the save before this one first
      self._durable = self._writing if self._writing is not None else self._durable
      self._writing = int(step)
    return saved

  def durable_step(self):
    """The latest step whose checkpoint is whole on disk (None if none): a save counts once
    orbax has finished it, which it does before the next save starts and at close (not when
    its writing threads say they are done: a kill then can still leave the step unfinalised)."""
    return self._durable

  def close(self):
    """Wait for the last save; closing again does nothing."""
    if self._closed:
      return
    self.manager.wait_until_finished()
    if self._writing is not None:
      self._durable, self._writing = self._writing, None
    self.manager.close()
    self._closed = True
