"""Orbax checkpoints of the train state: periodic, atomic, resumable."""

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves the state every `every_steps` steps (and when forced), keeping the last `keep`."""

  def __init__(self, directory, every_steps, keep):
    self.every = max(int(every_steps), 1)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)),
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(every_steps), 1), max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, like, step=None):
    """The saved state at `step` (default: the latest) with the structure of `like`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def save(self, step, state, force=False):
    """Save if `step` is on the interval (or `force`); returns whether it saved. (The interval
    is decided here: orbax's own also saves the first step it is offered.) Every process of a
    multi-process run calls it at the same steps; orbax writes one checkpoint."""
    if not force and int(step) % self.every:
      return False
    return self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
