"""Fine-tuning heads: small pure functions over an encoder's last hidden states.

Each head is a ``Head`` of three functions:

- ``init(rng, hidden_size, num_outputs) -> params``: a dict of dicts of float32 arrays, each a
  dense layer's ``kernel`` (truncated-normal(0.02), as ``layers.dense``) and zero ``bias``;
- ``apply(params, sequence, batch, rng=None, dropout_rate=0.1) -> logits`` reads ``sequence``
  (B, T, D), the ``BertEncoder``'s output, and drops out the features the last projection
  reads when ``rng`` is given (training), as BERT's fine-tuning does;
- ``loss(logits, batch) -> (sums, weight)``: ``sums`` holds the summed ``loss`` and metrics
  (``accuracy``: summed correct predictions), ``weight`` their common count. Sum both over
  devices and batches, then divide: padding rows, whose
  ``batch["example_weights"]`` are 0, never bias a mean.

Sentence-pair tasks use the classification head: the pair is one row whose segment ids tell
its two texts apart (``jaxssl.data.finetuning.encode_pair``). The multiple-choice head reads
``sequence`` (B, K, T, D): one encoded (context, choice) pair per choice, K per example.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxssl.core.objectives import losses
from jaxssl.models import layers


class Head(NamedTuple):
  init: Callable
  apply: Callable
  loss: Callable


def _dense_init(rng, in_features, out_features):
  kernel = jax.nn.initializers.truncated_normal(0.02)(rng, (in_features, out_features))
  return {"kernel": kernel, "bias": jnp.zeros((out_features,), jnp.float32)}


def _dense(params, x):  # (..., in) -> (..., out)
  return x @ params["kernel"] + params["bias"]


def _example_weights(batch, num_examples):
  """(B,) float32: the batch's ``example_weights`` (0 on padding rows), else all 1."""
  if "example_weights" in batch:
    return batch["example_weights"]
  return jnp.ones((num_examples,), jnp.float32)


def _check_num_outputs(head, num_outputs, expected):
  if num_outputs != expected:
    raise ValueError(f"the {head} head has {expected} output(s), got num_outputs={num_outputs}; "
                     f"use num_outputs={expected}.")


def init_classification(rng, hidden_size, num_outputs):
  """BERT's pooler (D, D) and a classifier (D, num_outputs) on the pooled [CLS]."""
  pooler_rng, classifier_rng = jax.random.split(rng)
  return {
      "pooler": _dense_init(pooler_rng, hidden_size, hidden_size),
      "classifier": _dense_init(classifier_rng, hidden_size, num_outputs),
  }


def apply_classification(params, sequence, batch, rng=None, dropout_rate=0.1):
  """(B, C) logits from the [CLS] state: classifier(dropout(tanh(pooler(h_[CLS]))))."""
  del batch  # the [CLS] state is all this head reads
  pooled = jnp.tanh(_dense(params["pooler"], sequence[:, 0]))  # (B, D)
  return _dense(params["classifier"], layers.dropout(pooled, dropout_rate, rng))  # (B, C)


def classification_loss(logits, batch):
  """Cross-entropy of (B, C) logits against ``batch["labels"]`` (B,) int."""
  weights = _example_weights(batch, logits.shape[0])
  loss, correct, weight = losses.classification_sums(logits, batch["labels"], weights)
  return {"loss": loss, "accuracy": correct}, weight


def _one_output_init(head):
  """``init`` of the classification head's layers with one output, for ``head``."""

  def init(rng, hidden_size, num_outputs=1):
    _check_num_outputs(head, num_outputs, 1)
    return init_classification(rng, hidden_size, 1)

  return init


init_regression = _one_output_init("regression")


def apply_regression(params, sequence, batch, rng=None, dropout_rate=0.1):
  """(B,) predictions from the pooled [CLS] state."""
  return apply_classification(params, sequence, batch, rng, dropout_rate)[:, 0]


def regression_loss(predictions, batch):
  """Squared error of (B,) predictions against ``batch["labels"]`` (B,) float (MSE once
  divided by the weight)."""
  weights = _example_weights(batch, predictions.shape[0])
  squared_error = jnp.square(predictions - batch["labels"])  # (B,)
  return {"loss": jnp.sum(squared_error * weights)}, jnp.sum(weights)


