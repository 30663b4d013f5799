"""Frozen-feature probes: what an encoder's representations already hold, without fine-tuning.

A pretraining run calls a ``Prober`` every ``probe_every`` steps and on its random
initialisation, so its records show whether the representations get better, not only whether
the MLM loss falls. On a few hundred shipped examples per task, with the encoder frozen:

- a sentence task (``sentiment``, ``sentiment_zh``): logistic regression on the mean of the
  last layer's token vectors;
- ``pos``: logistic regression on the vector of each word's first sub-token (a linear tagger);
- ``probe_token_cosine``: the mean cosine between the vectors of 2,000 tokens of the first
  task's dev examples. Near 1, every token looks alike (the representation has collapsed).

Scikit-learn fits the probes on the host; the encoder's forward pass runs on the run's mesh.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
from matplotlib import figure
from sklearn import linear_model
from sklearn import pipeline
from sklearn import preprocessing

from jaxssl import files
from jaxssl import sharding
from jaxssl.core.tasks import catalog
from jaxssl.data import corpora

# task -> (probe training split, probe dev split): small slices, so that a probe takes seconds.
SPLITS = {
    "sentiment": ("train[:1000]", "validation[:300]"),
    "sentiment_zh": ("train[:1000]", "validation[:300]"),
    "pos": ("train[:300]", "validation[:150]"),
}
COSINE_TOKENS = 2000  # token vectors sampled for the mean pairwise cosine


def check_tasks(tasks):
  """One line naming a task that cannot be probed."""
  for task in tasks:
    if task not in SPLITS:
      raise ValueError(f"probe_tasks has {task!r}, which cannot be probed; use some of "
                       f"{sorted(SPLITS)} (comma-separated), or '' for no probes.")


def fitted_accuracy(train_features, train_labels, dev_features, dev_labels):
  """Dev accuracy of an L2-regularised logistic regression on standardised features."""
  model = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                 linear_model.LogisticRegression(C=0.1, max_iter=1000))
  model.fit(train_features, train_labels)
  return float(model.score(dev_features, dev_labels))


def mean_pooled(hidden, mask):
  """(R, T, D), (R, T) -> (R, D): the mean of each row's real token vectors."""
  mask = mask[..., None].astype(hidden.dtype)
  return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


def mean_cosine(vectors, count=COSINE_TOKENS, seed=0):
  """The mean cosine similarity between distinct pairs of ``count`` rows of (N, D) ``vectors``
  drawn with ``seed`` (all of them when there are fewer)."""
  if len(vectors) > count:
    vectors = vectors[np.random.default_rng(seed).choice(len(vectors), count, replace=False)]
  unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
  summed = unit.sum(axis=0)
  n = len(unit)
  return float((summed @ summed - n) / (n * (n - 1)))  # all pairs' cosines, minus the n selfs


class Prober:
  """``prober(encode, params) -> {"probe_<task>_accuracy": ..., "probe_token_cosine": ...}``,
  where ``encode(params, batch) -> (B, T, D)`` is the encoder's last layer on a global batch of
  ``input_ids``, ``segment_ids`` and ``attention_mask``."""

  def __init__(self, tasks, tokenizer, max_seq_length, data_dir, batch_size, mesh):
    """``tasks``: names that ``check_tasks`` accepts (pretraining checks them before it writes)."""
    self.batch_size, self.mesh = batch_size, mesh
    self.rows = {}  # task -> (train Rows, dev Rows)
    for name in tasks:
      task = catalog.get_task(name)
      labels = corpora.label_names(task.dataset, data_dir, task.label_key)
      self.rows[name] = tuple(
          catalog.encode(
              task,
              tokenizer,
              corpora.load_examples(task.dataset, split, data_dir),
              max_seq_length,
              num_labels=len(labels),
              where=f"{task.dataset} {split}") for split in SPLITS[name])

  def hidden_states(self, encode, params, arrays):
    """(R, T, D) float32 last-layer vectors of every row of ``arrays``: global batches of
    ``batch_size`` rows (the last one padded), each process giving its share of each."""
    count = len(arrays["input_ids"])
    padded = -(-count // self.batch_size) * self.batch_size
    inputs = {
        key: np.pad(arrays[key], ((0, padded - count), (0, 0)))
        for key in ("input_ids", "segment_ids", "attention_mask")
    }
    share = self.batch_size // jax.process_count()
    first = jax.process_index() * share
    parts = []
    for start in range(0, padded, self.batch_size):
      local = {key: value[start + first:start + first + share] for key, value in inputs.items()}
      hidden = encode(params, sharding.global_batch(local, self.mesh))
      parts.append(np.asarray(multihost_utils.process_allgather(hidden, tiled=True), np.float32))
    return np.concatenate(parts)[:count]

  def __call__(self, encode, params):
    metrics, cosine = {}, None
    for name, (train, dev) in self.rows.items():
      train_hidden = self.hidden_states(encode, params, train.arrays)  # (R, T, D)
      dev_hidden = self.hidden_states(encode, params, dev.arrays)
      train_labels, dev_labels = train.arrays["labels"], dev.arrays["labels"]
      if train_labels.ndim == 2:  # tags at words' first sub-tokens, else < 0
        train_at, dev_at = train_labels >= 0, dev_labels >= 0
        accuracy = fitted_accuracy(train_hidden[train_at], train_labels[train_at],
                                   dev_hidden[dev_at], dev_labels[dev_at])
      else:
        accuracy = fitted_accuracy(
            mean_pooled(train_hidden, train.arrays["attention_mask"]), train_labels,
            mean_pooled(dev_hidden, dev.arrays["attention_mask"]), dev_labels)
      metrics[f"probe_{name}_accuracy"] = accuracy
      if cosine is None:  # the first task's dev tokens
        cosine = mean_cosine(dev_hidden[dev.arrays["attention_mask"] > 0])
    return {**metrics, "probe_token_cosine": cosine}


def summary(initial, final):
  """A line comparing a run's last probe record with its first, of the weights it started from
  (random, or init_from's)."""
  figures = ", ".join(f"{name.removeprefix('probe_')} {final[name]:.3f} (start {initial[name]:.3f})"
                      for name in final
                      if name.startswith("probe_"))
  return (f"Frozen-feature probes at step {final['step']}, beside those of the weights the run "
          f"started from: {figures}.")


def plot(records, loss_name, path):
  """Two panels over the steps of a run's ``records`` (metrics.jsonl): the evaluation's
  ``loss_name`` (e.g. mlm_loss) on the left, every probe figure on the right."""
  fig = figure.Figure(figsize=(9, 3.4), layout="constrained")
  loss_axis, probe_axis = fig.subplots(1, 2)
  evaluations = [r for r in records if r["split"] == "eval" and loss_name in r]
  loss_axis.plot([r["step"] for r in evaluations], [r[loss_name] for r in evaluations], "o-")
  loss_axis.set(xlabel="step", ylabel=f"eval {loss_name}")
  probed = [r for r in records if r["split"] == "probe"]
  for name in (n for n in probed[0] if n.startswith("probe_")):
    probe_axis.plot([r["step"] for r in probed], [r[name] for r in probed],
                    "o-",
                    label=name.removeprefix("probe_"))
  probe_axis.set(xlabel="step", ylabel="probe accuracy / mean cosine")
  probe_axis.legend()
  files.save_figure(fig, path, dpi=110)
