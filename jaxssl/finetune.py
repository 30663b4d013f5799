"""``run(config, workdir)``: fine-tunes a BERT encoder + head on a task
(``jaxssl.finetune_tasks.TASKS``): classification, regression, tagging or extractive QA.

The state is a plain pytree ``{"encoder": nnx.State, "head": dict}`` trained by
``steps.make_train_step`` on one device (no mesh: fine-tuning a small encoder needs none).
Dev metrics are computed on the host from the predictions (scikit-learn, SciPy, SQuAD's
official answer matching), next to a baseline that ignores the text.

A finished workdir holds what ``jaxssl.predict`` needs: the config, the encoder's model config
(``model_config.json``), the tokenizer, the label names (``labels.json``) and the parameters.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxssl import checkpoint
from jaxssl import finetune_tasks
from jaxssl import heads
from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl import steps
from jaxssl import train
from jaxssl.data import corpora
from jaxssl.models import bert

# init_from="scratch" takes this checkpoint's config and tokenizer; "scratch:PATH" those of PATH.
SCRATCH_SHAPE = "minilm"
LABELS_FILE = "labels.json"  # the class (tag) names of a classification (tagging) run, else null
HEAD_OUTPUTS = {"regression": 1, "question_answering": 2}  # heads whose width is not a label set


def load_encoder(config):
  """(graphdef, params, tokenizer) of the encoder ``config.init_from`` names, its dropout rates
  set from the config. "scratch" (MiniLM) and "scratch:PATH" keep an encoder's architecture and
  tokenizer but give it random weights."""
  rates = dict(
      dropout_rate=config.dropout_rate, attention_dropout_rate=config.attention_dropout_rate)
  prefix, _, shape = config.init_from.partition(":")
  scratch = prefix == "scratch"
  path = (shape or SCRATCH_SHAPE) if scratch else config.init_from
  if (os.path.exists(os.path.join(path, "config.json")) and
      "objective" in train.load_run_config(path)):  # a jaxssl workdir, not a Hugging Face one
    run_config, _, tokenizer, graphdef, run_params = train.load_trained(path)
    if run_config.objective != "bert":
      raise ValueError(f"init_from={path!r} holds a {run_config.objective!r} run; fine-tuning "
                       "needs a BERT pretraining workdir.")
    encoder = nnx.merge(graphdef, run_params).encoder
    cfg = dataclasses.replace(encoder.cfg, **rates)
    params = nnx.state(encoder)
  else:
    loaded = pretrained.load(path, **rates)
    if loaded.objective != "bert":
      raise ValueError(f"init_from={path!r} is a {loaded.objective.upper()} decoder; fine-tuning "
                       "needs a BERT encoder such as 'minilm'.")
    cfg, params, tokenizer = loaded.model.cfg, nnx.state(loaded.model), loaded.tokenizer
  if scratch:
    params = nnx.state(bert.BertEncoder(cfg, nnx.Rngs(config.seed)))
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
    sequence, _ = encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"] > 0,
                          encoder_rng)  # (B, T, D)
    return head.apply(params["head"], sequence, batch, head_rng, dropout_rate)

  return forward


def make_steps(forward, head, optimizer):
  """The jitted ``train_step(state, batch, rng) -> (state, sums)``,
  ``eval_step(params, batch) -> (outputs, sums)`` and ``predict_step(params, batch) ->
  (outputs, {})`` (no targets needed); sums hold ``loss``, maybe ``accuracy``, and their
  ``weight``."""

  def sums_of(outputs, batch):
    sums, weight = head.loss(outputs, batch)
    return {**sums, "weight": weight}

  def loss_fn(params, batch, rng):
    sums = sums_of(forward(params, batch, rng), batch)
    return sums["loss"] / jnp.maximum(sums["weight"], 1.0), sums

  def eval_step(params, batch):
    outputs = forward(params, batch, None)
    return outputs, sums_of(outputs, batch)

  def predict_step(params, batch):
    return forward(params, batch, None), {}

  train_step = steps.make_train_step(loss_fn, optimizer)
  return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step), jax.jit(predict_step)


def summarize(sums, num_steps):
  """Host-side means of summed ``loss``/``accuracy`` (per example) and ``grad_norm`` (per step)."""
  weight = max(float(sums["weight"]), 1.0)
  means = {name: float(sums[name]) / weight for name in ("loss", "accuracy") if name in sums}
  if "grad_norm" in sums:
    means["grad_norm"] = float(sums["grad_norm"]) / num_steps
  return means


def train_indices(num_rows, batch_size, seed):
  """Endless (batch_size,) row index batches, each epoch a fresh permutation; a batch may span
  two epochs, so no row is ever dropped."""
  rng = np.random.default_rng(seed)
  pending = np.zeros(0, np.int64)
  while True:
    while len(pending) < batch_size:
      pending = np.concatenate([pending, rng.permutation(num_rows)])
    yield pending[:batch_size]
    pending = pending[batch_size:]


def eval_batches(arrays, batch_size):
  """Fixed-size batches over every row in order; the last is padded with weight-0 rows."""
  num_rows = len(arrays["input_ids"])
  for start in range(0, num_rows, batch_size):
    indices = np.arange(start, start + batch_size)  # (B,)
    real = indices < num_rows
    batch = {key: value[np.where(real, indices, 0)] for key, value in arrays.items()}
    yield {**batch, "example_weights": real.astype(np.float32)}


def run_model(step, params, arrays, batch_size, progress=None):
  """``step`` (``eval_step`` or ``predict_step``) over every row: the outputs as numpy arrays
  with R rows in order (a (start, end) pair of them for QA) and the step's summed sums."""
  outputs, totals = [], None
  for batch in eval_batches(arrays, batch_size):
    batch_outputs, sums = step(params, batch)
    real = batch["example_weights"] > 0
    outputs.append(jax.tree.map(lambda x, real=real: np.asarray(x)[real], batch_outputs))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if progress is not None:
      progress.update(int(real.sum()))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs), jax.device_get(totals)


