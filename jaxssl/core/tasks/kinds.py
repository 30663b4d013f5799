"""Fine-tuning task kinds: each a ``TaskKind`` record of everything that differs per kind (head,
how an example becomes rows, metrics, baseline, prediction records). Adding a kind is one
record in ``KINDS``; the fine-tuning run, ``jaxssl.predict`` and the suite read only records.

- ``classification``: a text or a text pair -> a class, from [CLS] (sentiment, GLUE's sst2, mrpc);
- ``regression``: a text or a text pair -> a real value, from [CLS] (rating, stsb);
- ``token_classification``: pre-split words -> a tag per word, read at each word's first
  sub-token (pos);
- ``question_answering``: question + context -> an answer span of the context; a long context
  becomes several ``doc_stride`` windows, each its own row (qa, squad);
- ``multiple_choice``: K (context, choice) pairs -> the right choice, softmax over the choices'
  scores; a row holds all K pairs, (K, L) arrays (SuperGLUE's copa, record).
"""

import collections
import dataclasses
from typing import Callable

import jax
import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

from jaxssl.core.tasks import heads
from jaxssl.core.tasks import qa_metrics
from jaxssl.data import finetuning


def _f1_macro(labels, predictions):
  """The unweighted mean of the classes' F1 (SuperGLUE's CB)."""
  return sk_metrics.f1_score(labels, predictions, average="macro")


# name -> f(labels (N,), predictions (N,)) -> float; predictions are class ids or real values.
METRICS = {
    "accuracy": sk_metrics.accuracy_score,
    "f1": sk_metrics.f1_score,  # of class 1 (binary tasks)
    "matthews_corrcoef": sk_metrics.matthews_corrcoef,
    "pearson": lambda labels, predictions: scipy.stats.pearsonr(labels, predictions)[0],
    "spearman": lambda labels, predictions: scipy.stats.spearmanr(labels, predictions)[0],
    "f1_macro": _f1_macro,
    "f1a": sk_metrics.f1_score,  # class 1's F1 over all answer options (SuperGLUE's MultiRC F1a)
}
# name -> f(labels (N,), predictions (N,), groups (N,)) -> float, for metrics over groups of
# examples; an example's group is its "group" feature (a task's ``prepare`` adds it).
GROUP_METRICS = {
    # The fraction of groups whose every example is right (MultiRC's EM: a question's answers).
    "group_exact_match":
        lambda labels, predictions, groups: float(
            np.mean([
                np.all(labels[groups == group] == predictions[groups == group])
                for group in np.unique(groups)
            ])),
}


class Skip(Exception):
  """An example ``encode`` leaves out; the message is the reason it counts it under."""


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
  max_seq_length: int
  with_targets: bool  # False for prediction, where examples have no labels
  doc_stride: int = 64  # tokens between window starts (QA; the others with sliding_windows)
  max_question_length: int = 64  # question answering: question tokens kept
  # Texts (word lists) longer than a row become overlapping windows instead of being cut; QA
  # contexts always do.
  sliding_windows: bool = False


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  n_best: int = 20  # question answering: candidate spans kept per window
  max_answer_length: int = 30  # question answering: longest answer in tokens


@dataclasses.dataclass(frozen=True)
class TaskKind:
  """What a task kind is, as functions of a ``catalog.Task`` (its features, label, metrics)."""
  head: heads.Head
  # The head's width when it is not the label set's size (regression 1, QA 2); None: the task's
  # class names (its label feature's ClassLabel) size the head and name its predictions.
  num_outputs: int | None
  # (task, tokenizer, example, EncodeOptions) -> (rows, tokens cut): the example's model rows
  # (dicts of (L,) arrays, plus the side values named in ``side_keys``); raises Skip.
  encode_example: Callable
  # Per-row values that are not model inputs (kept in ``Rows.side``), e.g. each token's word.
  side_keys: tuple[str, ...]
  # (task, rows, outputs, DecodeOptions) -> {metric: value} on the rows' labels.
  score: Callable
  # (task, train_rows, dev_rows) -> {name: value} of a model that ignores the text.
  baseline: Callable
  # (task, record) -> the example's feature values from a prediction record, in the order of
  # task.text_keys; errors name the missing field (``record_fields`` lists what is read).
  record_fields: Callable
  # (task, rows, outputs, label_names, DecodeOptions) -> one prediction dict per example.
  decode: Callable
  # (fields, values) -> the feature values of a prediction record read at ``fields``.
  record_values: Callable = lambda fields, values: values
  # The head's outputs have a token axis (B, L, ...), as tagging's logits and QA's span logits.
  token_outputs: bool = False


