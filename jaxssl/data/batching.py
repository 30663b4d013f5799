"""Deterministic, resumable batches streamed from a corpus, window of documents by window.

Used by every objective: BERT sentence pairs and GPT packed rows differ only in the
``make_examples(documents, rng)`` function that turns a window of documents into a dict of
equal-length arrays.
"""

import concurrent.futures
from collections.abc import Callable, Sequence

import grain
import numpy as np

Examples = dict[str, np.ndarray]

# Documents a window holds unless a config sets window_documents: host memory is bounded by
# the tokens and rows of one window (the shipped English corpus's 452 documents fit in one).
DEFAULT_WINDOW_DOCUMENTS = 2_000


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


def first_documents(documents: Sequence, count: int) -> list:
  """The first ``count`` documents (all, if fewer): evaluation reads no more than a window."""
  return [documents[index] for index in range(min(count, len(documents)))]


class StreamBatches:
  """Shuffled batches of this process's share of a corpus, made one window of documents at a
  time; deterministic and resumable.

  ``documents`` is any random-access sequence: a ``prepared.PreparedCorpus`` reads each document
  from disk when asked, a list holds a small corpus in memory. This process owns documents
  process_index, process_index + process_count, ... (so processes read disjoint shards that
  together cover the corpus). Epoch e visits them in grain's shuffle seeded by (seed, e), cut
  into windows of ``window_documents``; window w becomes rows by ``make_examples(documents,
  rng)`` with ``rng = np.random.default_rng([seed, process_index, e, w])``, shuffled with the
  same rng and served in batches of batch_size / process_count rows (a window's last
  incomplete batch is dropped). Every batch also holds ``example_weights`` (all 1).

  The position, ``state()``, is (epoch, window, batch); ``restore`` rebuilds that window and
  goes on from that batch, so a resumed run sees exactly the batches of an uninterrupted one.
  A background thread builds the next window while the current one is served, so host memory
  holds two windows at most, whatever the corpus size.
  """

  def __init__(self,
               make_examples: Callable[[list, np.random.Generator], Examples],
               documents: Sequence,
               *,
               batch_size: int,
               seed: int,
               window_documents: int,
               process_index: int = 0,
               process_count: int = 1):
    rows = process_rows(batch_size, process_index, process_count)
    if window_documents < 1:
      raise ValueError(f"window_documents={window_documents} must be at least 1")
    self._make_examples = make_examples
    self._rows = rows.stop - rows.start
    self._seed = seed
    self._window_documents = window_documents
    self._process_index = process_index
    self._documents = grain.MapDataset.source(documents)[process_index::process_count]
    self._num_windows = -(-len(self._documents) // window_documents)
    self._position = (0, 0, 0)  # epoch, window, batch: the next batch served
    self._cached: tuple[tuple[int, int], Examples] | None = None
    # One thread builds windows, in order: the one asked for, then the one after it.
    self._builder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="window")
    self._building: dict[tuple[int, int], concurrent.futures.Future] = {}
    # A corpus too small for one batch fails here, not mid-training.
    count = num_examples(self._window_examples(0, 0)) if self._num_windows else 0
    if count < self._rows:
      raise ValueError(
          f"the corpus gives {count} examples {'per process ' if process_count > 1 else ''}"
          f"in its first window of {window_documents} documents, fewer than batch_size="
          f"{batch_size}{f' / {process_count} processes' if process_count > 1 else ''}; lower "
          "batch_size, add documents or raise window_documents")

  def _window_examples(self, epoch: int, window: int) -> Examples:
    """The window's examples; the first call for a window also starts building the next one
    in the background, so training does not wait for it when this one runs out."""
    if self._cached is None or self._cached[0] != (epoch, window):
      building = self._building.get((epoch, window))
      examples = (building or self._builder.submit(self._build, epoch, window)).result()
      self._cached = ((epoch, window), examples)
      following = (epoch, window + 1) if window + 1 < self._num_windows else (epoch + 1, 0)
      self._building = {following: self._builder.submit(self._build, *following)}
    return self._cached[1]

  def _build(self, epoch: int, window: int) -> Examples:
    seed = np.random.SeedSequence([self._seed, epoch]).generate_state(1)[0]
    shuffled = self._documents.shuffle(seed=int(seed))
    start = window * self._window_documents
    documents = [
        shuffled[i] for i in range(start, min(start + self._window_documents, len(shuffled)))
    ]
    rng = np.random.default_rng([self._seed, self._process_index, epoch, window])
    examples = self._make_examples(documents, rng)
    examples = take_rows(examples, rng.permutation(num_examples(examples)))
    examples["example_weights"] = np.ones(num_examples(examples), np.float32)
    return examples

  def state(self) -> dict[str, int]:
    epoch, window, batch = self._position
    return {"epoch": epoch, "window": window, "batch": batch}

  def restore(self, state: dict[str, int]) -> None:
    self._position = (int(state["epoch"]), int(state.get("window", 0)), int(state["batch"]))

  def __iter__(self) -> "StreamBatches":
    return self

  def __next__(self) -> Examples:
    epoch, window, batch = self._position
    while (batch + 1) * self._rows > num_examples(self._window_examples(epoch, window)):
      window, batch = window + 1, 0
      if window == self._num_windows:
        epoch, window = epoch + 1, 0
    self._position = (epoch, window, batch + 1)
    return take_rows(
        self._window_examples(epoch, window), slice(batch * self._rows, (batch + 1) * self._rows))


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
