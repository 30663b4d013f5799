"""BERT sentence-pair examples (MLM + next-sentence prediction), built on the host with numpy.

Rows are ``[CLS] A [SEP] B [SEP] [PAD]...``. Masking is not done here: the train step masks on
device, so every step draws fresh masks from the same pairs.
"""

import bisect
from collections.abc import Iterable, Sequence
import itertools
import re
from typing import NamedTuple

import numpy as np

from jaxssl.data import batching
from jaxssl.data.tokenizer import Tokenizer

# A sentence ends at . ! or ? (plus any closing quotes or brackets) followed by whitespace.
# Abbreviations such as "Mr. Smith" are split too; a few short sentences do not hurt NSP.
_ENGLISH_SENTENCE_END = re.compile(r"""([.!?]["'”’)\]]*)\s+""")
# Chinese puts no space between sentences. The full-width semicolon is included because
# newspaper text chains whole sentences with it.
_CHINESE_SENTENCE_END = re.compile(r"""([。！？；][”’」』）"')\]]*)\s*""")

# Tokens that every row spends on [CLS], [SEP], [SEP].
_NUM_ROW_SPECIAL_TOKENS = 3


def split_sentences(text: str) -> list[str]:
  """Splits at line breaks (paragraphs, poetry lines, Chinese lines), then at sentence ends."""
  sentences = []
  for line in text.split("\n"):
    line = _ENGLISH_SENTENCE_END.sub("\\1\n", line)
    line = _CHINESE_SENTENCE_END.sub("\\1\n", line)
    sentences.extend(sentence.strip() for sentence in line.split("\n") if sentence.strip())
  return sentences


def tokenize_documents(tokenizer: Tokenizer, texts: Iterable[str]) -> list[list[list[int]]]:
  """Documents → sentences → token ids; empty sentences and documents are dropped.

  Every sentence but a document's first is encoded after a space, so that a document's
  sentences concatenated (GPT packing) read "end. Next", not "end.Next", under tokenizers that
  keep spaces in their pieces (byte-level BPE); SentencePiece and WordPiece ignore it.
  """
  sentences_per_document = [[
      sentence if index == 0 else f" {sentence}"
      for index, sentence in enumerate(split_sentences(text))
  ]
                            for text in texts]
  # One batch call over every sentence keeps SentencePiece's thread pool busy.
  all_ids = tokenizer.encode_batch(list(itertools.chain.from_iterable(sentences_per_document)))
  documents = []
  position = 0
  for sentences in sentences_per_document:
    document = [ids for ids in all_ids[position:position + len(sentences)] if ids]
    position += len(sentences)
    if document:
      documents.append(document)
  return documents


class _FlatCorpus(NamedTuple):
  """Every sentence back to back, so a run of consecutive sentences is one slice of ``tokens``."""

  tokens: np.ndarray  # (T,) int32
  # (S + 1,) token offsets: sentence s is tokens[sentence_bounds[s]:sentence_bounds[s + 1]].
  sentence_bounds: list[int]
  # (D + 1,) sentence indices: document d is sentences document_bounds[d]:document_bounds[d + 1].
  document_bounds: list[int]


def _flatten(documents: Sequence[Sequence[Sequence[int]]]) -> _FlatCorpus:
  # Empty sentences would let a segment come out empty; empty documents have nothing to pair.
  documents = [[s for s in document if len(s)] for document in documents]
  documents = [document for document in documents if document]
  sentences = list(itertools.chain.from_iterable(documents))
  sentence_lengths = [len(sentence) for sentence in sentences]
  tokens = np.concatenate(sentences).astype(np.int32) if sentences else np.zeros(0, np.int32)
  sentence_bounds = [0, *itertools.accumulate(sentence_lengths)]
  document_bounds = [0, *itertools.accumulate(len(document) for document in documents)]
  return _FlatCorpus(tokens, sentence_bounds, document_bounds)


def _target_length(rng: np.random.Generator, max_num_tokens: int, short_seq_prob: float) -> int:
  # Mostly fill the row; sometimes aim shorter so the model also sees short inputs.
  if rng.random() < short_seq_prob:
    return int(rng.integers(2, max_num_tokens + 1))
  return max_num_tokens