# --- Sequence (or pair) -> class / value, from [CLS].


def _encode_texts(task, tokenizer, example, options):
  texts = [example[key] for key in task.text_keys]
  ids = [tokenizer.encode(text) if text.strip() else [] for text in texts]
  if not all(ids):
    raise Skip("empty text")
  ids_b = ids[1] if len(ids) > 1 else None
  if options.sliding_windows:
    rows, cut = finetuning.windows_of_ids(tokenizer, ids[0], ids_b, options.max_seq_length,
                                          options.doc_stride)
  else:
    row, cut = finetuning.encode_ids(tokenizer, ids[0], ids_b, options.max_seq_length)
    rows = [row]
  if options.with_targets:
    for row in rows:
      row["labels"] = example[task.label_key]
  return rows, cut


def example_means(rows, outputs):
  """(N, ...) the mean of each example's rows' outputs (R, ...): one row's outputs, or the
  average over a long text's windows."""
  outputs = np.asarray(outputs, np.float64)
  totals = np.zeros((len(rows.examples),) + outputs.shape[1:])
  np.add.at(totals, rows.example_of_row, outputs)
  counts = np.bincount(rows.example_of_row, minlength=len(rows.examples))
  return totals / counts.reshape((-1,) + (1,) * (outputs.ndim - 1))


def example_labels(rows):
  """(N,) each example's label (its first row's: all its windows share it)."""
  first_rows = np.searchsorted(rows.example_of_row, np.arange(len(rows.examples)))
  return rows.arrays["labels"][first_rows]


def _text_fields(task, record):
  return ("text",) if len(task.text_keys) == 1 else ("text_a", "text_b")


def _metric_scores(task, labels, predictions, examples=None):
  """The task's metrics; a group metric reads the ``examples``' "group" feature."""
  scores = {}
  for name in task.metrics:
    if name in GROUP_METRICS:
      groups = np.array([str(example["group"]) for example in examples])
      scores[name] = float(GROUP_METRICS[name](labels, predictions, groups))
    else:
      scores[name] = float(METRICS[name](labels, predictions))
  return scores


def _majority_baseline(task, train_labels, dev_labels, dev_examples=None):
  """Always the most frequent training class (tag)."""
  predictions = np.full_like(dev_labels, np.bincount(train_labels).argmax())
  return {
      f"majority_{name}": value
      for name, value in _metric_scores(task, dev_labels, predictions, dev_examples).items()
  }


def _decode_classes(task, rows, outputs, label_names, options):
  del task, options
  probabilities = np.asarray(jax.nn.softmax(example_means(rows, outputs), axis=-1))  # (N, C)
  return [{
      "label": label_names[int(np.argmax(p))],
      "probabilities": dict(zip(label_names, map(float, p)))
  } for p in probabilities]


CLASSIFICATION = TaskKind(
    head=heads.CLASSIFICATION,
    num_outputs=None,
    encode_example=_encode_texts,
    side_keys=(),
    score=lambda task, rows, outputs, options: _metric_scores(
        task, example_labels(rows), np.argmax(example_means(rows, outputs), axis=-1), rows.examples
    ),
    baseline=lambda task, train, dev: _majority_baseline(task, example_labels(train),
                                                         example_labels(dev), dev.examples),
    record_fields=_text_fields,
    decode=_decode_classes)