def evaluate(eval_step, params, task, rows, config):
  """Dev metrics: the head's mean loss, plus the task's metrics."""
  outputs, sums = run_model(eval_step, params, rows.arrays, config.batch_size)
  return {
      "loss": summarize(sums, 1)["loss"],
      **finetune_tasks.score(task, rows, outputs, config.n_best, config.max_answer_length)
  }


def encode_split(config, task, tokenizer, split, num_labels):
  """The split's ``finetune_tasks.Rows``, and a line on what was skipped or cut."""
  examples = corpora.load_examples(task.dataset, split, config.data_dir)
  rows = finetune_tasks.encode(
      task,
      tokenizer,
      examples,
      config.max_seq_length,
      num_labels=num_labels,
      doc_stride=config.doc_stride,
      max_question_length=config.max_question_length,
      where=f"{task.dataset} {split}")
  report = {
      "examples": len(examples),
      "rows": len(rows.example_of_row),
      "truncated": rows.truncated,
      **{
          f"skipped ({reason})": count for reason, count in rows.skipped.items()
      }
  }
  skipped = ", ".join(f"{count} skipped ({reason})" for reason, count in rows.skipped.items())
  print(f"{task.dataset} {split}: {len(examples)} examples -> {len(rows.example_of_row)} rows; "
        f"{rows.truncated} cut to max_seq_length={config.max_seq_length}" +
        (f"; {skipped}" if skipped else ""))
  return rows, report


