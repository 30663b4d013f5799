"""The shared train loop's throughput: real tokens only, over training time only."""

import time
import types

import numpy as np

from jaxssl import metrics as metrics_lib
from jaxssl.core import finetune
from jaxssl.core import trainer
from jaxssl.core.objectives import bert
from jaxssl.core.objectives import gpt
from jaxssl.core.tasks import catalog


def test_throughput_counts_the_real_tokens_of_a_padded_batch():
  pad = types.SimpleNamespace(pad_id=0)
  ids = np.array([[5, 6, 7, 0, 0, 0], [5, 6, 0, 0, 0, 0], [5, 6, 7, 8, 9, 0]])
  weights = np.array([1.0, 1.0, 0.0])  # the last row pads the batch to its size
  assert bert.Objective.real_tokens({"input_ids": ids, "example_weights": weights}, pad) == 5
  assert gpt.Objective.real_tokens({"input_ids": ids, "example_weights": weights}, pad) == 12

  lengths = np.array([3, 9, 20, 5])
  mask = (np.arange(32)[None, :] < lengths[:, None]).astype(np.int32)
  rows = catalog.Rows(
      {
          "input_ids": mask * np.arange(1, 5)[:, None],  # a row's id is its index + 1
          "segment_ids": np.zeros_like(mask),
          "attention_mask": mask
      },
      np.arange(4),
      [{}] * 4,
      {},
      {},
      0)
  batches = finetune.train_batches(rows, 2, seed=0, lengths=finetune.bucket_lengths(32))
  for _ in range(6):
    batch, counts = next(batches)
    assert counts == {"rows": 2, "tokens": lengths[batch["input_ids"][:, 0] - 1].sum()}
    assert counts["tokens"] < batch["attention_mask"].size  # the padding is not counted


def test_throughput_leaves_out_compiling_evaluating_and_saving(tmp_path):
  """A fake step that takes 0.5 s on each new batch shape (as jit compiles) and 0.01 s after, an
  evaluation and a checkpoint of 0.5 s each: the logged rate is the steps' alone."""

  def run(workdir):
    seen = set()

    def train_step(state, batch, rng):
      del rng
      time.sleep(0.5 if batch["x"].shape not in seen else 0.01)
      seen.add(batch["x"].shape)
      return state, {"loss": np.float32(1.0), "grad_norm": np.float32(1.0)}

    shapes = iter([(2, 8), (2, 8), (2, 16), (2, 16)])
    batches = (({"x": np.zeros(shape)}, {"rows": 2}) for shape in shapes)
    writer = metrics_lib.MetricWriter(str(workdir))
    trainer.train(
        types.SimpleNamespace(params={"w": np.ones(2)}),
        train_step=train_step,
        batches=batches,
        rng=None,
        start_step=0,
        num_steps=4,
        summarize=lambda sums, n: {"loss": float(sums["loss"]) / n},
        evaluate=lambda state: time.sleep(0.5) or {"accuracy": 1.0},
        save=lambda step, state, metrics: time.sleep(0.5),
        writer=writer,
        schedule=lambda step: 0.0,
        log_every=2,
        eval_every=2,
        checkpoint_every=2,
        description="test",
        progress_metric="loss")
    writer.close()
    return [r for r in metrics_lib.read_metrics(str(workdir)) if r["split"] == "train"]

  # The loop's own jitted checks (finite sums and parameters) compile on their first call, which
  # on a busy machine takes longer than the whole budget below; a first run pays for that.
  run(tmp_path / "warm")
  records = run(tmp_path / "timed")
  assert [r["step"] for r in records] == [2, 4]
  for record in records:  # one new shape per window; without the exclusions each took > 1 s
    assert 0.5 <= record["compile_seconds"] < 1.0
    assert 2 / record["rows_per_second"] < 0.3
