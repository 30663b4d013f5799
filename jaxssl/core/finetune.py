"""``run(config, workdir)``: fine-tunes a BERT encoder + head on a task
(``jaxssl.core.tasks.catalog.TASKS``) of any kind (``jaxssl.core.tasks.kinds``).

The state is a plain pytree ``{"encoder": nnx.State, "head": dict}`` trained by
``steps.make_train_step`` in ``jaxssl.core.trainer``'s loop on one device (no mesh:
fine-tuning a small encoder needs none).
Dev metrics are computed on the host from the predictions (scikit-learn, SciPy, SQuAD's
official answer matching), next to a baseline that ignores the text.

A finished workdir holds what ``jaxssl.predict`` needs: the config, the encoder's model config
(``model_config.json``), the tokenizer, the label names (``labels.json``) and the parameters.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl import workdir as workdir_lib
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core import trained
from jaxssl.core import trainer
from jaxssl.core import validation
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.core.objectives import electra as electra_objective
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
from jaxssl.data import corpora
from jaxssl.models import bert

# init_from="scratch" takes this checkpoint's config and tokenizer; "scratch:PATH" those of PATH.
SCRATCH_SHAPE = "minilm"

# Pretraining objectives whose model's ``encoder`` is a BertEncoder that fine-tuning can start from.
ENCODER_OBJECTIVES = (bert_objective.Objective.name, electra_objective.Objective.name)


def load_encoder(config):
  """(graphdef, params, tokenizer) of the encoder ``config.init_from`` names, its dropout rates
  set from the config. "scratch" (MiniLM) and "scratch:PATH" keep an encoder's architecture and
  tokenizer but give it random weights."""
  rates = dict(
      dropout_rate=config.dropout_rate, attention_dropout_rate=config.attention_dropout_rate)
  prefix, _, shape = config.init_from.partition(":")
  scratch = prefix == "scratch"
  path = (shape or SCRATCH_SHAPE) if scratch else config.init_from
  if (workdir_lib.has_config(path) and
      "objective" in workdir_lib.read_config(path)):  # a jaxssl workdir, not a Hugging Face one
    run_config, _, tokenizer, graphdef, run_params = trained.load_trained(path)
    if run_config.objective not in ENCODER_OBJECTIVES:
      raise ValueError(f"init_from={path!r} holds a {run_config.objective!r} run; fine-tuning "
                       "needs a BERT or ELECTRA pretraining workdir.")
    encoder = nnx.merge(graphdef, run_params).encoder
    cfg = dataclasses.replace(encoder.cfg, **rates)
    params = nnx.state(encoder)
  else:
    loaded = pretrained.load(path, **rates)
    if loaded.objective != bert_objective.Objective.name:
      raise ValueError(f"init_from={path!r} is a {loaded.objective.upper()} decoder; fine-tuning "
                       "needs a BERT encoder such as 'minilm'.")
    cfg, params, tokenizer = loaded.model.cfg, nnx.state(loaded.model), loaded.tokenizer
  if scratch:
    params = nnx.state(
        bert.BertEncoder(cfg, nnx.Rngs(params=rng_lib.run_key(config.seed, "params"))))
  if config.max_seq_length > cfg.max_position:
    raise ValueError(f"max_seq_length={config.max_seq_length} exceeds the encoder's position "
                     f"table ({cfg.max_position}); lower it.")
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: bert.BertEncoder(cfg, nnx.Rngs(0))))
  return graphdef, params, tokenizer


def make_forward(graphdef, head, dropout_rate):
  """``forward(params, batch, rng) -> head outputs``; ``rng`` None: no dropout (evaluation)."""

  def forward(params, batch, rng):
    encoder_rng, head_rng = jax.random.split(rng) if rng is not None else (None, None)
    encoder = nnx.merge(graphdef, params["encoder"])
    # Rows of (B, T), or of (B, K, T) with K choices per example: encoded as B * K rows.
    leading, length = batch["input_ids"].shape[:-1], batch["input_ids"].shape[-1]
    rows = lambda x: x.reshape(-1, length)
    sequence, _ = encoder(
        rows(batch["input_ids"]), rows(batch["segment_ids"]),
        rows(batch["attention_mask"]) > 0, encoder_rng)  # (B * K, T, D)
    sequence = sequence.reshape(*leading, length, -1)  # (B, T, D) or (B, K, T, D)
    return head.apply(params["head"], sequence, batch, head_rng, dropout_rate)

  return forward


def make_steps(forward, head, optimizer, accumulation_steps=1):
  """The jitted ``train_step(state, batch, rng) -> (state, sums)`` and ``eval_step(params,
  batch) -> (outputs, sums)``; sums hold ``loss``, maybe ``accuracy``, and their ``weight``.
  With ``accumulation_steps`` k > 1 a batch is k micro-batches whose mean losses' gradients
  are averaged into one update (as Hugging Face's gradient accumulation)."""

  def sums_of(outputs, batch):
    sums, weight = head.loss(outputs, batch)
    return {**sums, "weight": weight}

  def loss_fn(params, batch, rng):
    sums = sums_of(forward(params, batch, rng), batch)
    return sums["loss"] / jnp.maximum(sums["weight"], 1.0) / accumulation_steps, sums

  def eval_step(params, batch):
    outputs = forward(params, batch, None)
    return outputs, sums_of(outputs, batch)

  train_step = steps.make_train_step(loss_fn, optimizer, accumulation_steps)
  return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


def make_predict_step(forward):
  """The jitted ``predict_step(params, batch) -> (outputs, {})``: no targets needed."""
  return jax.jit(lambda params, batch: (forward(params, batch, None), {}))


def summarize(sums, num_steps):
  """Host-side means of summed ``loss``/``accuracy`` (per example) and ``grad_norm`` (per step)."""
  weight = max(float(sums["weight"]), 1.0)
  means = {name: float(sums[name]) / weight for name in ("loss", "accuracy") if name in sums}
  return steps.with_grad_norm(means, sums, num_steps)


def train_indices(num_rows, batch_size, seed, row_lengths=None, group_batches=50):
  """Endless (batch_size,) row index batches, each epoch a fresh permutation; a batch may span
  two epochs, so no row is ever dropped. With ``row_lengths`` (R,), length-grouped sampling:
  each run of ``group_batches`` batches of the permutation is sorted by row length and cut into
  batches, whose order is then shuffled, so a batch holds rows of similar length and dynamic
  padding wastes little on it (Hugging Face's ``group_by_length``)."""
  rng = np.random.default_rng(seed)
  group = batch_size * (group_batches if row_lengths is not None else 1)
  pending = np.zeros(0, np.int64)
  while True:
    while len(pending) < group:
      pending = np.concatenate([pending, rng.permutation(num_rows)])
    taken, pending = pending[:group], pending[group:]
    if row_lengths is None:
      yield taken
      continue
    batches = taken[np.argsort(row_lengths[taken], kind="stable")].reshape(-1, batch_size)
    yield from batches[rng.permutation(len(batches))]


def row_lengths(arrays):
  """(R,) real tokens of each row (of its longest choice, when a row holds K choices)."""
  mask = arrays["attention_mask"]  # (R, L) or (R, K, L)
  return mask.sum(axis=-1).reshape(len(mask), -1).max(axis=1)


def eval_batches(arrays, batch_size, lengths):
  """``(rows, batch)`` over every row, each row once, shortest first: fixed-size batches, the
  last padded with weight-0 rows, each ``trimmed`` to its bucket of ``lengths``
  (``bucket_lengths``); ``rows`` (B,) are the batch's row indices (-1 for padding)."""
  num_rows = len(arrays["input_ids"])
  order = np.argsort(row_lengths(arrays), kind="stable")
  for start in range(0, num_rows, batch_size):
    rows = np.full(batch_size, -1)
    rows[:min(batch_size, num_rows - start)] = order[start:start + batch_size]
    real = rows >= 0
    batch = {key: value[np.maximum(rows, 0)] for key, value in arrays.items()}
    batch["example_weights"] = real.astype(np.float32)
    yield rows, trimmed(batch, lengths)


def run_model(step, params, arrays, batch_size, progress=None, token_outputs=False):
  """``step`` (``eval_step`` or ``predict_step``) over every row: the outputs as numpy arrays
  with R rows in order (a (start, end) pair of them for QA) and the step's summed sums. Batches
  are padded only to the bucket their longest row needs; ``token_outputs``: outputs have a
  token axis (tagging, QA), which is padded back to the rows' length with zeros."""
  max_length = arrays["input_ids"].shape[-1]
  outputs, order, totals = [], [], None
  for rows, batch in eval_batches(arrays, batch_size, bucket_lengths(max_length)):
    batch_outputs, sums = step(params, batch)
    real = rows >= 0

    def kept(x, real=real):
      x = np.asarray(x)[real]
      return padded_tokens(x, max_length) if token_outputs else x

    outputs.append(jax.tree.map(kept, batch_outputs))
    order.append(rows[real])
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if progress is not None:
      progress.update(int(real.sum()))
  inverse = np.argsort(np.concatenate(order))  # row r's place in the batches' order
  in_order = jax.tree.map(lambda *parts: np.concatenate(parts)[inverse], *outputs)
  return in_order, jax.device_get(totals)


def padded_tokens(outputs, length):
  """(B, T, ...) outputs of a trimmed batch padded with zeros to (B, length, ...)."""
  return np.pad(outputs, [(0, 0), (0, length - outputs.shape[1])] + [(0, 0)] * (outputs.ndim - 2))


def evaluate(eval_step, params, task, rows, config):
  """Dev metrics: the head's mean loss, plus the task's metrics."""
  outputs, sums = run_model(
      eval_step,
      params,
      rows.arrays,
      config.batch_size,
      token_outputs=kinds.get(task.kind).token_outputs)
  return {
      "loss": summarize(sums, 1)["loss"],
      **catalog.score(task, rows, outputs, config.n_best, config.max_answer_length)
  }


def encode_split(config, task, tokenizer, split, num_labels, dataset=None):
  """The split's ``catalog.Rows`` (of ``dataset``, by default the task's), and a line on what
  was skipped or cut."""
  dataset = dataset or task.dataset
  examples = corpora.load_examples(dataset, split, config.data_dir)
  rows = catalog.encode(
      task,
      tokenizer,
      examples,
      config.max_seq_length,
      num_labels=num_labels,
      doc_stride=config.doc_stride,
      sliding_windows=config.get("sliding_windows", False),
      max_question_length=config.max_question_length,
      sequence_words=config.get("sequence_words", "words"),
      where=f"{dataset} {split}")
  report = {
      "examples": len(examples),
      "rows": len(rows.example_of_row),
      "truncated": rows.truncated,
      **{
          f"skipped ({reason})": count for reason, count in rows.skipped.items()
      }
  }
  skipped = ", ".join(f"{count} skipped ({reason})" for reason, count in rows.skipped.items())
  print(f"{dataset} {split}: {len(examples)} examples -> {len(rows.example_of_row)} rows; "
        f"{rows.truncated} cut to max_seq_length={config.max_seq_length}" +
        (f"; {skipped}" if skipped else ""))
  return rows, report


# Fields that fix what a workdir's checkpoints mean: resuming with any other value would
# silently continue a different run (num_train_steps may grow, as in pretraining).
RUN_IDENTITY_FIELDS = ("objective", "task", "dataset", "init_from", "seed", "train_split",
                       "max_seq_length", "batch_size", "doc_stride", "max_question_length",
                       "sliding_windows", "sequence_words")


def save_for_prediction(workdir, config, encoder_cfg, tokenizer, label_names):
  """Everything but the parameters that ``jaxssl.predict`` needs to rebuild the model; the
  config last, so a workdir with a config has all of it."""
  workdir_lib.write_model_config(workdir, encoder_cfg)
  workdir_lib.write_labels(workdir, label_names)
  tokenizer.save(workdir)
  workdir_lib.write_config(workdir, config)


def bucket_lengths(max_seq_length):
  """The lengths a batch is padded to: 16, 24, 32, 48, 64, 96, ... (each 1.5 or 1.33 times the
  one before) below ``max_seq_length``, and ``max_seq_length``; jit compiles a step once per
  length, and a batch wastes at most a third of its tokens on padding beyond its longest row."""
  lengths = [16, 24]
  while lengths[-2] * 2 < max_seq_length:
    lengths.append(lengths[-2] * 2)
  return [length for length in lengths if length < max_seq_length] + [max_seq_length]


def trimmed(batch, lengths):
  """``batch`` cut to the shortest of ``lengths`` that holds its longest row: the arrays with a
  token axis, last ((B, L), or (B, K, L) for choices), lose trailing padding only (rows are
  right-padded and positions are absolute), so the loss is the padded batch's."""
  length = next(length for length in lengths if length >= int(row_lengths(batch).max()))
  return {key: value[..., :length] if value.ndim >= 2 else value for key, value in batch.items()}


def train_batches(rows, batch_size, seed, start=0, lengths=None, group_by_length=False):
  """Endless ``(batch, counts)`` of training rows for ``trainer.train``, from the ``start``-th
  batch on (a resumed run skips the ones it already trained on); with ``lengths``
  (``bucket_lengths``) each batch is padded only to the bucket its longest row needs, and with
  ``group_by_length`` too, batches hold rows of similar length (``train_indices``)."""
  ones = np.ones((batch_size,), np.float32)
  indices = train_indices(
      len(rows.example_of_row), batch_size, seed,
      row_lengths(rows.arrays) if group_by_length else None)
  for _ in range(start):
    next(indices)
  for batch_indices in indices:
    batch = {key: value[batch_indices] for key, value in rows.arrays.items()}
    if lengths is not None:
      batch = trimmed(batch, lengths)
    counts = {"rows": batch_size, "tokens": int(batch["attention_mask"].sum())}
    yield {**batch, "example_weights": ones}, counts


def train(config, workdir, task, graphdef, encoder_params, tokenizer, label_names, train_split,
          dev_split, text_blind):
  """Trains encoder + head in ``trainer.train``'s loop, resuming from the workdir's latest
  checkpoint if any. ``train_split``/``dev_split``: (rows, report) of ``encode_split``."""
  kind = kinds.get(task.kind)
  (train_rows, train_report), (dev_rows, dev_report) = train_split, dev_split
  num_labels = len(label_names) if label_names else None
  encoder_cfg = nnx.merge(graphdef, encoder_params).cfg
  if workdir_lib.has_config(workdir):
    workdir_lib.write_config(workdir, config)  # the rest is as the first start wrote it
  else:
    save_for_prediction(workdir, config, encoder_cfg, tokenizer, label_names)

  params = {
      "encoder":
          encoder_params,
      "head":
          kind.head.init(
              rng_lib.run_key(config.seed, "head"), encoder_cfg.hidden_size, kind.num_outputs or
              num_labels)
  }
  optimizer, schedule = steps.make_optimizer(config)
  state = steps.fresh_state(params, optimizer)
  forward = make_forward(graphdef, kind.head, config.dropout_rate)
  train_step, eval_step = make_steps(forward, kind.head, optimizer, config.grad_accumulation_steps)

  def evaluate_state(state):
    return {**evaluate(eval_step, state.params, task, dev_rows, config), **text_blind}

  checkpointer = workdir_lib.checkpointer(
      workdir, config.keep_checkpoints, best_metric=task.metrics[0])
  start_step, restored, _ = checkpointer.restore_latest(
      steps.on_one_device(jax.eval_shape(lambda: state)))
  if restored is not None:
    state = restored
  else:
    start_step = 0
  writer = metrics_lib.MetricWriter(workdir, start_step)
  try:
    if start_step == 0:
      writer.write(
          0, "data", {
              **{
                  f"train_{key}": value for key, value in train_report.items()
              },
              **{
                  f"dev_{key}": value for key, value in dev_report.items()
              }
          })
    trainer.train(
        state,
        train_step=train_step,
        batches=train_batches(
            train_rows,
            config.batch_size,
            config.seed,
            start_step,
            lengths=bucket_lengths(config.max_seq_length) if config.dynamic_padding else None,
            group_by_length=config.group_by_length),
        rng=rng_lib.run_key(config.seed, "train"),
        start_step=start_step,
        # A run that stopped early is finished: its rerun trains no further.
        num_steps=start_step if stopped_early(writer.kept) else config.num_train_steps,
        summarize=summarize,
        evaluate=evaluate_state,
        stop_early=patience_stopper(
            task.metrics[0], config.early_stopping_patience,
            [r.get(task.metrics[0]) for r in writer.kept if r["split"] == "eval"]),
        save=lambda step, state, metrics: checkpointer.save(step, state, {"batches": step}, metrics
                                                           ),
        writer=writer,
        schedule=schedule,
        log_every=config.log_every,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        description=f"finetune {config.task}",
        progress_metric="loss")
  finally:  # pending writes finish even when training stops on an error
    writer.close()
    checkpointer.close()


def patience_stopper(metric, patience, history):
  """``stop_early`` for ``trainer.train``: True once ``patience`` evaluations in a row brought
  no better ``metric`` than the best before them (NaN, or null in metrics.jsonl, counts as
  worst); ``history``: the scores of a resumed run's earlier evaluations. None when
  ``patience`` is 0 (never stop early)."""
  if not patience:
    return None
  worst_if_missing = lambda score: -math.inf if score is None or math.isnan(score) else score
  scores = [worst_if_missing(score) for score in history]

  def stop(metrics):
    scores.append(worst_if_missing(metrics[metric]))
    first_best = scores.index(max(scores))
    return len(scores) - 1 - first_best >= patience

  return stop


def stopped_early(records):
  """Whether a run's metrics records say it stopped early (``trainer.train``'s record)."""
  return any(record.get("early_stopped") for record in records)


def run(config, workdir):
  """Fine-tunes ``config.init_from`` on ``config.task`` in ``workdir``, resuming from its latest
  checkpoint if any; returns the dev metrics of the best checkpoint (``checkpoints``: the one
  predict uses), each with its text-blind baseline (``catalog.baseline``). A signal stops it
  with ``trainer.Stopped`` after a checkpoint."""
  # --- Checks and data, before anything is written to the workdir.
  validation.check_fields(config)
  if config.batch_size % config.grad_accumulation_steps:
    raise ValueError(f"grad_accumulation_steps={config.grad_accumulation_steps} does not divide "
                     f"batch_size={config.batch_size}; use a divisor of it.")
  workdir_lib.check_writable(workdir)
  task = catalog.get_task(config.task, config.dataset)
  kind = kinds.get(task.kind)
  workdir_lib.check_compatible(workdir, config, RUN_IDENTITY_FIELDS)
  graphdef, encoder_params, tokenizer = load_encoder(config)
  label_names = (None if kind.num_outputs else corpora.label_names(task.dataset, config.data_dir,
                                                                   task.label_key))
  num_labels = len(label_names) if label_names else None
  if task.eval_dataset and label_names:
    eval_names = corpora.label_names(task.eval_dataset, config.data_dir, task.label_key)
    if eval_names != label_names:
      raise ValueError(f"{task.eval_dataset} has labels {eval_names}, {task.dataset} "
                       f"{label_names}; the task's two datasets need one label set.")
  eval_split = config.eval_split or task.dev_split
  train_rows, train_report = encode_split(config, task, tokenizer, config.train_split, num_labels)
  dev_rows, dev_report = encode_split(config, task, tokenizer, eval_split, num_labels,
                                      task.eval_dataset)
  text_blind = catalog.baseline(task, train_rows, dev_rows)

  # --- Every check passed: the workdir is written from here on, by one run at a time.
  with workdir_lib.lock(workdir):
    train(config, workdir, task, graphdef, encoder_params, tokenizer, label_names,
          (train_rows, train_report), (dev_rows, dev_report), text_blind)
  step, dev_metrics, latest = checkpoints(workdir, task)
  early = (f" (stopped early: no better dev {task.metrics[0]} in "
           f"{config.early_stopping_patience} evaluations)"
           if latest < config.num_train_steps else "")
  print(f"Done: {latest} steps{early}. Best dev {task.metrics[0]} at step {step} (the "
        "checkpoint predict uses): "
        f"{', '.join(f'{name}={value:.4f}' for name, value in dev_metrics.items())}. "
        f"Metrics: {workdir}/metrics.jsonl")
  return dev_metrics


class Checkpoints(NamedTuple):
  """What a fine-tuning workdir's checkpoints hold (steps None before the first one)."""
  best_step: int | None  # the best dev score on the task's first metric: what predict uses
  best_metrics: dict | None  # its dev metrics
  latest_step: int | None  # where a rerun resumes


def checkpoints(workdir, task):
  """The ``Checkpoints`` of ``workdir``, read without disturbing a run writing there."""
  checkpointer = workdir_lib.checkpointer(workdir, read_only=True, best_metric=task.metrics[0])
  try:
    best = checkpointer.best_step()
    return Checkpoints(best,
                       checkpointer.metrics(best) if best is not None else None,
                       checkpointer.latest_step())
  finally:
    checkpointer.close()
