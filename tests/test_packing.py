"""GPT sequence packing: rows, segments, positions and target weights, checked as numbers."""

import numpy as np
import pytest

from jaxssl.data import packing

SEP = 3


def documents(lengths, start=100):
  """Documents of consecutive ids, each starting at a multiple of 1000 (so ids name them)."""
  return [
      np.arange(start + 1000 * d, start + 1000 * d + n, dtype=np.int32)
      for d, n in enumerate(lengths)
  ]


def test_rows_are_the_stream_of_documents_and_separators():
  docs = documents([5, 9, 3, 20])
  rows = packing.pack_documents(docs, None, 7, SEP)
  stream = np.concatenate([np.append(d, SEP) for d in docs])  # 41 tokens
  assert rows["input_ids"].shape == (41 // 8, 7)
  flat = np.concatenate(
      [np.append(i, t[-1]) for i, t in zip(rows["input_ids"], rows["target_ids"])])
  np.testing.assert_array_equal(flat, stream[:len(flat)])  # nothing padded, nothing skipped
  np.testing.assert_array_equal(rows["target_ids"][:, :-1], rows["input_ids"][:, 1:])


def test_segments_positions_and_weights():
  rows = packing.pack_documents(documents([2, 3, 10]), None, 9, SEP)
  # Stream: a a S | b b b S | c c c ...; row 0 = [a a S b b b S c c] -> targets [a S b b b S c c c]
  np.testing.assert_array_equal(rows["segment_ids"][0], [1, 1, 1, 2, 2, 2, 2, 3, 3])
  np.testing.assert_array_equal(rows["positions"][0], [0, 1, 2, 0, 1, 2, 3, 0, 1])
  # The target after a separator is the next document's first token: not predictable.
  np.testing.assert_array_equal(rows["target_weights"][0], [1, 1, 0, 1, 1, 1, 0, 1, 1])


def test_a_row_starting_mid_document_restarts_positions():
  rows = packing.pack_documents(documents([30]), None, 8, SEP)
  assert rows["input_ids"].shape[0] == 3
  for row in range(3):
    np.testing.assert_array_equal(rows["positions"][row], np.arange(8))
    np.testing.assert_array_equal(rows["segment_ids"][row], np.ones(8))


def packed_batches(docs, **overrides):
  options = dict(batch_size=4, seed=0, max_seq_length=16, separator_id=SEP, window_documents=100)
  return packing.packed_batches([[doc] for doc in docs], **{**options, **overrides})


def test_epochs_reorder_documents_and_batches_resume():
  docs = documents([13] * 40)
  batches = packed_batches(docs, window_documents=15)
  first_epoch = [next(batches)]
  while batches.state()["epoch"] == 0:
    first_epoch.append(next(batches))
  second_epoch_first = first_epoch.pop()
  assert not np.array_equal(first_epoch[0]["input_ids"], second_epoch_first["input_ids"])
  # Every document of the epoch went into its rows but those cut off at a window's end.
  starts = {int(t) // 1000 for b in first_epoch for t in b["input_ids"].ravel() if t != SEP}
  assert len(starts) >= 34
  state = batches.state()
  expected = next(batches)
  again = packed_batches(docs, window_documents=15)
  again.restore(state)
  restored = next(again)
  for key in expected:
    np.testing.assert_array_equal(restored[key], expected[key])


def test_fixed_batches_pad_with_zero_weight_rows():
  batches = packing.fixed_packed_batches(
      documents([13] * 5), batch_size=4, seed=0, max_seq_length=16, separator_id=SEP, pad_id=0)
  weights = np.concatenate([b["example_weights"] for b in batches])
  assert weights.sum() == (5 * 14) // 17 and len(weights) == 4
  padding = batches[-1]["target_weights"][batches[-1]["example_weights"] == 0]
  assert padding.sum() == 0


def test_too_small_corpus_raises():
  with pytest.raises(ValueError, match="batch_size=8"):
    packed_batches(documents([5]), batch_size=8)