def _encode_value(task, tokenizer, example, options):
  rows, cut = _encode_texts(task, tokenizer, example, options)
  if options.with_targets:
    for row in rows:
      row["labels"] = np.float32(row["labels"])
  return rows, cut


def _mean_prediction_baseline(task, train_rows, dev_rows):
  """Always the mean training label, whose correlations are undefined: its mean squared error."""
  del task
  return {
      "mean_prediction_mse":
          float(np.mean(np.square(example_labels(dev_rows) - example_labels(train_rows).mean())))
  }


REGRESSION = TaskKind(
    head=heads.REGRESSION,
    num_outputs=1,
    encode_example=_encode_value,
    side_keys=(),
    score=lambda task, rows, outputs, options: _metric_scores(task, example_labels(rows),
                                                              example_means(rows, outputs)),
    baseline=_mean_prediction_baseline,
    record_fields=_text_fields,
    decode=lambda task, rows, outputs, label_names, options: [{
        "score": float(value)
    } for value in example_means(rows, outputs)])

# --- Words -> a tag per word, read at each word's first sub-token.


def _encode_words(task, tokenizer, example, options):
  words = list(example[task.text_keys[0]])
  if not words:
    raise Skip("no words")
  # The words' own indices as labels give the word at each first sub-token.
  if options.sliding_windows:
    rows = finetuning.words_windows(tokenizer, words, np.arange(len(words)), options.max_seq_length,
                                    options.doc_stride)
    num_cut = 0
  else:
    row, num_cut = finetuning.encode_words(tokenizer, words, np.arange(len(words)),
                                           options.max_seq_length)
    rows = [row]
  if options.with_targets:
    tags = np.asarray(example[task.label_key], np.int32)  # (W,)
    if len(tags) != len(words):
      raise ValueError(f"{len(words)} words but {len(tags)} tags in example {example.get('id')!r}; "
                       "give one tag per word.")
  for row in rows:
    row["word_index"] = np.maximum(row.pop("labels"), -1)  # (L,)
    if options.with_targets:
      has_word = row["word_index"] >= 0
      row["labels"] = np.where(has_word, tags[np.maximum(row["word_index"], 0)],
                               finetuning.IGNORED_LABEL).astype(np.int32)  # (L,)
  return rows, num_cut


def word_tag_ids(task, rows, outputs):
  """Per example, (W,) the predicted tag id of each word, -1 for a word no row holds (cut). A
  word in several overlapping windows takes the window where it has the most context, the most
  tokens on its nearer side (BERT's run_squad rule for overlapping windows)."""
  tag_ids = np.argmax(outputs, axis=-1)  # (R, L)
  num_tokens = rows.arrays["attention_mask"].sum(axis=1) - 2  # (R,) tokens between [CLS], [SEP]
  predictions = [np.full(len(example[task.text_keys[0]]), -1) for example in rows.examples]
  context = [np.full(len(words), -1) for words in predictions]
  for row, example in enumerate(rows.example_of_row):
    positions = np.flatnonzero(rows.side["word_index"][row] >= 0)  # (K,)
    words = rows.side["word_index"][row][positions]  # (K,)
    tokens_before = positions - 1
    row_context = np.minimum(tokens_before, num_tokens[row] - 1 - tokens_before)  # (K,)
    better = row_context > context[example][words]
    context[example][words[better]] = row_context[better]
    predictions[example][words[better]] = tag_ids[row, positions[better]]
  return predictions


def _all_tags(task, rows):
  """(words,) the tags of every word of the rows' examples."""
  return np.concatenate([np.asarray(example[task.label_key]) for example in rows.examples])


def _score_tags(task, rows, outputs, options):
  """The metrics over the words a row holds (every word, with sliding windows)."""
  del options
  predictions = np.concatenate(word_tag_ids(task, rows, outputs))  # (words,)
  held = predictions >= 0
  return _metric_scores(task, _all_tags(task, rows)[held], predictions[held])


def _word_fields(task, record):
  del task
  return ("words",) if "words" in record else ("text",)


