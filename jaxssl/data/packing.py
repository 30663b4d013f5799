"""GPT next-token examples: documents packed back to back into full rows, no padding.

Each epoch shuffles the documents, joins them with a separator after each, and cuts the
stream into rows of ``max_seq_length + 1`` tokens (inputs are the first L, targets the last
L). Within a row every document is its own attention segment (1, 2, ...) with positions
restarting at 0, so a token never attends across a document boundary and the position ids
seen in training match those of generation. The target after a separator (the next
document's first token, unpredictable without its context) has weight 0.
"""

from collections.abc import Sequence

import numpy as np

from jaxssl.data import batching


def pack_documents(documents: Sequence[Sequence[int]], rng: np.random.Generator | None,
                   max_seq_length: int, separator_id: int) -> batching.Examples:
  """Packs token documents (shuffled by ``rng``; None keeps their order) into rows.

  Returns input_ids, target_ids, segment_ids, positions: (N, L) int32, and target_weights
  (N, L) float32.
  """
  order = np.arange(len(documents)) if rng is None else rng.permutation(len(documents))
  pieces = [np.append(np.asarray(documents[i], np.int32), np.int32(separator_id)) for i in order]
  if not pieces:
    return _empty(max_seq_length)
  stream = np.concatenate(pieces)  # (S,)
  document_of = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])  # (S,)
  row_length = max_seq_length + 1
  num_rows = len(stream) // row_length
  if num_rows == 0:
    return _empty(max_seq_length)
  rows = stream[:num_rows * row_length].reshape(num_rows, row_length)  # (N, L + 1)
  documents_in_rows = document_of[:num_rows * row_length].reshape(num_rows, row_length)
  inputs, targets = rows[:, :-1], rows[:, 1:]
  input_documents = documents_in_rows[:, :-1]  # (N, L)
  segment_ids = input_documents - input_documents[:, :1] + 1  # 1, 2, ... within each row
  columns = np.arange(max_seq_length)
  starts = np.where(np.diff(segment_ids, axis=1, prepend=0) != 0, columns, 0)  # segment starts
  positions = columns - np.maximum.accumulate(starts, axis=1)
  same_document = documents_in_rows[:, 1:] == input_documents
  return {
      "input_ids": inputs.astype(np.int32),
      "target_ids": targets.astype(np.int32),
      "segment_ids": segment_ids.astype(np.int32),
      "positions": positions.astype(np.int32),
      "target_weights": same_document.astype(np.float32)
  }


def _empty(max_seq_length):
  ints = np.zeros((0, max_seq_length), np.int32)
  return {
      "input_ids": ints,
      "target_ids": ints,
      "segment_ids": ints,
      "positions": ints,
      "target_weights": np.zeros((0, max_seq_length), np.float32)
  }


def flatten_documents(documents: Sequence[Sequence[Sequence[int]]]) -> list[np.ndarray]:
  """Sentence-split token documents (``pretraining.tokenize_documents``) as one array each."""
  return [np.concatenate([np.asarray(s, np.int32) for s in document]) for document in documents]


def packed_batches(documents: Sequence[Sequence[Sequence[int]]],
                   *,
                   batch_size: int,
                   seed: int,
                   window_documents: int,
                   max_seq_length: int,
                   separator_id: int,
                   process_index: int = 0,
                   process_count: int = 1) -> batching.StreamBatches:
  """Training batches of packed rows of sentence-split token documents, re-packed in a new
  document order each epoch, window of ``window_documents`` by window
  (``batching.StreamBatches``)."""
  return batching.StreamBatches(
      lambda window, rng: pack_documents(
          flatten_documents(window), rng, max_seq_length, separator_id),
      documents,
      batch_size=batch_size,
      seed=seed,
      window_documents=window_documents,
      process_index=process_index,
      process_count=process_count)


def fixed_packed_batches(documents: Sequence[Sequence[int]],
                         *,
                         batch_size: int,
                         seed: int,
                         max_seq_length: int,
                         separator_id: int,
                         pad_id: int,
                         num_batches: int | None = None,
                         process_index: int = 0,
                         process_count: int = 1) -> list[batching.Examples]:
  """Evaluation batches of packed rows, the same on every call."""
  rows = pack_documents(documents, None, max_seq_length, separator_id)
  return batching.fixed_batches(
      rows,
      batch_size=batch_size,
      rng=np.random.default_rng(seed),
      pad_values={
          "input_ids": pad_id,
          "target_ids": pad_id
      },
      num_batches=num_batches,
      process_index=process_index,
      process_count=process_count)
