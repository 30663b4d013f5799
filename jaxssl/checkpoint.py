"""Checkpoints: the one module that imports orbax.

A checkpoint holds the train state (sharded arrays, saved and restored in place on the mesh)
and the input pipeline's position (JSON), so a restarted run continues exactly.
"""

import contextlib
import errno
import logging
import os
import re
import shutil

import jax
import orbax.checkpoint as ocp

DIRECTORY = "checkpoints"  # inside the workdir


@contextlib.contextmanager
def os_errors(directory):
  """Turns orbax's report of a failed file write (a ValueError carrying the OS error code, e.g.
  a full disk) into the ``OSError`` it stands for, naming ``directory``."""
  try:
    yield
  except ValueError as error:
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code is None:
      raise
    number = int(code.group(1))
    raise OSError(number, os.strerror(number), directory) from error


@contextlib.contextmanager
def _quiet_read_only_note():
  """Hides orbax's warning that a read-only manager's directory is read only: asked for."""
  logger = logging.getLogger("absl")
  note = lambda record: "is read only" not in record.getMessage()
  logger.addFilter(note)
  try:
    yield
  finally:
    logger.removeFilter(note)


def _score(metrics, name):
  """A checkpoint's rank by ``metrics[name]``; one without it (or with NaN) ranks last."""
  value = (metrics or {}).get(name)
  return value if isinstance(value, (int, float)) and value == value else -float("inf")


class Checkpointer:
  """Periodic and final checkpoints in ``workdir/checkpoints``, keeping the last ``keep``, and,
  with ``best_metric``, also the one whose evaluation scored highest on it (orbax's BestN).

  ``read_only``: for a reader beside a possibly running job (predict, export): it neither
  creates, deletes nor cleans anything. A writer (the run holding the workdir) first removes
  the unfinished writes a killed run left behind.
  """

  def __init__(self, workdir, keep=1, read_only=False, best_metric=None):
    self.directory = os.path.join(os.path.abspath(workdir), DIRECTORY)
    self.read_only = read_only
    self.best_metric = best_metric
    best_fn = (lambda metrics: _score(metrics, best_metric)) if best_metric else None
    if read_only:
      options = ocp.CheckpointManagerOptions(
          save_interval_steps=0, read_only=True, create=False, best_fn=best_fn)
    elif best_metric:
      policies = ocp.checkpoint_managers
      options = ocp.CheckpointManagerOptions(
          best_fn=best_fn,  # orbax writes each checkpoint's metrics only when it has one
          preservation_policy=policies.AnyPreservationPolicy([
              policies.LatestN(n=keep),
              policies.BestN(get_metric_fn=best_fn, n=1),
          ]),
          cleanup_tmp_directories=True)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, cleanup_tmp_directories=True)
    with _quiet_read_only_note():
      self.manager = ocp.CheckpointManager(
          self.directory, options=options, item_names=("state", "data"))

  def save(self, step, state, data_position, metrics=None):
    """Saves asynchronously; a second save of the same step is a no-op. ``metrics``: the
    evaluation at this step, if any (ranked by ``best_metric``). A disk without room for the
    state is an ``OSError`` before anything is written."""
    if step in self.manager.all_steps():
      return
    needed = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(state))
    free = shutil.disk_usage(self.directory).free
    if needed > free:
      raise OSError(
          errno.ENOSPC, f"No space left on device for checkpoint {step} ({needed / 2**20:.0f} "
          f"MB needed, {free / 2**20:.0f} MB free)", self.directory)
    with os_errors(self.directory):  # the previous save's failure surfaces here
      self.manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)),
          metrics=(metrics or {}) if self.best_metric else None)

  def restore(self, step, abstract_state):
    """Restores ``step`` onto the shardings carried by ``abstract_state`` (ShapeDtypeStructs)."""
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def restore_latest(self, abstract_state):
    """(step, state, data position) of the newest checkpoint that restores, or (None, None,
    None) when there is none. A newer one that cannot be read (a write cut short, a damaged
    disk) is skipped with a one-line note, and deleted unless ``read_only``, so a run resumes
    from the one before and saves that step again."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, data_position = self.restore(step, abstract_state)
        return step, state, data_position
      except Exception as error:  # pylint: disable=broad-except  (orbax raises many kinds)
        lines = str(error).strip().splitlines()
        reason = lines[0][:200] if lines else type(error).__name__
        action = "using" if self.read_only else "deleting it and resuming from"
        print(f"note: checkpoint {step} cannot be read ({reason}); {action} the one before.")
        if not self.read_only:
          self.manager.delete(step)
    return None, None, None

  def latest_step(self):
    return self.manager.latest_step()

  def best_step(self):
    """The step whose evaluation scored highest on ``best_metric`` (the later of a tie; the
    latest when none was evaluated); None when there is no checkpoint."""
    return self.manager.best_step()

  def metrics(self, step):
    """The evaluation metrics saved with ``step`` ({} or None when it had none)."""
    return self.manager.metrics(step)

  def close(self):
    """Blocks until pending saves are on disk."""
    with os_errors(self.directory):
      self.manager.wait_until_finished()
    self.manager.close()