def _random_continuation(rng: np.random.Generator, corpus: _FlatCorpus, document: int,
                         target_b_length: int) -> tuple[int, int]:
  """Token span of whole sentences from a different, random document, about target_b_length long."""
  bounds, document_bounds = corpus.sentence_bounds, corpus.document_bounds
  other = int(rng.integers(len(document_bounds) - 2))
  other += other >= document  # uniform over the other documents
  first, stop = document_bounds[other], document_bounds[other + 1]
  b_first = int(rng.integers(first, stop))
  # Add sentences until target_b_length is reached, at least one, without leaving the document.
  b_stop = bisect.bisect_left(bounds, bounds[b_first] + target_b_length, b_first + 1, stop)
  return bounds[b_first], bounds[b_stop]


def _pair_spans(
    corpus: _FlatCorpus,
    rng: np.random.Generator,
    max_num_tokens: int,
    short_seq_prob: float,
    random_next_prob: float,
) -> list[tuple[int, int, int, int, int]]:
  """(a_start, a_end, b_start, b_end, is_random_next) token offsets, per BERT's recipe.

  This follows google-research/bert ``create_instances_from_document``, except that the short
  target length is drawn per pair rather than per document (with a few hundred long documents,
  a per-document draw makes the share of short rows depend on which documents happened to win),
  and a chunk of one sentence is split inside that sentence instead of always taking a random B.
  """
  bounds, document_bounds = corpus.sentence_bounds, corpus.document_bounds
  num_documents = len(document_bounds) - 1
  can_pair_randomly = num_documents > 1 and random_next_prob > 0
  spans = []
  for document in range(num_documents):
    first, stop = document_bounds[document], document_bounds[document + 1]
    chunk_start = first
    target_length = _target_length(rng, max_num_tokens, short_seq_prob)
    sentence = first
    while sentence < stop:
      chunk_is_full = (
          sentence == stop - 1 or bounds[sentence + 1] - bounds[chunk_start] >= target_length)
      num_chunk_sentences = sentence + 1 - chunk_start
      chunk_first, chunk_end = bounds[chunk_start], bounds[sentence + 1]
      if not chunk_is_full or (num_chunk_sentences == 1 and chunk_end - chunk_first < 2):
        sentence += 1
        chunk_start = sentence if chunk_is_full else chunk_start  # a lone 1-token end is dropped
        continue
      if num_chunk_sentences >= 2:
        a_end_sentence = chunk_start + int(rng.integers(1, num_chunk_sentences))
        a_end = bounds[a_end_sentence]
      else:
        # BERT forces a random B after a lone sentence, which tilts the NSP labels towards
        # "random" (to 0.6-0.8 on these corpora); splitting the sentence keeps them at 50/50.
        a_end_sentence = sentence + 1
        a_end = chunk_first + int(rng.integers(1, chunk_end - chunk_first))
      if can_pair_randomly and rng.random() < random_next_prob:
        target_b_length = target_length - (a_end - chunk_first)
        b_start, b_end = _random_continuation(rng, corpus, document, target_b_length)
        spans.append((chunk_first, a_end, b_start, b_end, 1))
        sentence = a_end_sentence  # the chunk's unused sentences start the next chunk
      else:
        spans.append((chunk_first, a_end, a_end, chunk_end, 0))
        sentence += 1
      chunk_start = sentence
      target_length = _target_length(rng, max_num_tokens, short_seq_prob)
  return spans


