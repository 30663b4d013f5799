"""Pretraining objectives: BERT masking (80/10/10), MLM and NSP losses.

Losses leave as sums and counts so the host divides at log time: padding rows and uneven
batches never bias a mean (as in flax's lm1b example).
"""

import jax
import jax.numpy as jnp
import optax


def mask_tokens(rng,
                input_ids,
                *,
                special_ids,
                vocab_size,
                first_regular_id,
                mask_id,
                max_predictions,
                mask_prob=0.15):
  """Chooses and corrupts the tokens to predict, as in BERT, independently for every call.

  Per row, ``round(mask_prob * real_tokens)`` positions (at least 1, at most
  ``max_predictions``) are drawn uniformly among non-special tokens. Of those, 80% become
  [MASK], 10% a random regular token, 10% stay unchanged.

  input_ids: (B, T) int32. Returns (masked_input_ids (B, T), masked_positions (B, P),
  masked_labels (B, P), masked_weights (B, P) float32 with 1 on real predictions), P =
  max_predictions.
  """
  choose_rng, action_rng, random_token_rng = jax.random.split(rng, 3)
  is_special = jnp.isin(input_ids, jnp.asarray(special_ids))  # (B, T)
  real_tokens = jnp.sum(input_ids != special_ids[0], axis=1)  # special_ids[0] is [PAD]
  num_candidates = jnp.sum(~is_special, axis=1)
  num_to_predict = jnp.clip(
      jnp.round(real_tokens * mask_prob).astype(jnp.int32), 1, max_predictions)
  num_to_predict = jnp.minimum(num_to_predict, num_candidates)  # (B,)

  # A random score per token, candidates first: the top P are a uniform random subset.
  scores = jax.random.uniform(choose_rng, input_ids.shape) + jnp.where(is_special, -2.0, 0.0)
  _, masked_positions = jax.lax.top_k(scores, max_predictions)  # (B, P)
  slots = jnp.arange(max_predictions)[None, :]
  masked_weights = (slots < num_to_predict[:, None]).astype(jnp.float32)  # (B, P)
  masked_labels = jnp.take_along_axis(input_ids, masked_positions, axis=1)  # (B, P)

  action = jax.random.uniform(action_rng, masked_positions.shape)
  random_tokens = jax.random.randint(random_token_rng, masked_positions.shape, first_regular_id,
                                     vocab_size, input_ids.dtype)
  replacement = jnp.where(action < 0.8, mask_id,
                          jnp.where(action < 0.9, random_tokens, masked_labels))
  replacement = jnp.where(masked_weights > 0, replacement, masked_labels)
  rows = jnp.arange(input_ids.shape[0])[:, None]
  masked_input_ids = input_ids.at[rows, masked_positions].set(replacement)
  return masked_input_ids, masked_positions.astype(jnp.int32), masked_labels, masked_weights


def classification_sums(logits, labels, weights):
  """Cross-entropy and accuracy as sums over weighted examples.

  logits: (..., C) float32; labels: (...) int; weights: (...) float32 (0 ignores an entry).
  Returns (loss_sum, correct_sum, weight_sum) scalars.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)


def mean_from_sums(loss_sum, count):
  return loss_sum / jnp.maximum(count, 1.0)
