"""Fine-tuning tasks: each one's dataset, features, kind and metrics; its examples as model rows
(``encode``); and the model's outputs on those rows scored against its labels (``score``) and
against a model that ignores the text (``baseline``). What differs per kind is the kind's
record (``jaxssl.core.tasks.kinds``).

``encode`` never drops an example silently: an example whose text is empty (or has no tokens),
or whose answer is not at its offset in the context, is left out and counted in
``Rows.skipped``; examples cut to fit ``max_seq_length`` are counted in ``Rows.truncated``.
A class label outside the label set is an error naming the example.
"""

import collections
import dataclasses
from typing import Callable

import numpy as np

from jaxssl.core.tasks import kinds
from jaxssl.core.tasks import superglue
from jaxssl.data import sequence_words as sequence_words_lib


@dataclasses.dataclass(frozen=True)
class Task:
  dataset: str  # TFDS name
  kind: str  # a name in kinds.KINDS
  # classification/regression: one text feature or two (a pair); token_classification: the words
  # feature; question_answering: the question and the context features; multiple_choice: the
  # features ``prepare`` makes its choices from.
  text_keys: tuple[str, ...]
  # A ClassLabel, a float, a sequence of ClassLabels (one per word), SQuAD's ``answers``, or
  # (multiple_choice) the right choice's index or a list of right answer texts.
  label_key: str
  metrics: tuple[str, ...]  # names in kinds.METRICS (QA: "exact_match", "f1")
  dev_split: str = "validation"  # the split evaluated on (GLUE's test labels are hidden)
  # A sequence task's alphabet (jaxssl.data.sequence_words.ALPHABETS: "dna", "protein"): its
  # text is symbols, written as words by the config's ``sequence_words`` mapping before
  # tokenization. "": the text is language.
  alphabet: str = ""
  # example -> the example with the features its kind reads, derived from the dataset's own
  # (jaxssl.core.tasks.superglue: a marked word, a multiple-choice task's "choices"); None: the
  # dataset's features are read as they are.
  prepare: Callable | None = None
  # The TFDS name the dev split is read from ("": ``dataset``), e.g. a diagnostic set scored
  # with a model trained on another (SuperGLUE's AX-b after RTE).
  eval_dataset: str = ""


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
    # SuperGLUE (TFDS's super_glue/*, prepared without TensorFlow), with its official metrics;
    # its test labels are hidden, so dev = validation, except the diagnostics': all test.
    "boolq":
        Task("jaxssl_super_glue/boolq", "classification", ("question", "passage"), "label",
             ("accuracy",)),
    "cb":
        Task("jaxssl_super_glue/cb", "classification", ("premise", "hypothesis"), "label",
             ("accuracy", "f1_macro")),
    "copa":
        Task(
            "jaxssl_super_glue/copa",
            "multiple_choice", ("premise", "question", "choice1", "choice2"),
            "label", ("accuracy",),
            prepare=superglue.copa),
    "multirc":
        Task(
            "jaxssl_super_glue/multirc",
            "classification", ("question_answer", "paragraph"),
            "label", ("f1a", "group_exact_match"),
            prepare=superglue.multirc),
    "record":
        Task(
            "jaxssl_super_glue/record",
            "multiple_choice", ("passage", "query", "entities"),
            "answers", ("f1", "exact_match"),
            prepare=superglue.record),
    # GLUE's RTE examples, as SuperGLUE's builder has them.
    "superglue_rte":
        Task("jaxssl_super_glue/rte", "classification", ("premise", "hypothesis"), "label",
             ("accuracy",)),
    "wic":
        Task(
            "jaxssl_super_glue/wic",
            "classification", ("marked1", "marked2"),
            "label", ("accuracy",),
            prepare=superglue.wic),
    "wsc":
        Task(
            "jaxssl_super_glue/wsc.fixed",
            "classification", ("marked",),
            "label", ("accuracy",),
            prepare=superglue.wsc),
    # The diagnostics: fine-tuned on RTE, scored on AX-b (Matthews correlation) or AX-g
    # (accuracy; its gender parity needs the pair ids TFDS does not keep).
    "axb":
        Task(
            "jaxssl_super_glue/rte",
            "classification", ("premise", "hypothesis"),
            "label", ("matthews_corrcoef",),
            dev_split="test",
            prepare=superglue.as_rte,
            eval_dataset="jaxssl_super_glue/axb"),
    "axg":
        Task(
            "jaxssl_super_glue/rte",
            "classification", ("premise", "hypothesis"),
            "label", ("accuracy",),
            dev_split="test",
            prepare=superglue.as_rte,
            eval_dataset="jaxssl_super_glue/axg"),
}
SUPERGLUE_TASKS = tuple(
    name for name, task in TASKS.items() if task.dataset.startswith("jaxssl_super_glue/"))
