"""Deterministic, resumable global batches from examples rebuilt every epoch.

Used by every objective: BERT sentence pairs and GPT packed rows differ only in the
``make_examples(rng)`` function that turns the corpus into a dict of equal-length arrays.
"""

from collections.abc import Callable

import numpy as np

Examples = dict[str, np.ndarray]


def process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  """This process's contiguous share of the rows of a global batch."""
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} does not split over process_count={process_count}; "
                     f"use a multiple of {process_count}")
  rows_per_process = batch_size // process_count
  return slice(process_index * rows_per_process, (process_index + 1) * rows_per_process)


def take_rows(examples: Examples, rows: slice | np.ndarray) -> Examples:
  return {key: value[rows] for key, value in examples.items()}


def num_examples(examples: Examples) -> int:
  return len(next(iter(examples.values())))


class EpochBatches:
  """Shuffled global batches, with examples rebuilt each epoch; deterministic and resumable.

  Epoch e builds and shuffles with ``np.random.default_rng([seed, e])``, so every process
  builds the same global batches and keeps its own contiguous rows: the slices of all
  processes, concatenated in process order, are the global batch. The last incomplete batch
  of an epoch is dropped. Every batch also holds ``example_weights`` (all 1).
  """

  def __init__(self,
               make_examples: Callable[[np.random.Generator], Examples],
               *,
               batch_size: int,
               seed: int,
               process_index: int = 0,
               process_count: int = 1):
    self._make_examples = make_examples
    self._batch_size = batch_size
    self._seed = seed
    self._process_rows = process_rows(batch_size, process_index, process_count)
    self._epoch = 0
    self._batch = 0  # index of the next batch within the epoch
    self._cached_epoch: tuple[int, Examples] | None = None
    self._epoch_examples(0)  # a corpus too small for one batch fails here, not mid-training

  def _epoch_examples(self, epoch: int) -> Examples:
    if self._cached_epoch is None or self._cached_epoch[0] != epoch:
      rng = np.random.default_rng([self._seed, epoch])
      examples = self._make_examples(rng)
      count = num_examples(examples)
      if count < self._batch_size:
        raise ValueError(f"the corpus gives {count} examples, fewer than "
                         f"batch_size={self._batch_size}; lower batch_size or add documents")
      examples = take_rows(examples, rng.permutation(count))
      examples["example_weights"] = np.ones(count, np.float32)
      self._cached_epoch = (epoch, examples)
    return self._cached_epoch[1]

  @property
  def batches_per_epoch(self) -> int:
    """Batches in the current epoch; it may vary slightly as examples are redrawn."""
    return num_examples(self._epoch_examples(self._epoch)) // self._batch_size

  def state(self) -> dict[str, int]:
    return {"epoch": self._epoch, "batch": self._batch}

  def restore(self, state: dict[str, int]) -> None:
    self._epoch, self._batch = int(state["epoch"]), int(state["batch"])

  def __iter__(self) -> "EpochBatches":
    return self

  def __next__(self) -> Examples:
    if self._batch >= self.batches_per_epoch:
      self._epoch, self._batch = self._epoch + 1, 0
    batch_start = self._batch * self._batch_size
    rows = slice(batch_start + self._process_rows.start, batch_start + self._process_rows.stop)
    self._batch += 1
    return take_rows(self._epoch_examples(self._epoch), rows)


def fixed_batches(examples: Examples,
                  *,
                  batch_size: int,
                  rng: np.random.Generator,
                  pad_values: dict[str, int],
                  num_batches: int | None = None,
                  process_index: int = 0,
                  process_count: int = 1) -> list[Examples]:
  """Evaluation batches: the same examples on every call, so eval metrics compare across steps.

  Examples are shuffled with ``rng``, so ``num_batches`` (None: all) samples the whole corpus.
  The last batch is filled with rows of ``pad_values`` (0 for other keys) whose
  ``example_weights`` are 0, so no example is dropped. Each process gets its own rows.
  """
  rows = process_rows(batch_size, process_index, process_count)
  count = num_examples(examples)
  if count == 0:
    raise ValueError("the evaluation corpus gives no examples; add documents or shorten examples")
  order = rng.permutation(count)[:None if num_batches is None else num_batches * batch_size]
  examples = take_rows(examples, order)
  examples["example_weights"] = np.ones(len(order), np.float32)
  num_padding = -len(order) % batch_size
  examples = {
      key:
          np.concatenate([
              value,
              np.full((num_padding, *value.shape[1:]), pad_values.get(key, 0), value.dtype)
          ]) for key, value in examples.items()
  }
  return [
      take_rows(examples, slice(start + rows.start, start + rows.stop))
      for start in range(0,
                         len(order) + num_padding, batch_size)
  ]