def _decode_tags(task, rows, outputs, label_names, options):
  del options
  return [{
      "words": list(example[task.text_keys[0]]),
      "tags": [label_names[tag] if tag >= 0 else None for tag in tags]
  } for example, tags in zip(rows.examples, word_tag_ids(task, rows, outputs))]


TOKEN_CLASSIFICATION = TaskKind(
    head=heads.TOKEN_CLASSIFICATION,
    num_outputs=None,
    encode_example=_encode_words,
    side_keys=("word_index",),
    score=_score_tags,
    baseline=lambda task, train, dev: _majority_baseline(task, _all_tags(task, train),
                                                         _all_tags(task, dev)),
    record_fields=_word_fields,
    decode=_decode_tags,
    token_outputs=True,
    # {"text": ...} is split at whitespace into the words.
    record_values=lambda fields, values: [values[0].split()] if fields == ("text",) else values)

# --- Question + context -> an answer span of the context.


def _encode_question(task, tokenizer, example, options):
  question, context = (example[key] for key in task.text_keys)
  question_ids = tokenizer.encode(question) if question.strip() else []
  context_ids, offsets = tokenizer.encode_with_offsets(context) if context.strip() else ([], [])
  if not question_ids or not context_ids:
    raise Skip("empty text")
  windows = finetuning.qa_windows(question_ids, context_ids, offsets, options.max_seq_length,
                                  options.doc_stride, tokenizer.cls_id, tokenizer.sep_id,
                                  tokenizer.pad_id, options.max_question_length)
  if options.with_targets:
    answers = example[task.label_key]
    if len(answers["text"]) == 0:
      raise Skip("no answer")
    for window in windows:
      try:
        window["start_positions"], window["end_positions"] = finetuning.answer_positions(
            window, context, int(answers["answer_start"][0]), answers["text"][0])
      except ValueError:
        raise Skip("answer not at its offset in the context") from None
  return windows, max(0, len(question_ids) - options.max_question_length)


def answer_spans(task, rows, outputs, options):
  """Per example, its best answer over all its windows: (text, start_char, end_char)."""
  start_logits, end_logits = outputs  # (R, L) each
  candidates = [[] for _ in rows.examples]
  for row, example in enumerate(rows.example_of_row):
    candidates[example].append(
        finetuning.best_span(start_logits[row], end_logits[row], rows.side["token_char_spans"][row],
                             options.n_best, options.max_answer_length))
  return [
      finetuning.best_answer(example_candidates, example[task.text_keys[1]])
      for example_candidates, example in zip(candidates, rows.examples)
  ]


def _squad_scores(task, rows, predicted_answers):
  ground_truths = [list(example[task.label_key]["text"]) for example in rows.examples]
  scores = qa_metrics.squad_scores(predicted_answers, ground_truths)
  return {name: scores[name] for name in task.metrics}


def _majority_answer_baseline(task, train_rows, dev_rows):
  """Always the most frequent training answer."""
  first_answers = [example[task.label_key]["text"][0] for example in train_rows.examples]
  most_frequent = collections.Counter(first_answers).most_common(1)[0][0]
  scores = _squad_scores(task, dev_rows, [most_frequent] * len(dev_rows.examples))
  return {f"majority_answer_{name}": value for name, value in scores.items()}


QUESTION_ANSWERING = TaskKind(
    head=heads.QUESTION_ANSWERING,
    num_outputs=2,
    encode_example=_encode_question,
    side_keys=("token_char_spans",),
    score=lambda task, rows, outputs, options: _squad_scores(
        task, rows, [answer for answer, _, _ in answer_spans(task, rows, outputs, options)]),
    baseline=_majority_answer_baseline,
    record_fields=lambda task, record: ("question", "context"),
    decode=lambda task, rows, outputs, label_names, options: [{
        "answer": text,
        "start": start,
        "end": end
    } for text, start, end in answer_spans(task, rows, outputs, options)],
    token_outputs=True)

# --- K (context, choice) pairs -> the right choice.