# The tasks whose data ships with jaxssl, which the suite (jaxssl.suite) runs.
OFFLINE_TASKS = ("sentiment", "rating", "paraphrase", "pos", "qa", "sentiment_zh")
# Sequences that are not language, shipped too (jaxssl.analysis.beyond_language).
SEQUENCE_TASKS = {
    "splice":
        Task(
            "jaxssl_sequences/splice",
            "classification", ("sequence",),
            "label", ("accuracy",),
            alphabet="dna"),
    "promoters":
        Task(
            "jaxssl_sequences/promoters",
            "classification", ("sequence",),
            "label",
            _BINARY,
            alphabet="dna"),
    "malonylation":
        Task(
            "jaxssl_sequences/malonylation",
            "classification", ("sequence",),
            "label",
            _BINARY,
            alphabet="protein"),
    "essen":
        Task(
            "jaxssl_sequences/essen",
            "classification", ("sequence",),
            "label",
            _BINARY,
            alphabet="intervals"),
}
TASKS.update(SEQUENCE_TASKS)


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
  # The kind's per-row values that are not model inputs (kinds.TaskKind.side_keys), e.g.
  # token_classification's "word_index": (R, L) word at each first sub-token, else -1.
  side: dict[str, list]
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
           sliding_windows=False,
           sequence_words="words",
           where="examples"):
  """``Rows`` of ``examples`` (dicts of features); ``with_targets`` False for prediction, where
  there are no labels. ``num_labels``: the label set's size for class labels, which are checked;
  ``sequence_words``: a sequence task's mapping of symbols to words (an example with a symbol
  outside its alphabet is skipped and counted); ``where`` names the examples in errors (e.g.
  'glue/sst2 test')."""
  kind = kinds.get(task.kind)
  if task.prepare is not None:
    examples = [
        _prepared(task, example, f"{where} example {index}")
        for index, example in enumerate(examples)
    ]
  needed = task.text_keys + ((task.label_key,) if with_targets else ())
  missing = [key for key in needed if examples and key not in examples[0]]
  if missing:
    raise ValueError(f"{where} examples have no {missing[0]!r} feature (they have "
                     f"{sorted(examples[0])}); the {task.kind} task reads {list(needed)}: choose "
                     "a dataset with those features.")
  options = kinds.EncodeOptions(max_seq_length, with_targets, doc_stride, max_question_length,
                                sliding_windows)
  skipped = collections.Counter()
  kept, rows, truncated = [], [], 0
  side = {key: [] for key in kind.side_keys}
  if task.alphabet:
    sequence_words_lib.check_mapping(sequence_words)
  for index, example in enumerate(examples):
    try:
      if task.alphabet:
        key = task.text_keys[0]
        example = {
            **example, key: sequence_words_lib.to_words(example[key], task.alphabet, sequence_words)
        }
      example_rows, cut = kind.encode_example(task, tokenizer, example, options)
    except (kinds.Skip, sequence_words_lib.UnknownSymbol) as reason:
      skipped[str(reason)] += 1
      continue
    if with_targets and num_labels is not None:
      _check_labels(example[task.label_key], num_labels, f"{where} example {index}")
    truncated += cut > 0
    for row in example_rows:
      for key in kind.side_keys:
        side[key].append(row.pop(key))
      rows.append((len(kept), row))
    kept.append(example)
  if not kept:
    raise ValueError(f"{where}: none of the {len(examples)} examples could be used "
                     f"({dict(skipped)}); check the dataset and split.")
  arrays = {key: _stacked([np.asarray(row[key]) for _, row in rows]) for key in rows[0][1]}
  return Rows(arrays, np.array([example for example, _ in rows]), kept, side, dict(skipped),
              truncated)


def _prepared(task, example, where):
  try:
    return task.prepare(example)
  except KeyError as missing:
    raise ValueError(f"{where} has no {missing.args[0]!r} feature (it has {sorted(example)}); "
                     f"the task reads {task.dataset}'s features: choose that dataset.") from None


def _stacked(values):
  """(R, ...) of the rows' arrays, zero-padded at the end of each axis to the largest: a
  multiple-choice row with fewer choices than another gets all-padding choices (attention mask
  0), which its head scores lowest."""
  if len({value.shape for value in values}) == 1:
    return np.stack(values)
  shape = np.max([value.shape for value in values], axis=0)
  return np.stack([
      np.pad(value, [(0, size - length)
                     for size, length in zip(shape, value.shape)])
      for value in values
  ])


def _check_labels(labels, num_labels, where):
  labels = np.atleast_1d(np.asarray(labels))
  outside = labels[(labels < 0) | (labels >= num_labels)]
  if outside.size:
    raise ValueError(f"{where} has label {outside[0]} outside the label set 0..{num_labels - 1} "
                     "(GLUE hides its test labels as -1); evaluate on a split with labels, or fix "
                     "the data.")


def score(task, rows, outputs, n_best=20, max_answer_length=30):
  """{metric: value} of the model ``outputs`` on ``rows`` (``run_model``'s) against the labels."""
  return kinds.get(task.kind).score(task, rows, outputs,
                                    kinds.DecodeOptions(n_best, max_answer_length))


def baseline(task, train_rows, dev_rows):
  """The dev metrics of a model that ignores the text (see each kind's ``baseline``):
  classification and tagging the most frequent training class (tag), regression the mean
  training label's mean squared error, QA the most frequent training answer."""
  return kinds.get(task.kind).baseline(task, train_rows, dev_rows)