def init_token_classification(rng, hidden_size, num_outputs):
  """A classifier (D, num_outputs) shared by every position."""
  return {"classifier": _dense_init(rng, hidden_size, num_outputs)}


def apply_token_classification(params, sequence, batch, rng=None, dropout_rate=0.1):
  """(B, T, C) logits, one row per token."""
  del batch  # every position is classified; the labels say which count
  return _dense(params["classifier"], layers.dropout(sequence, dropout_rate, rng))  # (B, T, C)


def token_classification_loss(logits, batch):
  """Cross-entropy and accuracy over the tokens whose ``batch["labels"]`` (B, T) are >= 0; the
  others (``finetuning.IGNORED_LABEL``: special tokens, padding, a word's later sub-tokens)
  count in neither."""
  labels = batch["labels"]  # (B, T)
  weights = (labels >= 0) * _example_weights(batch, labels.shape[0])[:, None]  # (B, T)
  loss, correct, weight = losses.classification_sums(logits, jnp.maximum(labels, 0), weights)
  return {"loss": loss, "accuracy": correct}, weight


def init_question_answering(rng, hidden_size, num_outputs=2):
  """One (D, 2) projection: a start and an end logit per token."""
  _check_num_outputs("question_answering", num_outputs, 2)
  return {"span": _dense_init(rng, hidden_size, 2)}


def apply_question_answering(params, sequence, batch, rng=None, dropout_rate=0.1):
  """(start_logits, end_logits), each (B, T); padding (``batch["attention_mask"]`` 0) gets the
  lowest float, so neither the loss nor decoding ever picks it."""
  logits = _dense(params["span"], layers.dropout(sequence, dropout_rate, rng))  # (B, T, 2)
  logits = jnp.where(batch["attention_mask"][..., None] > 0, logits,
                     jnp.finfo(logits.dtype).min)  # (B, T, 2)
  return logits[..., 0], logits[..., 1]


def question_answering_loss(logits, batch):
  """The mean of the start and end cross-entropies against ``batch["start_positions"]`` and
  ``batch["end_positions"]`` (B,) int (0, the [CLS], where the window lacks the answer).

  ``accuracy`` counts the examples whose start and end are both right.
  """
  start_logits, end_logits = logits
  weights = _example_weights(batch, start_logits.shape[0])
  start_losses = optax.softmax_cross_entropy_with_integer_labels(start_logits,
                                                                 batch["start_positions"])
  end_losses = optax.softmax_cross_entropy_with_integer_labels(end_logits, batch["end_positions"])
  correct = ((jnp.argmax(start_logits, axis=-1) == batch["start_positions"]) &
             (jnp.argmax(end_logits, axis=-1) == batch["end_positions"]))  # (B,)
  return {
      "loss": jnp.sum((start_losses + end_losses) / 2 * weights),
      "accuracy": jnp.sum(correct * weights),
  }, jnp.sum(weights)


# A score per (context, choice) pair: the classification head's layers with one output.
init_multiple_choice = _one_output_init("multiple_choice")


def apply_multiple_choice(params, sequence, batch, rng=None, dropout_rate=0.1):
  """(B, K) scores of each example's K choices, the classification head's one output on each
  choice's row (sequence (B, K, T, D)); a padding choice (an all-padding row:
  ``batch["attention_mask"]`` (B, K, T) 0 at [CLS]) gets the lowest float, so softmax over the
  choices gives it nothing. Its loss is ``classification_loss`` over the K choices."""
  num_examples, num_choices = sequence.shape[:2]
  rows = sequence.reshape(num_examples * num_choices, *sequence.shape[2:])  # (B * K, T, D)
  scores = apply_classification(params, rows, batch, rng,
                                dropout_rate).reshape(num_examples, num_choices)  # (B, K)
  return jnp.where(batch["attention_mask"][:, :, 0] > 0, scores, jnp.finfo(scores.dtype).min)


CLASSIFICATION = Head(init_classification, apply_classification, classification_loss)
REGRESSION = Head(init_regression, apply_regression, regression_loss)
TOKEN_CLASSIFICATION = Head(init_token_classification, apply_token_classification,
                            token_classification_loss)
QUESTION_ANSWERING = Head(init_question_answering, apply_question_answering,
                          question_answering_loss)
MULTIPLE_CHOICE = Head(init_multiple_choice, apply_multiple_choice, classification_loss)