def _encode_choices(task, tokenizer, example, options):
  """One row of (K, L) arrays: [CLS] context [SEP] choice [SEP] per choice (both cut longest
  first to fit), from the example's "choices" feature, (context, choice) pairs that the task's
  ``prepare`` adds; ``labels`` the right choice's index: the label feature itself, or, when it
  is a list of answer texts (ReCoRD), the first choice whose "choice_names" entry is one."""
  pairs = example["choices"]
  if not pairs:
    raise Skip("no choices")
  ids = {text: tokenizer.encode(text) for text in {text for pair in pairs for text in pair}}
  if not all(ids.values()):
    raise Skip("empty text")
  rows, cut = [], 0
  for context, choice in pairs:
    row, choice_cut = finetuning.encode_ids(tokenizer, ids[context], ids[choice],
                                            options.max_seq_length)
    rows.append(row)
    cut += choice_cut
  row = {key: np.stack([choice_row[key] for choice_row in rows]) for key in rows[0]}  # (K, L)
  if options.with_targets:
    row["labels"] = np.int32(_right_choice(task, example))
  return [row], cut


def _right_choice(task, example):
  label = example[task.label_key]
  if isinstance(label, list):  # answer texts: the first choice that is one of them
    right = [i for i, name in enumerate(example["choice_names"]) if name in label]
    if not right:
      raise Skip("no answer among the choices")
    return right[0]
  if not 0 <= label < len(example["choices"]):
    raise ValueError(f"example {example.get('idx')!r} has label {label} but "
                     f"{len(example['choices'])} choices; fix the data.")
  return label


def _choice_scores(task, examples, choices):
  """Accuracy against the label feature or, when it holds answer texts, SQuAD-style exact match
  and F1 of the chosen choice's name, each the maximum over the example's answers (ReCoRD)."""
  if isinstance(examples[0][task.label_key], list):
    predicted = [example["choice_names"][choice] for example, choice in zip(examples, choices)]
    scores = qa_metrics.squad_scores(predicted, [example[task.label_key] for example in examples])
    return {name: scores[name] for name in task.metrics}
  labels = np.array([example[task.label_key] for example in examples])
  return _metric_scores(task, labels, np.asarray(choices), examples)


def _first_choice_baseline(task, train_rows, dev_rows):
  """Always the choice at the index most often right in training (clipped to the example's
  choices): COPA's majority, ReCoRD's most frequent entity slot."""
  index = int(np.bincount(train_rows.arrays["labels"]).argmax())
  choices = [min(index, len(example["choices"]) - 1) for example in dev_rows.examples]
  scores = _choice_scores(task, dev_rows.examples, choices)
  return {f"majority_{name}": value for name, value in scores.items()}


MULTIPLE_CHOICE = TaskKind(
    head=heads.MULTIPLE_CHOICE,
    num_outputs=1,
    encode_example=_encode_choices,
    side_keys=(),
    # One row per example: its (K,) scores; the highest is the chosen choice.
    score=lambda task, rows, outputs, options: _choice_scores(task, rows.examples,
                                                              np.argmax(outputs, axis=-1)),
    baseline=_first_choice_baseline,
    record_fields=lambda task, record: task.text_keys,
    decode=lambda task, rows, outputs, label_names, options: [{
        "choice":
            int(choice),
        "answer":
            example["choice_names"][choice],
        "probabilities":
            [float(p) for p in jax.nn.softmax(np.asarray(scores))[:len(example["choices"])]]
    } for example, choice, scores in zip(rows.examples, np.argmax(outputs, axis=-1), outputs)])

KINDS = {
    "classification": CLASSIFICATION,
    "regression": REGRESSION,
    "token_classification": TOKEN_CLASSIFICATION,
    "question_answering": QUESTION_ANSWERING,
    "multiple_choice": MULTIPLE_CHOICE,
}


def get(name):
  if name not in KINDS:
    raise ValueError(f"task kind {name!r} is not known; use one of {sorted(KINDS)}.")
  return KINDS[name]
