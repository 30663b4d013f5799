"""``run(config, workdir)``: fine-tunes a BERT encoder + head on a sequence task (``TASKS``).

The state is a plain pytree ``{"encoder": nnx.State, "head": dict}`` trained by
``steps.make_train_step`` on one device (no mesh: fine-tuning a small encoder needs none).
Dev metrics are computed on the host from the predictions (scikit-learn, SciPy), next to a
baseline that ignores the text: the majority class, or the mean training label.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from flax import nnx
from sklearn import metrics as sk_metrics
from tqdm import tqdm

from jaxssl import checkpoint
from jaxssl import heads
from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl import steps
from jaxssl import train
from jaxssl.convert import hf_bert
from jaxssl.data import corpora
from jaxssl.data import finetuning
from jaxssl.data import pretrained_tokenizers
from jaxssl.models import bert

SCRATCH_SHAPE = "minilm"  # init_from="scratch" takes this checkpoint's config and tokenizer


@dataclasses.dataclass(frozen=True)
class Task:
  dataset: str  # TFDS name
  text_keys: tuple[str, ...]  # one feature (single texts) or two (pairs)
  label_key: str  # a ClassLabel feature (classification) or a float one (regression)
  kind: str  # "classification" or "regression": the head (heads.HEADS)
  dev_split: str  # the split evaluated on (GLUE's test labels are hidden)
  metrics: tuple[str, ...]  # names in METRICS


TASKS = {
    "sentiment":
        Task("jaxssl_sentiment/movie_reviews", ("text",), "label", "classification", "validation",
             ("accuracy", "f1", "matthews_corrcoef")),
    "rating":
        Task("jaxssl_sentiment/movie_reviews", ("text",), "rating", "regression", "validation",
             ("pearson", "spearman")),
    "sst2":
        Task("glue/sst2", ("sentence",), "label", "classification", "validation", ("accuracy",)),
    "stsb":
        Task("glue/stsb", ("sentence1", "sentence2"), "label", "regression", "validation",
             ("pearson", "spearman")),
}

# name -> f(labels (N,), predictions (N,)) -> float; predictions are class ids or real values.
METRICS = {
    "accuracy": sk_metrics.accuracy_score,
    "f1": sk_metrics.f1_score,  # of class 1 (binary tasks)
    "matthews_corrcoef": sk_metrics.matthews_corrcoef,
    "pearson": lambda labels, predictions: scipy.stats.pearsonr(labels, predictions)[0],
    "spearman": lambda labels, predictions: scipy.stats.spearmanr(labels, predictions)[0],
}


def get_task(name):
  if name not in TASKS:
    raise ValueError(f"task={name!r} is not a fine-tuning task; use one of {sorted(TASKS)}.")
  return TASKS[name]


def score(task, labels, predictions):
  """{metric: value} of (N,) predictions against (N,) labels."""
  return {name: float(METRICS[name](labels, predictions)) for name in task.metrics}


def baseline(task, train_labels, dev_labels):
  """The dev metrics of a model that ignores the text.

  Classification: always the most frequent training class. Regression: always the mean
  training label, whose correlations are undefined, so its mean squared error is reported.
  """
  if task.kind == "classification":
    majority = np.bincount(train_labels).argmax()
    predictions = np.full_like(dev_labels, majority)
    return {
        f"majority_{name}": value for name, value in score(task, dev_labels, predictions).items()
    }
  return {"mean_prediction_mse": float(np.mean(np.square(dev_labels - train_labels.mean())))}


def encode_examples(tokenizer, examples, task, max_seq_length, split):
  """The examples as arrays: ``input_ids``, ``segment_ids``, ``attention_mask`` (N, L) int32 and
  ``labels`` (N,) int32 or float32. An example with an empty text is an error naming it."""
  rows = []
  for index, example in enumerate(examples):
    texts = [example[key] for key in task.text_keys]
    try:
      if len(texts) == 1:
        rows.append(finetuning.encode_single(tokenizer, texts[0], max_seq_length))
      else:
        rows.append(finetuning.encode_pair(tokenizer, *texts, max_seq_length))
    except ValueError as error:
      name = example.get("id", example.get("idx", index))
      raise ValueError(f"{task.dataset} {split} example {index} (id {name!r}): {error}") from None
  encoded = {key: np.stack([row[key] for row in rows]) for key in rows[0]}  # (N, L) each
  label_dtype = np.int32 if task.kind == "classification" else np.float32
  encoded["labels"] = np.array([example[task.label_key] for example in examples], label_dtype)
  return encoded


def load_encoder(config):
  """(graphdef, params, tokenizer) of the encoder ``config.init_from`` names, its dropout rates
  set from the config."""
  rates = dict(
      dropout_rate=config.dropout_rate, attention_dropout_rate=config.attention_dropout_rate)
  path = config.init_from
  if path == "scratch":
    path = pretrained.resolve(SCRATCH_SHAPE)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
      cfg = hf_bert.config_from_hf(json.load(f), **rates)
    params = nnx.state(bert.BertEncoder(cfg, nnx.Rngs(config.seed)))
    tokenizer = pretrained_tokenizers.WordPieceTokenizer.load(path)
  elif (os.path.exists(os.path.join(path, "config.json")) and
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
  """The jitted ``train_step(state, batch, rng) -> (state, sums)`` and
  ``eval_step(params, batch) -> (outputs, sums)``; sums hold ``loss``, maybe ``accuracy``, and
  their ``weight``."""

  def sums_of(outputs, batch):
    sums, weight = head.loss(outputs, batch)
    return {**sums, "weight": weight}

  def loss_fn(params, batch, rng):
    sums = sums_of(forward(params, batch, rng), batch)
    return sums["loss"] / jnp.maximum(sums["weight"], 1.0), sums

  def eval_step(params, batch):
    outputs = forward(params, batch, None)
    return outputs, sums_of(outputs, batch)

  train_step = steps.make_train_step(loss_fn, optimizer)
  return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


def summarize(sums, num_steps):
  """Host-side means of summed ``loss``/``accuracy`` (per example) and ``grad_norm`` (per step)."""
  weight = max(float(sums["weight"]), 1.0)
  means = {name: float(sums[name]) / weight for name in ("loss", "accuracy") if name in sums}
  if "grad_norm" in sums:
    means["grad_norm"] = float(sums["grad_norm"]) / num_steps
  return means


def train_indices(num_examples, batch_size, seed):
  """Endless (batch_size,) index batches, each epoch a fresh permutation; a batch may span two
  epochs, so no example is ever dropped."""
  rng = np.random.default_rng(seed)
  pending = np.zeros(0, np.int64)
  while True:
    while len(pending) < batch_size:
      pending = np.concatenate([pending, rng.permutation(num_examples)])
    yield pending[:batch_size]
    pending = pending[batch_size:]


def eval_batches(encoded, batch_size):
  """Fixed-size batches over every example in order; the last is padded with weight-0 rows."""
  num_examples = len(encoded["labels"])
  for start in range(0, num_examples, batch_size):
    indices = np.arange(start, start + batch_size)  # (B,)
    real = indices < num_examples
    batch = {key: value[np.where(real, indices, 0)] for key, value in encoded.items()}
    yield {**batch, "example_weights": real.astype(np.float32)}


def evaluate(eval_step, params, task, encoded, batch_size):
  """Dev metrics: the head's mean loss (and accuracy), plus the task's metrics."""
  outputs, totals = [], None
  for batch in eval_batches(encoded, batch_size):
    batch_outputs, sums = eval_step(params, batch)
    outputs.append(np.asarray(batch_outputs)[batch["example_weights"] > 0])
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  outputs = np.concatenate(outputs)  # (N, C) logits or (N,) predictions
  predictions = outputs.argmax(-1) if task.kind == "classification" else outputs
  return {**summarize(jax.device_get(totals), 1), **score(task, encoded["labels"], predictions)}


def run(config, workdir):
  """Fine-tunes ``config.init_from`` on ``config.task``; returns the final dev metrics, each
  with its text-blind baseline (``baseline``)."""
  # --- Checks and data, before anything is written to the workdir.
  task = get_task(config.task)
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise ValueError(f"workdir {workdir} already holds a fine-tuning run (fine-tuning does not "
                     "resume); use a new --workdir.")
  graphdef, encoder_params, tokenizer = load_encoder(config)
  num_outputs = len(corpora.label_names(task.dataset, config.data_dir,
                                        task.label_key)) if task.kind == "classification" else 1
  eval_split = config.eval_split or task.dev_split
  train_data = encode_examples(
      tokenizer, corpora.load_examples(task.dataset, config.train_split, config.data_dir), task,
      config.max_seq_length, config.train_split)
  dev_data = encode_examples(tokenizer,
                             corpora.load_examples(task.dataset, eval_split, config.data_dir), task,
                             config.max_seq_length, eval_split)
  text_blind = baseline(task, train_data["labels"], dev_data["labels"])

  # --- Every check passed: the workdir is written from here on.
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json(indent=2))

  head = heads.HEADS[task.kind]
  rng = jax.random.key(config.seed)
  head_rng, train_rng = jax.random.split(rng)
  hidden_size = encoder_params["token_embed"]["embedding"].shape[-1]
  params = {"encoder": encoder_params, "head": head.init(head_rng, hidden_size, num_outputs)}
  optimizer, schedule = steps.make_optimizer(config)
  state = steps.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  forward = make_forward(graphdef, head, config.dropout_rate)
  train_step, eval_step = make_steps(forward, head, optimizer)

  # --- Train loop.
  writer = metrics_lib.MetricWriter(workdir)
  indices = train_indices(len(train_data["labels"]), config.batch_size, config.seed)
  ones = np.ones((config.batch_size,), np.float32)
  dev_metrics = {}
  window_sums, window_steps, window_start = None, 0, time.perf_counter()
  for step in tqdm(
      range(1, config.num_train_steps + 1), desc=f"finetune {config.task}", dynamic_ncols=True):
    batch_indices = next(indices)
    batch = {key: value[batch_indices] for key, value in train_data.items()}
    state, sums = train_step(state, {**batch, "example_weights": ones}, train_rng)
    window_sums = sums if window_sums is None else jax.tree.map(jnp.add, window_sums, sums)
    window_steps += 1
    if step % config.log_every == 0 or step == config.num_train_steps:
      train_metrics = summarize(jax.device_get(window_sums), window_steps)
      elapsed = time.perf_counter() - window_start
      train_metrics["examples_per_second"] = window_steps * config.batch_size / elapsed
      train_metrics["learning_rate"] = float(schedule(step))
      writer.write(step, "train", train_metrics)
      window_sums, window_steps, window_start = None, 0, time.perf_counter()
    if step % config.eval_every == 0 or step == config.num_train_steps:
      dev_metrics = {
          **evaluate(eval_step, state.params, task, dev_data, config.batch_size),
          **text_blind
      }
      writer.write(step, "eval", dev_metrics)
  writer.close()

  checkpointer = checkpoint.Checkpointer(workdir, keep=1)
  checkpointer.save(config.num_train_steps, state.params, {"task": config.task})
  checkpointer.close()
  print(f"Done: {config.num_train_steps} steps. dev "
        f"{', '.join(f'{name}={value:.4f}' for name, value in dev_metrics.items())}. "
        f"Metrics: {workdir}/metrics.jsonl")
  return dev_metrics