def save_for_prediction(workdir, config, encoder_cfg, tokenizer, label_names):
  """Everything but the parameters that ``jaxssl.predict`` needs to rebuild the model."""
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(workdir, train.MODEL_CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(dataclasses.asdict(encoder_cfg), f, indent=2)
  with open(os.path.join(workdir, LABELS_FILE), "w", encoding="utf-8") as f:
    json.dump(label_names, f)
  tokenizer.save(workdir)


def run(config, workdir):
  """Fine-tunes ``config.init_from`` on ``config.task``; returns the final dev metrics, each
  with its text-blind baseline (``finetune_tasks.baseline``)."""
  # --- Checks and data, before anything is written to the workdir.
  task = finetune_tasks.get_task(config.task, config.dataset)
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise ValueError(f"workdir {workdir} already holds a fine-tuning run (fine-tuning does not "
                     "resume); use a new --workdir.")
  graphdef, encoder_params, tokenizer = load_encoder(config)
  has_classes = task.kind in ("classification", "token_classification")
  label_names = corpora.label_names(task.dataset, config.data_dir,
                                    task.label_key) if has_classes else None
  num_labels = len(label_names) if has_classes else None
  eval_split = config.eval_split or task.dev_split
  train_rows, train_report = encode_split(config, task, tokenizer, config.train_split, num_labels)
  dev_rows, dev_report = encode_split(config, task, tokenizer, eval_split, num_labels)
  text_blind = finetune_tasks.baseline(task, train_rows, dev_rows)

  # --- Every check passed: the workdir is written from here on.
  os.makedirs(workdir, exist_ok=True)
  encoder_cfg = nnx.merge(graphdef, encoder_params).cfg
  save_for_prediction(workdir, config, encoder_cfg, tokenizer, label_names)

  head = heads.HEADS[task.kind]
  rng = jax.random.key(config.seed)
  head_rng, train_rng = jax.random.split(rng)
  params = {
      "encoder": encoder_params,
      "head": head.init(head_rng, encoder_cfg.hidden_size, num_labels or HEAD_OUTPUTS[task.kind])
  }
  optimizer, schedule = steps.make_optimizer(config)
  state = steps.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  forward = make_forward(graphdef, head, config.dropout_rate)
  train_step, eval_step, _ = make_steps(forward, head, optimizer)

  # --- Train loop.
  writer = metrics_lib.MetricWriter(workdir)
  writer.write(
      0, "data", {
          **{
              f"train_{key}": value for key, value in train_report.items()
          },
          **{
              f"dev_{key}": value for key, value in dev_report.items()
          }
      })
  indices = train_indices(len(train_rows.example_of_row), config.batch_size, config.seed)
  ones = np.ones((config.batch_size,), np.float32)
  dev_metrics = {}
  window_sums, window_steps, window_start = None, 0, time.perf_counter()
  for step in tqdm(
      range(1, config.num_train_steps + 1), desc=f"finetune {config.task}", dynamic_ncols=True):
    batch_indices = next(indices)
    batch = {key: value[batch_indices] for key, value in train_rows.arrays.items()}
    state, sums = train_step(state, {**batch, "example_weights": ones}, train_rng)
    window_sums = sums if window_sums is None else jax.tree.map(jnp.add, window_sums, sums)
    window_steps += 1
    if step % config.log_every == 0 or step == config.num_train_steps:
      train_metrics = summarize(jax.device_get(window_sums), window_steps)
      elapsed = time.perf_counter() - window_start
      train_metrics["rows_per_second"] = window_steps * config.batch_size / elapsed
      train_metrics["learning_rate"] = float(schedule(step))
      writer.write(step, "train", train_metrics)
      window_sums, window_steps, window_start = None, 0, time.perf_counter()
    if step % config.eval_every == 0 or step == config.num_train_steps:
      dev_metrics = {**evaluate(eval_step, state.params, task, dev_rows, config), **text_blind}
      writer.write(step, "eval", dev_metrics)
  writer.close()

  checkpointer = checkpoint.Checkpointer(workdir, keep=1)
  checkpointer.save(config.num_train_steps, state.params, {"task": config.task})
  checkpointer.close()
  print(f"Done: {config.num_train_steps} steps. dev "
        f"{', '.join(f'{name}={value:.4f}' for name, value in dev_metrics.items())}. "
        f"Metrics: {workdir}/metrics.jsonl")
  return dev_metrics
