"""Fine-tuning examples as BERT lays them out, and extractive answers decoded from span logits.

Encoders take any jaxssl tokenizer (``encode``, ``encode_batch``, ``cls_id``, ``sep_id``,
``pad_id``) and give numpy int32 rows of ``max_seq_length``: ``input_ids`` ([CLS] A [SEP], or
[CLS] A [SEP] B [SEP], then [PAD]s), ``segment_ids`` (1 over B and its [SEP], else 0) and
``attention_mask`` (1 on real tokens, 0 on padding).

Question answering needs where each context token lies in the context's characters: the caller
gives the context's ids with their (start, end) character offsets, from the tokenizer's
``encode_with_offsets``. Training windows follow SQuAD v1 (BERT's
run_squad): a window that lacks the whole answer points at [CLS], position (0, 0).
"""

from collections.abc import Sequence

import numpy as np

IGNORED_LABEL = -100  # a token label counted in neither loss nor accuracy (as Hugging Face's)
Offsets = Sequence[tuple[int, int]]
# (score, start_char, end_char): a candidate answer, context[start_char:end_char].
Candidate = tuple[float, int, int]


def _token_ids(tokenizer, text, field):
  ids = tokenizer.encode(text)
  if not ids:
    raise ValueError(f"{field}={text!r} has no tokens; drop the example or fill its {field}.")
  return ids


def _check_length(max_seq_length, minimum):
  if max_seq_length < minimum:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the text; use >= "
                     f"{minimum}.")


def _row(tokenizer, ids_a, ids_b, max_seq_length):
  """[CLS] A [SEP] (B [SEP]) padded to max_seq_length: the three int32 (L,) arrays."""
  input_ids = [tokenizer.cls_id, *ids_a, tokenizer.sep_id]
  segment_ids = [0] * len(input_ids)
  if ids_b is not None:
    input_ids += [*ids_b, tokenizer.sep_id]
    segment_ids += [1] * (len(ids_b) + 1)
  padding = max_seq_length - len(input_ids)
  return {
      "input_ids": np.array(input_ids + [tokenizer.pad_id] * padding, np.int32),
      "segment_ids": np.array(segment_ids + [0] * padding, np.int32),
      "attention_mask": np.array([1] * len(input_ids) + [0] * padding, np.int32),
  }


def encode_single(tokenizer, text: str, max_seq_length: int) -> dict[str, np.ndarray]:
  """[CLS] text [SEP], the text's tokens cut at the end to fit."""
  row, _ = encode_ids(tokenizer, _token_ids(tokenizer, text, "text"), None, max_seq_length)
  return row


