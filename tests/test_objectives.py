"""Masking statistics and loss sums, checked as numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.core.objectives import losses

PAD, CLS, SEP, MASK = 0, 2, 3, 4
VOCAB = 1000
FIRST_REGULAR = 5


def make_batch(rows=512, length=128, seed=0):
  """[CLS] A [SEP] B [SEP] [PAD]... rows of random lengths, UNK (1) allowed inside."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, VOCAB, size=(rows, length))
  ids[ids < FIRST_REGULAR] = 1
  for row, real in enumerate(rng.integers(16, length + 1, size=rows)):
    split = rng.integers(3, real - 2)
    ids[row, 0], ids[row, split], ids[row, real - 1] = CLS, SEP, SEP
    ids[row, real:] = PAD
  return jnp.asarray(ids, jnp.int32)


def mask(ids, seed=0, max_predictions=40):
  return bert_objective.mask_tokens(
      jax.random.key(seed),
      ids,
      special_ids=(PAD, CLS, SEP, MASK),
      vocab_size=VOCAB,
      first_regular_id=FIRST_REGULAR,
      mask_id=MASK,
      max_predictions=max_predictions)


def test_fifteen_percent_of_real_tokens_are_chosen():
  ids = make_batch()
  _, _, _, weights = mask(ids)
  real = np.asarray(jnp.sum(ids != PAD, axis=1))
  chosen = np.asarray(weights.sum(axis=1))
  np.testing.assert_array_equal(chosen, np.clip(np.round(real * 0.15), 1, 40))
  assert abs(chosen.sum() / real.sum() - 0.15) < 0.005


def test_max_predictions_caps_the_count():
  _, _, _, weights = mask(make_batch(), max_predictions=5)
  assert float(weights.sum(axis=1).max()) == 5


def test_never_masks_special_tokens_and_positions_are_distinct():
  ids = make_batch()
  _, positions, labels, weights = mask(ids)
  chosen_labels = np.asarray(labels)[np.asarray(weights) > 0]
  assert not np.isin(chosen_labels, [PAD, CLS, SEP, MASK]).any()
  for row_positions, row_weights in zip(np.asarray(positions), np.asarray(weights)):
    real_positions = row_positions[row_weights > 0]
    assert len(set(real_positions)) == len(real_positions)


def test_eighty_ten_ten_replacement():
  ids = make_batch(rows=2048)
  masked, positions, labels, weights = mask(ids)
  rows = np.arange(ids.shape[0])[:, None]
  new = np.asarray(masked)[rows, np.asarray(positions)][np.asarray(weights) > 0]
  old = np.asarray(labels)[np.asarray(weights) > 0]
  n = len(old)
  became_mask = np.mean(new == MASK)
  kept = np.mean(new == old)
  random_token = np.mean((new != MASK) & (new != old))
  # Binomial standard error at n ~ 20k is ~0.002 for 10% and ~0.003 for 80%.
  assert n > 20_000
  assert abs(became_mask - 0.8) < 0.01
  assert abs(kept - 0.1) < 0.01  # a random token equal to the original counts here (p = 1e-3)
  assert abs(random_token - 0.1) < 0.01
  assert new[(new != MASK) & (new != old)].min() >= FIRST_REGULAR


def test_only_chosen_positions_change():
  ids = make_batch()
  masked, positions, _, weights = mask(ids)
  changed = np.argwhere(np.asarray(masked) != np.asarray(ids))
  chosen = {(r, int(p))
            for r, (ps, ws) in enumerate(zip(np.asarray(positions), np.asarray(weights)))
            for p, w in zip(ps, ws)
            if w > 0}
  assert {tuple(x) for x in changed} <= chosen


def test_masks_differ_between_draws_and_repeat_for_the_same_key():
  ids = make_batch(rows=8)
  first, second, again = mask(ids, seed=0), mask(ids, seed=1), mask(ids, seed=0)
  assert not np.array_equal(first[1], second[1])
  np.testing.assert_array_equal(first[0], again[0])


def test_all_padding_row_predicts_nothing():
  ids = jnp.zeros((2, 16), jnp.int32)
  _, _, _, weights = mask(ids, max_predictions=4)
  assert float(weights.sum()) == 0.0


def test_classification_sums_match_hand_computation():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]))
  labels = jnp.array([0, 1, 1])
  weights = jnp.array([1.0, 1.0, 0.0])
  loss, correct, count = losses.classification_sums(logits, labels, weights)
  assert float(loss) == pytest.approx(-np.log(0.7) - np.log(0.1), rel=1e-5)
  assert float(correct) == 1.0 and float(count) == 2.0