def _truncate_pairs(
    spans: np.ndarray, max_num_tokens: int,
    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Shortens each (N, 4) span pair to max_num_tokens; returns a_start, a_length, b_start, b_length.

  BERT removes one token at a time from the longer segment (B on ties), from its front or back
  by a coin flip. The lengths it ends with do not depend on the flips, so they are computed
  directly, and the number of tokens taken from each front is drawn as a binomial.
  """
  a_start, a_end, b_start, b_end = spans.T
  a_length, b_length = a_end - a_start, b_end - b_start
  too_long = a_length + b_length > max_num_tokens
  half_up = (max_num_tokens + 1) // 2
  kept_a = np.where(too_long, np.minimum(a_length, np.maximum(max_num_tokens - b_length, half_up)),
                    a_length)
  kept_b = np.where(too_long, max_num_tokens - kept_a, b_length)
  a_start = a_start + rng.binomial(a_length - kept_a, 0.5)
  b_start = b_start + rng.binomial(b_length - kept_b, 0.5)
  return a_start, kept_a, b_start, kept_b


def _assemble_rows(
    tokens: np.ndarray,
    a_start: np.ndarray,
    a_length: np.ndarray,
    b_start: np.ndarray,
    b_length: np.ndarray,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Gathers all rows at once: input_ids and segment_ids, both (N, max_seq_length) int32."""
  columns = np.arange(max_seq_length)[None, :]  # (1, L)
  a_start, a_length, b_start, b_length = (
      x[:, None] for x in (a_start, a_length, b_start, b_length))
  first_sep = a_length + 1  # (N, 1)
  second_sep = first_sep + b_length + 1  # (N, 1)
  in_a = (columns > 0) & (columns < first_sep)  # (N, L)
  in_b = (columns > first_sep) & (columns < second_sep)  # (N, L)
  token_index = np.where(in_a, a_start + columns - 1, b_start + columns - first_sep - 1)
  input_ids = np.where(in_a | in_b, tokens[np.where(in_a | in_b, token_index, 0)], pad_id)
  input_ids = np.where(columns == 0, cls_id, input_ids)
  input_ids = np.where((columns == first_sep) | (columns == second_sep), sep_id, input_ids)
  segment_ids = (columns > first_sep) & (columns <= second_sep)
  return input_ids.astype(np.int32), segment_ids.astype(np.int32)


def create_pair_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    rng: np.random.Generator,
    max_seq_length: int,
    short_seq_prob: float,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    random_next_prob: float = 0.5,
) -> dict[str, np.ndarray]:
  """One pass of BERT's pair recipe over tokenized documents (see ``_pair_spans``).

  Returns input_ids and segment_ids (N, max_seq_length) int32 (segment 1 covers B and its [SEP],
  0 elsewhere including padding) and next_sentence_labels (N,) int32: 0 when B is A's real
  continuation, 1 when B comes from another document. B is random with random_next_prob; with
  random_next_prob=0 (no NSP) or a single-document corpus every B is the real continuation.
  """
  if max_seq_length < _NUM_ROW_SPECIAL_TOKENS + 2:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for two segments; use >= 5")
  corpus = _flatten(documents)
  max_num_tokens = max_seq_length - _NUM_ROW_SPECIAL_TOKENS
  spans = _pair_spans(corpus, rng, max_num_tokens, short_seq_prob, random_next_prob)
  spans = np.array(spans, np.int64).reshape(-1, 5)
  a_start, a_length, b_start, b_length = _truncate_pairs(spans[:, :4], max_num_tokens, rng)
  input_ids, segment_ids = _assemble_rows(corpus.tokens, a_start, a_length, b_start, b_length,
                                          max_seq_length, cls_id, sep_id, pad_id)
  return {
      "input_ids": input_ids,
      "segment_ids": segment_ids,
      "next_sentence_labels": spans[:, 4].astype(np.int32),
  }


def pair_batches(documents: Sequence[Sequence[Sequence[int]]],
                 *,
                 batch_size: int,
                 seed: int,
                 window_documents: int,
                 process_index: int = 0,
                 process_count: int = 1,
                 **pair_options) -> batching.StreamBatches:
  """Training batches of sentence pairs, paired afresh each epoch within windows of
  ``window_documents`` (``batching.StreamBatches``); a random B comes from another document of
  the same window.

  ``pair_options`` are ``create_pair_instances``'s: max_seq_length, short_seq_prob, cls_id,
  sep_id, pad_id, random_next_prob.
  """
  return batching.StreamBatches(
      lambda window, rng: create_pair_instances(window, rng, **pair_options),
      documents,
      batch_size=batch_size,
      seed=seed,
      window_documents=window_documents,
      process_index=process_index,
      process_count=process_count)


def fixed_pair_batches(documents: Sequence[Sequence[Sequence[int]]],
                       *,
                       batch_size: int,
                       seed: int,
                       num_batches: int | None = None,
                       process_index: int = 0,
                       process_count: int = 1,
                       **pair_options) -> list[dict[str, np.ndarray]]:
  """Evaluation batches of sentence pairs, the same on every call (``batching.fixed_batches``)."""
  rng = np.random.default_rng(seed)
  pairs = create_pair_instances(documents, rng, **pair_options)
  return batching.fixed_batches(
      pairs,
      batch_size=batch_size,
      rng=rng,
      num_batches=num_batches,
      pad_values={"input_ids": pair_options["pad_id"]},
      process_index=process_index,
      process_count=process_count)


def content_counts(corpus, tokenizer):
  """A prepared corpus's token frequencies with special tokens zeroed: what the pretraining
  objectives' unigram baselines predict from."""
  counts = corpus.unigram_counts().copy()
  counts[:tokenizer.num_special] = 0
  return counts