def longest_first(length_a: int, length_b: int, budget: int) -> tuple[int, int]:
  """The lengths BERT keeps of two segments: one token at a time off the end of the longer (of B
  on ties) until they fit in ``budget``; computed at once, not token by token."""
  if length_a + length_b <= budget:
    return length_a, length_b
  kept_a = min(length_a, max(budget - length_b, (budget + 1) // 2))
  return kept_a, budget - kept_a


def encode_pair(tokenizer, text_a: str, text_b: str, max_seq_length: int) -> dict[str, np.ndarray]:
  """[CLS] text_a [SEP] text_b [SEP], the longer text cut first (``longest_first``)."""
  ids_a = _token_ids(tokenizer, text_a, "text_a")
  ids_b = _token_ids(tokenizer, text_b, "text_b")
  row, _ = encode_ids(tokenizer, ids_a, ids_b, max_seq_length)
  return row


def encode_ids(tokenizer, ids_a: Sequence[int], ids_b: Sequence[int] | None,
               max_seq_length: int) -> tuple[dict[str, np.ndarray], int]:
  """``encode_single``'s (``ids_b`` None) or ``encode_pair``'s row of already encoded texts,
  and the number of tokens cut to fit."""
  if ids_b is None:
    _check_length(max_seq_length, 3)
    kept_a, kept_b = min(len(ids_a), max_seq_length - 2), 0
    num_cut = len(ids_a) - kept_a
  else:
    _check_length(max_seq_length, 5)
    kept_a, kept_b = longest_first(len(ids_a), len(ids_b), max_seq_length - 3)
    num_cut = len(ids_a) + len(ids_b) - kept_a - kept_b
  ids_b = None if ids_b is None else ids_b[:kept_b]
  return _row(tokenizer, ids_a[:kept_a], ids_b, max_seq_length), num_cut


def window_starts(num_tokens: int, window_length: int, stride: int) -> list[int]:
  """Where the windows covering ``num_tokens`` tokens start: every ``stride`` tokens (a stride
  longer than a window is shortened to the window, so no token is left out), the last window
  ending with the last token; one window (start 0) when they all fit."""
  if stride < 1:
    raise ValueError(f"doc_stride={stride} does not advance; use >= 1.")
  stride = min(stride, window_length)
  starts = [0]
  while starts[-1] + window_length < num_tokens:
    starts.append(starts[-1] + stride)
  return starts


def windows_of_ids(tokenizer, ids_a: Sequence[int], ids_b: Sequence[int] | None,
                   max_seq_length: int, stride: int) -> tuple[list[dict[str, np.ndarray]], int]:
  """``encode_ids``' rows with no text cut: a text that does not fit becomes overlapping
  windows, each its own [CLS] window [SEP] row, starting ``stride`` tokens apart; of a pair,
  text A is kept whole if it fits in half the row (else cut to it, and counted) and text B is
  windowed. Returns the rows and the number of tokens cut (of A only)."""
  if ids_b is None:
    _check_length(max_seq_length, 3)
    length = max_seq_length - 2
    return [
        _row(tokenizer, ids_a[start:start + length], None, max_seq_length)
        for start in window_starts(len(ids_a), length, stride)
    ], 0
  _check_length(max_seq_length, 5)
  if len(ids_a) + len(ids_b) <= max_seq_length - 3:
    return [_row(tokenizer, ids_a, ids_b, max_seq_length)], 0
  kept_a = min(len(ids_a), (max_seq_length - 3) // 2)
  length = max_seq_length - 3 - kept_a
  return [
      _row(tokenizer, ids_a[:kept_a], ids_b[start:start + length], max_seq_length)
      for start in window_starts(len(ids_b), length, stride)
  ], len(ids_a) - kept_a


def align_word_labels(word_token_counts: Sequence[int], word_labels: Sequence[int],
                      max_seq_length: int) -> tuple[np.ndarray, int]:
  """Token labels for a [CLS] words [SEP] row whose words encode to ``word_token_counts`` tokens.

  A word's label goes to its first sub-token; its other sub-tokens, [CLS], [SEP] and padding
  get ``IGNORED_LABEL``. Returns the (max_seq_length,) int32 labels and the number of words
  left without a labelled token: cut by truncation (or encoded to no token at all).
  """
  if len(word_token_counts) != len(word_labels):
    raise ValueError(f"{len(word_token_counts)} words but {len(word_labels)} word_labels; give "
                     "one label per word.")
  _check_length(max_seq_length, 3)
  labels = np.full(max_seq_length, IGNORED_LABEL, np.int32)
  counts = np.asarray(word_token_counts, np.int64)  # (W,)
  first_tokens = 1 + np.cumsum(counts) - counts  # (W,) each word's first position
  kept = (counts > 0) & (first_tokens < max_seq_length - 1)  # (W,)
  labels[first_tokens[kept]] = np.asarray(word_labels)[kept]
  return labels, int(np.sum(~kept))


def encode_words(tokenizer, words: Sequence[str], word_labels: Sequence[int],
                 max_seq_length: int) -> tuple[dict[str, np.ndarray], int]:
  """A token classification row of pre-split ``words``: ``encode_single``'s arrays plus
  ``labels`` (``align_word_labels``); also returns the number of words cut."""
  if not words:
    raise ValueError("words is empty; drop the example or give it at least one word.")
  word_ids = tokenizer.encode_batch(words)
  labels, num_cut = align_word_labels([len(ids) for ids in word_ids], word_labels, max_seq_length)
  ids = [i for ids in word_ids for i in ids]
  row = _row(tokenizer, ids[:max_seq_length - 2], None, max_seq_length)
  return {**row, "labels": labels}, num_cut


def words_windows(tokenizer, words: Sequence[str], word_labels: Sequence[int], max_seq_length: int,
                  stride: int) -> list[dict[str, np.ndarray]]:
  """``encode_words``' rows with no word cut: the words' tokens in overlapping windows of
  ``max_seq_length - 2`` starting ``stride`` tokens apart, each its own row; a word is labelled
  in every window that holds its first sub-token."""
  if not words:
    raise ValueError("words is empty; drop the example or give it at least one word.")
  if len(words) != len(word_labels):
    raise ValueError(f"{len(words)} words but {len(word_labels)} word_labels; give one label "
                     "per word.")
  _check_length(max_seq_length, 3)
  word_ids = tokenizer.encode_batch(words)
  ids = [i for word in word_ids for i in word]  # (T,)
  counts = np.array([len(word) for word in word_ids], np.int64)  # (W,)
  first_tokens = np.cumsum(counts) - counts  # (W,) each word's first token
  labelled = counts > 0
  length = max_seq_length - 2
  rows = []
  for start in window_starts(len(ids), length, stride):
    row = _row(tokenizer, ids[start:start + length], None, max_seq_length)
    inside = labelled & (first_tokens >= start) & (first_tokens < start + length)
    labels = np.full(max_seq_length, IGNORED_LABEL, np.int32)
    labels[1 + first_tokens[inside] - start] = np.asarray(word_labels)[inside]
    rows.append({**row, "labels": labels})
  return rows


def qa_windows(question_ids: Sequence[int],
               context_ids: Sequence[int],
               context_offsets: Offsets,
               max_seq_length: int,
               doc_stride: int,
               cls_id: int,
               sep_id: int,
               pad_id: int,
               max_question_length: int = 64) -> list[dict]:
  """[CLS] question [SEP] context window [SEP] rows covering the whole context.

  The question is cut to ``max_question_length`` tokens. Each window holds as many context
  tokens as fit and starts ``doc_stride`` tokens after the previous one (so consecutive windows
  overlap), the last one ending with the context; a stride longer than a window is shortened to
  the window, as BERT's run_squad does, so no context token is ever left out. Each feature holds ``encode_pair``'s arrays
  and ``token_char_spans``: per position, the (start, end) characters of its context token, or
  None for the question, special tokens and padding.
  """
  if len(question_ids) == 0:
    raise ValueError("question has no tokens; drop the example or fill its question.")
  if len(context_ids) == 0:
    raise ValueError("context has no tokens; drop the example or fill its context.")
  if len(context_ids) != len(context_offsets):
    raise ValueError(f"{len(context_ids)} context ids but {len(context_offsets)} offsets; give "
                     "one (start, end) per token.")
  question_ids = list(question_ids[:max_question_length])
  window_length = max_seq_length - len(question_ids) - 3
  if window_length < 1:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the context after a "
                     f"{len(question_ids)}-token question; raise it or lower max_question_length.")
  first_context_position = len(question_ids) + 2
  features = []
  for start in window_starts(len(context_ids), window_length, doc_stride):
    end = min(start + window_length, len(context_ids))
    input_ids = [cls_id, *question_ids, sep_id, *context_ids[start:end], sep_id]
    padding = max_seq_length - len(input_ids)
    spans = [None] * first_context_position + [tuple(o) for o in context_offsets[start:end]]
    features.append({
        "input_ids":
            np.array(input_ids + [pad_id] * padding, np.int32),
        "segment_ids":
            np.array([0] * first_context_position + [1] * (end - start + 1) + [0] * padding,
                     np.int32),
        "attention_mask":
            np.array([1] * len(input_ids) + [0] * padding, np.int32),
        "token_char_spans":
            spans + [None] * (max_seq_length - len(spans)),
    })
  return features


def answer_positions(feature: dict, context: str, answer_start: int,
                     answer_text: str) -> tuple[int, int]:
  """The positions of the answer's first and last tokens in a ``qa_windows`` feature, or (0, 0),
  the [CLS], when the window does not hold the whole answer (SQuAD v1 training)."""
  answer_end = answer_start + len(answer_text)
  if not answer_text or context[answer_start:answer_end] != answer_text:
    raise ValueError(f"answer {answer_text!r} not found in its context at answer_start="
                     f"{answer_start} (the context has {context[answer_start:answer_end]!r}); "
                     "fix the example's answer offsets.")
  spans = feature["token_char_spans"]
  positions = [p for p, span in enumerate(spans) if span is not None]
  if spans[positions[0]][0] > answer_start or spans[positions[-1]][1] < answer_end:
    return 0, 0
  start = next(p for p in positions if spans[p][1] > answer_start)
  end = max(p for p in positions if spans[p][0] < answer_end)
  return start, end


def best_span(start_logits: np.ndarray, end_logits: np.ndarray,
              token_char_spans: Sequence[tuple[int, int] | None], n_best: int,
              max_answer_length: int) -> list[Candidate]:
  """The ``n_best`` highest-scoring answers of one window, best first.

  A span's score is its start logit plus its end logit (T,). Every span of context tokens with
  start <= end and at most ``max_answer_length`` tokens is considered, not only the top
  starts and ends. Returns (score, start_char, end_char) candidates.
  """
  # float64: padding logits are float32's lowest value, and two of them would overflow.
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  in_context = np.array([span is not None for span in token_char_spans])  # (T,)
  starts, ends = np.arange(len(in_context))[:, None], np.arange(len(in_context))[None, :]
  valid = (in_context[:, None] & in_context[None, :] & (ends >= starts) &
           (ends - starts < max_answer_length))  # (T, T)
  scores = np.where(valid, start_logits[:, None] + end_logits[None, :], -np.inf)  # (T, T)
  best = np.argsort(-scores, axis=None, kind="stable")[:n_best]
  candidates = []
  for start, end in zip(*np.unravel_index(best, scores.shape)):
    if valid[start, end]:
      candidates.append((float(scores[start,
                                      end]), token_char_spans[start][0], token_char_spans[end][1]))
  return candidates


def best_answer(windows_candidates: Sequence[Sequence[Candidate]],
                context: str) -> tuple[str, int, int]:
  """The best of all windows' ``best_span`` candidates for one example: (text, start, end)."""
  candidates = [candidate for window in windows_candidates for candidate in window]
  if not candidates:
    raise ValueError("windows_candidates holds no candidate; pass best_span's lists for the "
                     "example's windows, with n_best >= 1.")
  _, start, end = max(candidates, key=lambda candidate: candidate[0])
  return context[start:end], start, end
