"""Run outputs: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard events.

Only process 0 writes, so multi-host runs produce one record per step.
"""

import json
import math
import os

import jax

from jaxssl import files


class MetricWriter:
  """Appends to a run's records; on resume from ``start_step`` it first drops the records of
  later steps, which the interrupted run logged but will be logged again (``kept``: the records
  left, those of the steps up to ``start_step``). A run that starts at step 0 starts them
  afresh."""

  def __init__(self, workdir, start_step=0):
    self.enabled = jax.process_index() == 0
    self.kept = []
    if self.enabled:
      path = os.path.join(workdir, "metrics.jsonl")
      self.kept = [r for r in read_metrics(workdir) if r["step"] <= start_step
                  ] if start_step and os.path.exists(path) else []
      files.write_text(path, "".join(json.dumps(r) + "\n" for r in self.kept))
      self.jsonl = open(path, "a", encoding="utf-8")
      # Imported here, not at the top: tensorboardX imports torch where it is installed (~2 s),
      # which only the commands that write metrics should pay.
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step, split, metrics):
    """Appends ``{"step", "split", **metrics}``; scalars go to TensorBoard as ``split/name``."""
    if not self.enabled:
      return
    # JSON has no NaN or infinity: a non-finite value is written as null.
    values = {
        name: None if isinstance(value, float) and not math.isfinite(value) else value
        for name, value in metrics.items()
    }
    self.jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self.jsonl.flush()
    for name, value in metrics.items():
      if isinstance(value, (int, float)):
        self.tensorboard.add_scalar(f"{split}/{name}", value, int(step))

  def close(self):
    if self.enabled:
      self.jsonl.close()
      self.tensorboard.close()


def read_metrics(workdir):
  """All records of a run's metrics.jsonl, in order. A last line that is not JSON was cut short
  by a killed run, and is left out."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  records = [json.loads(line) for line in lines[:-1]]
  try:
    records += [json.loads(line) for line in lines[-1:]]
  except json.JSONDecodeError:
    pass
  return records
