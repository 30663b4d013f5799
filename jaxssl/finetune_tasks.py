"""Fine-tuning tasks: each one's dataset, head and metrics; its examples as model rows; and the
model's outputs on those rows as one prediction per example.

A task is of one of four kinds, each with its head in ``jaxssl.heads.HEADS``:

- ``classification``: a text or a text pair -> a class, from [CLS] (sentiment, GLUE's sst2, mrpc);
- ``regression``: a text or a text pair -> a real value, from [CLS] (rating, stsb);
- ``token_classification``: pre-split words -> a tag per word, read at each word's first
  sub-token (pos);
- ``question_answering``: question + context -> an answer span of the context; a long context
  becomes several ``doc_stride`` windows, each its own row (qa, squad).

``encode`` never drops an example silently: an example whose text is empty (or has no tokens),
or whose answer is not at its offset in the context, is left out and counted in
``Rows.skipped``; examples cut to fit ``max_seq_length`` are counted in ``Rows.truncated``.
A class label outside the label set is an error naming the example.
"""

import collections
import dataclasses

import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

from jaxssl import qa_metrics
from jaxssl.data import finetuning


@dataclasses.dataclass(frozen=True)
class Task:
  dataset: str  # TFDS name
  kind: str  # "classification", "regression", "token_classification", "question_answering"
  # classification/regression: one text feature or two (a pair); token_classification: the words
  # feature; question_answering: the question and the context features.
  text_keys: tuple[str, ...]
  # A ClassLabel, a float, a sequence of ClassLabels (one per word), or SQuAD's ``answers``.
  label_key: str
  metrics: tuple[str, ...]  # names in METRICS (QA: "exact_match", "f1")
  dev_split: str = "validation"  # the split evaluated on (GLUE's test labels are hidden)


_BINARY = ("accuracy", "f1", "matthews_corrcoef")
_CORRELATIONS = ("pearson", "spearman")
_SQUAD = ("exact_match", "f1")

TASKS = {
    # Shipped with the package: no network needed.
    "sentiment":
        Task("jaxssl_sentiment/movie_reviews", "classification", ("text",), "label", _BINARY),
    "rating":
        Task("jaxssl_sentiment/movie_reviews", "regression", ("text",), "rating", _CORRELATIONS),
    "paraphrase":
        Task("jaxssl_paraphrase/kjv_web", "classification", ("sentence1", "sentence2"), "label",
             _BINARY),
    "pos":
        Task("jaxssl_pos/brown", "token_classification", ("tokens",), "tags", ("accuracy",)),
    "pos_brown":
        Task("jaxssl_pos/brown", "token_classification", ("tokens",), "brown_tags", ("accuracy",)),
    "qa":
        Task("jaxssl_qa/bible_cloze", "question_answering", ("question", "context"), "answers",
             _SQUAD),
    "sentiment_zh":
        Task("jaxssl_sentiment_zh", "classification", ("text",), "label", _BINARY),
    # The TFDS catalog: downloaded and prepared once (network), then the same path.
    "sst2":
        Task("glue/sst2", "classification", ("sentence",), "label", ("accuracy",)),
    "mrpc":
        Task("glue/mrpc", "classification", ("sentence1", "sentence2"), "label",
             ("accuracy", "f1")),
    "qqp":
        Task("glue/qqp", "classification", ("question1", "question2"), "label", ("accuracy", "f1")),
    "cola":
        Task("glue/cola", "classification", ("sentence",), "label", ("matthews_corrcoef",)),
    "stsb":
        Task("glue/stsb", "regression", ("sentence1", "sentence2"), "label", _CORRELATIONS),
    "mnli":
        Task("glue/mnli", "classification", ("premise", "hypothesis"), "label", ("accuracy",),
             "validation_matched"),
    "qnli":
        Task("glue/qnli", "classification", ("question", "sentence"), "label", ("accuracy",)),
    "rte":
        Task("glue/rte", "classification", ("sentence1", "sentence2"), "label", ("accuracy",)),
    "wnli":
        Task("glue/wnli", "classification", ("sentence1", "sentence2"), "label", ("accuracy",)),
    "squad":
        Task("squad", "question_answering", ("question", "context"), "answers", _SQUAD),
}
# The tasks whose data ships with jaxssl, which the suite (jaxssl.suite) runs.
OFFLINE_TASKS = ("sentiment", "rating", "paraphrase", "pos", "qa", "sentiment_zh")

# name -> f(labels (N,), predictions (N,)) -> float; predictions are class ids or real values.
METRICS = {
    "accuracy": sk_metrics.accuracy_score,
    "f1": sk_metrics.f1_score,  # of class 1 (binary tasks)
    "matthews_corrcoef": sk_metrics.matthews_corrcoef,
    "pearson": lambda labels, predictions: scipy.stats.pearsonr(labels, predictions)[0],
    "spearman": lambda labels, predictions: scipy.stats.spearmanr(labels, predictions)[0],
}


