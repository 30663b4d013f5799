"""The train loop that pretraining and fine-tuning share: steps, windowed train metrics,
evaluation, checkpoints, SIGTERM and a progress bar. What differs between runs (the step, the
batches, how sums become metrics, what evaluation and a checkpoint are) comes in as functions.
"""

import signal
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from tqdm import tqdm


class StopSignal:
  """Turns SIGTERM into a request to checkpoint and stop (all hosts agree on the step)."""

  def __init__(self):
    self.requested = False
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self, step):
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


def add_sums(total, sums):
  return sums if total is None else jax.tree.map(jnp.add, total, sums)


def train(state,
          *,
          train_step: Callable,
          batches: Iterator,
          rng,
          start_step: int,
          num_steps: int,
          summarize: Callable,
          evaluate: Callable,
          save: Callable,
          writer,
          schedule: Callable,
          log_every: int,
          eval_every: int,
          checkpoint_every: int,
          description: str,
          progress_metric: str,
          stop_on_sigterm: bool = True):
  """Runs ``train_step`` from ``start_step`` to ``num_steps``; returns (state, last step,
  last evaluation's metrics).

  ``batches`` yields ``(batch, counts)``: the step's input and ``{unit: n}`` of what it holds
  (real tokens, rows), logged as ``{unit}_per_second``. ``train_step(state, batch, rng) ->
  (state, sums)``; ``summarize(sums, num_steps) -> metrics``; ``evaluate(state) -> metrics``;
  ``save(step, state)`` checkpoints (every ``checkpoint_every`` steps, at the end, and when
  SIGTERM asks the run to stop, if ``stop_on_sigterm``).
  """
  stop = StopSignal() if stop_on_sigterm else None
  step = start_step
  eval_metrics = {}
  progress = tqdm(
      total=num_steps,
      initial=start_step,
      desc=description,
      disable=jax.process_index() != 0,
      dynamic_ncols=True)
  window_sums, window_counts, window_steps = None, {}, 0
  window_start = time.perf_counter()
  while step < num_steps:
    batch, counts = next(batches)
    state, sums = train_step(state, batch, rng)
    step += 1
    window_sums = add_sums(window_sums, sums)
    window_counts = {unit: window_counts.get(unit, 0) + n for unit, n in counts.items()}
    window_steps += 1
    progress.update(1)
    if step % log_every == 0 or step == num_steps:
      train_metrics = summarize(jax.device_get(window_sums), window_steps)
      elapsed = time.perf_counter() - window_start
      for unit, count in window_counts.items():
        train_metrics[f"{unit}_per_second"] = count / elapsed
      train_metrics["learning_rate"] = float(schedule(step))
      writer.write(step, "train", train_metrics)
      postfix = {progress_metric: f"{train_metrics[progress_metric]:.3f}"}
      if "tokens_per_second" in train_metrics:
        postfix["tok_s"] = f"{train_metrics['tokens_per_second']:.0f}"
      progress.set_postfix(postfix)
      window_sums, window_counts, window_steps = None, {}, 0
      window_start = time.perf_counter()
    if step % eval_every == 0 or step == num_steps:
      eval_metrics = evaluate(state)
      writer.write(step, "eval", eval_metrics)
    stopping = stop is not None and stop.should_stop(step)
    if step % checkpoint_every == 0 or step == num_steps or stopping:
      save(step, state)
    if stopping:
      break
  progress.close()
  return state, step, eval_metrics
