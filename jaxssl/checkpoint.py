"""Checkpoints: the one module that imports orbax.

A checkpoint holds the train state (sharded arrays, saved and restored in place on the mesh)
and the input pipeline's position (JSON), so a restarted run continues exactly.
"""

import os

import orbax.checkpoint as ocp

DIRECTORY = "checkpoints"  # inside the workdir


class Checkpointer:
  """Periodic and final checkpoints in ``workdir/checkpoints``, keeping the last ``keep``."""

  def __init__(self, workdir, keep):
    self.manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), DIRECTORY),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "data"))

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return self.manager.all_steps()

  def delete(self, step):
    self.manager.delete(step)

  def save(self, step, state, data_position):
    """Saves asynchronously; a second save of the same step is a no-op."""
    if step in self.manager.all_steps():
      return
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)))

  def restore(self, step, abstract_state):
    """Restores ``step`` onto the shardings carried by ``abstract_state`` (ShapeDtypeStructs)."""
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def close(self):
    """Blocks until pending saves are on disk."""
    self.manager.wait_until_finished()
    self.manager.close()