def get_task(name, dataset=""):
  """The task called ``name``, reading ``dataset`` instead of its own when given (e.g. the
  sentiment task on 'jaxssl_sentiment/tweets', or qa on 'jaxssl_qa/squad_fixture')."""
  if name not in TASKS:
    raise ValueError(f"task={name!r} is not a fine-tuning task; use one of {sorted(TASKS)}.")
  task = TASKS[name]
  return dataclasses.replace(task, dataset=dataset) if dataset else task


@dataclasses.dataclass
class Rows:
  """A split's examples as model rows (one per example, or one per QA window).

  ``arrays``: (R, L) int32 ``input_ids``, ``segment_ids``, ``attention_mask``, and with targets
  the head's: ``labels`` (R,) or (R, L) (token tags at first sub-tokens, else IGNORED_LABEL), or
  ``start_positions``/``end_positions`` (R,).
  """
  arrays: dict[str, np.ndarray]
  example_of_row: np.ndarray  # (R,) index into ``examples`` of each row's example
  examples: list[dict]  # the encoded examples, in order (skipped ones left out)
  word_index: np.ndarray | None  # token_classification: (R, L) word at each first sub-token, else -1
  token_char_spans: list | None  # question_answering: per row, each position's context characters
  skipped: dict[str, int]  # reason -> examples left out
  truncated: int  # examples that lost tokens (or words) to max_seq_length


def encode(task,
           tokenizer,
           examples,
           max_seq_length,
           *,
           num_labels=None,
           with_targets=True,
           doc_stride=64,
           max_question_length=64,
           where="examples"):
  """``Rows`` of ``examples`` (dicts of features); ``with_targets`` False for prediction, where
  there are no labels. ``num_labels``: the label set's size for class labels, which are checked;
  ``where`` names the examples in errors (e.g. 'glue/sst2 test')."""
  needed = task.text_keys + ((task.label_key,) if with_targets else ())
  missing = [key for key in needed if examples and key not in examples[0]]
  if missing:
    raise ValueError(f"{where} examples have no {missing[0]!r} feature (they have "
                     f"{sorted(examples[0])}); the {task.kind} task reads {list(needed)}: choose "
                     "a dataset with those features.")
  skipped = collections.Counter()
  kept, rows, truncated = [], [], 0
  word_index, spans = [], []
  for index, example in enumerate(examples):
    try:
      if task.kind == "question_answering":
        example_rows, cut = _encode_question(task, tokenizer, example, max_seq_length, with_targets,
                                             doc_stride, max_question_length)
        spans += [row.pop("token_char_spans") for row in example_rows]
      elif task.kind == "token_classification":
        row, cut = _encode_words(task, tokenizer, example, max_seq_length, with_targets)
        word_index.append(row.pop("word_index"))
        example_rows = [row]
      else:
        row, cut = _encode_texts(task, tokenizer, example, max_seq_length)
        if with_targets:
          row["labels"] = example[task.label_key]
        example_rows = [row]
    except _Skip as reason:
      skipped[str(reason)] += 1
      continue
    if with_targets and num_labels is not None:
      _check_labels(example[task.label_key], num_labels, f"{where} example {index}")
    truncated += cut > 0
    rows += [(len(kept), row) for row in example_rows]
    kept.append(example)
  if not kept:
    raise ValueError(f"{where}: none of the {len(examples)} examples could be used "
                     f"({dict(skipped)}); check the dataset and split.")
  arrays = {key: np.stack([np.asarray(row[key]) for _, row in rows]) for key in rows[0][1]}
  if "labels" in arrays and task.kind == "regression":
    arrays["labels"] = arrays["labels"].astype(np.float32)
  return Rows(arrays, np.array([example for example, _ in rows]), kept,
              np.stack(word_index) if word_index else None, spans or None, dict(skipped), truncated)


class _Skip(Exception):
  """An example ``encode`` leaves out; the message is the reason it counts it under."""


def _encode_texts(task, tokenizer, example, max_seq_length):
  texts = [example[key] for key in task.text_keys]
  ids = [tokenizer.encode(text) if text.strip() else [] for text in texts]
  if not all(ids):
    raise _Skip("empty text")
  return finetuning.encode_ids(tokenizer, ids[0], ids[1] if len(ids) > 1 else None, max_seq_length)


def _encode_words(task, tokenizer, example, max_seq_length, with_targets):
  words = list(example[task.text_keys[0]])
  if not words:
    raise _Skip("no words")
  # The words' own indices as labels give the word at each first sub-token.
  row, num_cut = finetuning.encode_words(tokenizer, words, np.arange(len(words)), max_seq_length)
  row["word_index"] = np.maximum(row.pop("labels"), -1)  # (L,)
  if with_targets:
    tags = np.asarray(example[task.label_key], np.int32)  # (W,)
    if len(tags) != len(words):
      raise ValueError(f"{len(words)} words but {len(tags)} tags in example {example.get('id')!r}; "
                       "give one tag per word.")
    has_word = row["word_index"] >= 0
    row["labels"] = np.where(has_word, tags[np.maximum(row["word_index"], 0)],
                             finetuning.IGNORED_LABEL).astype(np.int32)  # (L,)
  return row, num_cut


