"""Loss terms shared by objectives and fine-tuning heads, as sums and counts.

Losses leave as sums and counts so the host divides at log time: padding rows and uneven
batches never bias a mean (as in flax's lm1b example).
"""

import math

import jax.numpy as jnp
import optax


def classification_sums(logits, labels, weights):
  """Cross-entropy and accuracy as sums over weighted examples.

  logits: (..., C) float32; labels: (...) int; weights: (...) float32 (0 ignores an entry).
  Returns (loss_sum, correct_sum, weight_sum) scalars.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)


def normalised(weights):
  """Loss weights: ``weights`` over their total in the whole batch, so a loss weighted by them
  is the whole batch's mean and adds up over micro-batches."""
  return weights / jnp.maximum(jnp.sum(weights), 1.0)


def weighted_loss(logits, labels, loss_weights):
  loss_sum, _, _ = classification_sums(logits, labels, loss_weights)
  return loss_sum


def summarize_terms(sums, names, perplexity=()):
  """Host-side ``{name}_loss``/``{name}_accuracy`` (and ``{name}_perplexity`` for names in
  ``perplexity``) from ``{name}_loss_sum``, ``{name}_correct`` and ``{name}_count`` sums."""
  metrics = {}
  for name in names:
    count = max(float(sums[f"{name}_count"]), 1.0)
    metrics[f"{name}_loss"] = float(sums[f"{name}_loss_sum"]) / count
    metrics[f"{name}_accuracy"] = float(sums[f"{name}_correct"]) / count
    if name in perplexity:
      loss = metrics[f"{name}_loss"]
      metrics[f"{name}_perplexity"] = math.exp(loss) if loss < 700 else math.inf  # no overflow
  return metrics
