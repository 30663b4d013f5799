"""The train loop that pretraining and fine-tuning share: steps, windowed train metrics,
evaluation, checkpoints, SIGTERM and a progress bar. What differs between runs (the step, the
batches, how sums become metrics, what evaluation and a checkpoint are) comes in as functions.
"""

import math
import signal
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from tqdm import tqdm


class StopSignal:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a request to checkpoint and stop; all hosts agree on
  the step. A second Ctrl-C stops at once, as Python does by default."""

  def __init__(self):
    self.received = None  # the name of the signal that asked to stop
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self._handle)
      signal.signal(signal.SIGINT, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def should_stop(self, step):
    if jax.process_count() > 1:
      stop = multihost_utils.reached_preemption_sync_point(step)
      self.received = self.received or ("a preemption notice" if stop else None)
      return stop
    return self.received is not None

  def close(self):
    """Gives the signals back to their default handlers."""
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
      signal.signal(signal.SIGINT, signal.default_int_handler)


class Stopped(Exception):
  """SIGTERM, SIGINT or a preemption notice stopped the run after it saved a checkpoint;
  rerunning the same command resumes it."""


class NonFiniteError(ValueError):
  """Training diverged: a loss, gradient or parameter is NaN or infinite."""


@jax.jit
def params_finite(params):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)]))


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
          stop_early: Callable | None = None,
          probe: Callable | None = None,
          probe_every: int = 0,
          peak_flops: float | None = None,
          profile_steps: tuple[int, int] | None = None,
          profile_dir: str | None = None):
  """Runs ``train_step`` from ``start_step`` to ``num_steps``; returns (state, last
  evaluation's metrics).

  ``batches`` yields ``(batch, counts)``: the step's input and ``{unit: n}`` of what it holds
  (real tokens, rows, model FLOPs), logged as ``{unit}_per_second`` over the window's training
  time: without evaluation, checkpoints, or the calls that compiled the step for a new batch
  shape (logged apart as ``compile_seconds``); with ``peak_flops`` (all devices' together),
  ``model_flops_per_second`` over it is logged as ``mfu``. ``profile_steps`` (first, last):
  steps traced by ``jax.profiler`` into ``profile_dir``. ``train_step(state, batch, rng) ->
  (state, sums)``; ``summarize(sums, num_steps) -> metrics``; ``evaluate(state) -> metrics``;
  ``save(step, state, metrics)`` checkpoints every ``checkpoint_every`` steps and at the end,
  with the evaluation's metrics when one ran at that step (else None). SIGTERM or
  SIGINT saves and raises ``Stopped``. ``stop_early(metrics) -> bool``, if given, sees every
  evaluation; True ends the run there, saved, with an ``{"early_stopped": true}`` train record.
  ``probe(state) -> metrics``, if given, is recorded as split "probe" for the state a fresh run
  starts from (step 0), every ``probe_every`` steps and at the end.
  A step whose loss or gradient norm is not finite stops
  the run at the next log, evaluation or checkpoint with ``NonFiniteError``, before anything
  non-finite is evaluated or saved.
  """
  stop = StopSignal()
  progress = tqdm(
      total=num_steps,
      initial=start_step,
      desc=description,
      disable=jax.process_index() != 0,
      dynamic_ncols=True)
  tracing = False
  try:
    if probe is not None and start_step == 0:
      writer.write(0, "probe", probe(state))
    last_saved = start_step or None
    step = start_step
    eval_metrics = {}
    window_sums, window_counts, window_steps, window_compile = None, {}, 0, 0.0
    window_start = time.perf_counter()
    compiled_shapes = set()
    while step < num_steps:
      batch, counts = next(batches)
      shapes = tuple(jnp.shape(leaf) for leaf in jax.tree.leaves(batch))
      if profile_steps and step + 1 == profile_steps[0]:
        jax.profiler.start_trace(profile_dir)
        tracing = True
      called = time.perf_counter()
      state, sums = train_step(state, batch, rng)
      if shapes not in compiled_shapes:  # jit traced and compiled the step inside that call
        compiled_shapes.add(shapes)
        window_compile += time.perf_counter() - called
      step += 1
      if tracing and step == profile_steps[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        tracing = False
      window_sums = add_sums(window_sums, sums)
      window_counts = {unit: window_counts.get(unit, 0) + n for unit, n in counts.items()}
      window_steps += 1
      progress.update(1)
      stopping = stop.should_stop(step)
      saving = step % checkpoint_every == 0 or step == num_steps or stopping
      if saving or step % log_every == 0 or step % eval_every == 0:
        # The window's summed gradient norm is finite only if every step's since the last log
        # was, and every step is in a window checked here.
        if (not math.isfinite(float(jax.device_get(window_sums["grad_norm"]))) or
            ((saving or step % eval_every == 0) and not params_finite(state.params))):
          writer.write(step, "train", {"non_finite": True})
          kept = (f"checkpoint {last_saved}, the last finite one, is kept"
                  if last_saved else "no checkpoint was saved")
          raise NonFiniteError(
              f"training stopped at step {step}: the loss, a gradient or a parameter is NaN or "
              f"infinite; {kept}. Lower learning_rate or raise adam_eps, then rerun the command.")
      if step % log_every == 0 or step == num_steps:
        train_metrics = summarize(jax.device_get(window_sums), window_steps)
        elapsed = time.perf_counter() - window_start - window_compile
        for unit, count in window_counts.items():
          train_metrics[f"{unit}_per_second"] = count / elapsed
        if peak_flops and "model_flops_per_second" in train_metrics:
          train_metrics["mfu"] = train_metrics["model_flops_per_second"] / peak_flops
        if window_compile:
          train_metrics["compile_seconds"] = window_compile
        train_metrics["learning_rate"] = float(schedule(step))
        writer.write(step, "train", train_metrics)
        postfix = {progress_metric: f"{train_metrics[progress_metric]:.3f}"}
        if "tokens_per_second" in train_metrics:
          postfix["tok_s"] = f"{train_metrics['tokens_per_second']:.0f}"
        if "mfu" in train_metrics:
          postfix["mfu"] = f"{train_metrics['mfu']:.1%}"
        progress.set_postfix(postfix)
        window_sums, window_counts, window_steps, window_compile = None, {}, 0, 0.0
        window_start = time.perf_counter()
      paused = time.perf_counter()
      evaluated = step % eval_every == 0 or step == num_steps
      converged = False
      if evaluated:
        eval_metrics = evaluate(state)
        writer.write(step, "eval", eval_metrics)
        converged = stop_early is not None and stop_early(eval_metrics)
      if probe is not None and (step % probe_every == 0 or step == num_steps):
        writer.write(step, "probe", probe(state))
      if saving or converged:
        save(step, state, eval_metrics if evaluated else None)
        last_saved = step
      if converged:
        writer.write(step, "train", {"early_stopped": True})
        break
      window_start += time.perf_counter() - paused  # evaluation and saving are not training
      if stopping:
        raise Stopped(f"Stopped by {stop.received} at step {step}; checkpoint saved. Rerun the "
                      "same command to resume.")
    return state, eval_metrics
  finally:
    if tracing:  # the run stopped inside the traced steps: the trace is still written
      jax.profiler.stop_trace()
    progress.close()
    stop.close()