def _encode_question(task, tokenizer, example, max_seq_length, with_targets, doc_stride,
                     max_question_length):
  question, context = (example[key] for key in task.text_keys)
  question_ids = tokenizer.encode(question) if question.strip() else []
  context_ids, offsets = tokenizer.encode_with_offsets(context) if context.strip() else ([], [])
  if not question_ids or not context_ids:
    raise _Skip("empty text")
  windows = finetuning.qa_windows(question_ids, context_ids, offsets, max_seq_length, doc_stride,
                                  tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id,
                                  max_question_length)
  if with_targets:
    answers = example[task.label_key]
    if len(answers["text"]) == 0:
      raise _Skip("no answer")
    for window in windows:
      try:
        window["start_positions"], window["end_positions"] = finetuning.answer_positions(
            window, context, int(answers["answer_start"][0]), answers["text"][0])
      except ValueError:
        raise _Skip("answer not at its offset in the context") from None
  return windows, max(0, len(question_ids) - max_question_length)


def _check_labels(labels, num_labels, where):
  labels = np.atleast_1d(np.asarray(labels))
  outside = labels[(labels < 0) | (labels >= num_labels)]
  if outside.size:
    raise ValueError(f"{where} has label {outside[0]} outside the label set 0..{num_labels - 1} "
                     "(GLUE hides its test labels as -1); evaluate on a split with labels, or fix "
                     "the data.")


def score(task, rows, outputs, n_best=20, max_answer_length=30):
  """{metric: value} of the model ``outputs`` on ``rows`` (``run_model``'s) against the labels."""
  if task.kind == "question_answering":
    answers = [
        answer for answer, _, _ in answer_spans(task, rows, outputs, n_best, max_answer_length)
    ]
    return _squad_scores(task, rows, answers)
  labels, predictions = _labels(task, rows), predicted_classes(task, outputs)
  if task.kind == "token_classification":
    predictions = predictions[rows.arrays["labels"] >= 0]
  return {name: float(METRICS[name](labels, predictions)) for name in task.metrics}


def baseline(task, train_rows, dev_rows):
  """The dev metrics of a model that ignores the text.

  Classification and tagging: always the most frequent training class (tag). Regression: always
  the mean training label, whose correlations are undefined, so its mean squared error is
  reported. QA: always the most frequent training answer.
  """
  if task.kind == "question_answering":
    first_answers = [example[task.label_key]["text"][0] for example in train_rows.examples]
    most_frequent = collections.Counter(first_answers).most_common(1)[0][0]
    scores = _squad_scores(task, dev_rows, [most_frequent] * len(dev_rows.examples))
    return {f"majority_answer_{name}": value for name, value in scores.items()}
  train_labels, dev_labels = _labels(task, train_rows), _labels(task, dev_rows)
  if task.kind == "regression":
    return {"mean_prediction_mse": float(np.mean(np.square(dev_labels - train_labels.mean())))}
  predictions = np.full_like(dev_labels, np.bincount(train_labels).argmax())
  return {f"majority_{name}": float(METRICS[name](dev_labels, predictions)) for name in task.metrics}


def _labels(task, rows):
  """Classification/regression (N,) labels; token classification (words,) tags of the words that
  fit, flattened."""
  labels = rows.arrays["labels"]
  return labels[labels >= 0] if task.kind == "token_classification" else labels


def _squad_scores(task, rows, predicted_answers):
  ground_truths = [list(example[task.label_key]["text"]) for example in rows.examples]
  scores = qa_metrics.squad_scores(predicted_answers, ground_truths)
  return {name: scores[name] for name in task.metrics}


def predicted_classes(task, outputs):
  """Classification (R,) and token classification (R, L) class ids; regression its values."""
  return outputs if task.kind == "regression" else np.argmax(outputs, axis=-1)


def answer_spans(task, rows, outputs, n_best, max_answer_length):
  """Per example, its best answer over all its windows: (text, start_char, end_char)."""
  start_logits, end_logits = outputs  # (R, L) each
  candidates = [[] for _ in rows.examples]
  for row, example in enumerate(rows.example_of_row):
    candidates[example].append(
        finetuning.best_span(start_logits[row], end_logits[row], rows.token_char_spans[row], n_best,
                             max_answer_length))
  return [
      finetuning.best_answer(example_candidates, example[task.text_keys[1]])
      for example_candidates, example in zip(candidates, rows.examples)
  ]
