"""The shipped corpora and labelled tasks as TFDS datasets, and records from any TFDS dataset.

This is the one module that imports tensorflow_datasets. Datasets are written as array_record
and read through random-access data sources, so TensorFlow is never needed.
"""

import contextlib
import dataclasses
import hashlib
import importlib
import json
import lzma
import pathlib

import numpy as np
import tensorflow_datasets as tfds

_CORPORA_DIR = pathlib.Path(__file__).parent / "corpora"
_TASKS_DIR = pathlib.Path(__file__).parent / "tasks"
_VALIDATION_FRACTION = 0.02
_ENGLISH_FILES = ("moby_dick", "sotu", "web_bible")
_CHINESE_FILES = ("libreoffice_help_zh_cn", "libreoffice_help_zh_tw", "peoples_daily_199801")
_FEATURES = ("id", "source", "title", "text")  # all text, as in the corpus files

# VADER's sentences (tasks/vader_<domain>.jsonl.xz) carry the mean of several human ratings on
# -4..+4. A mean within (-1, 1) means the raters found the sentence neutral or disagreed on it:
# too ambiguous for a positive/negative label, so such sentences are left out.
SENTIMENT_LABELS = ("negative", "positive")
MIN_ABS_RATING = 1.0
_SENTIMENT_HELD_OUT = {"test": 0.1, "validation": 0.1}  # the rest is train
_SENTIMENT_DOMAINS = {  # config name: (sentences labelled, sentences left out as ambiguous)
    "movie_reviews": (9173, 1432),
    "tweets": (2667, 1533),
    "nyt_editorials": (1554, 3636),
}

# Without TensorFlow, TFDS registers its older catalog packages (wikipedia, glue, c4, ...) lazily,
# and its own loader stops at the first package whose optional dependency is missing (h5py for
# ``nearest_neighbors``), so the text packages after it are never registered. These are the
# packages that hold text datasets; each is imported on its own.
_TEXT_CATALOG_PACKAGES = (
    "tensorflow_datasets.text",
    "tensorflow_datasets.translate",
    "tensorflow_datasets.summarization",
    "tensorflow_datasets.question_answering",
    "tensorflow_datasets.text_simplification",
)
# jaxssl's own task builders live in their own modules, which import this one for the shared
# helpers; they register with TFDS when imported, which ``_builder`` does on first use.
_JAXSSL_BUILDER_MODULES = (
    "jaxssl.data.squad",
    "jaxssl.data.pos",
    "jaxssl.data.paraphrase",
    "jaxssl.data.sentiment_zh",
)


class _ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder for data shipped with the package, written as array_record."""

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    # TFDS defaults to tfrecord, which needs TensorFlow to write and cannot be read randomly.
    super().__init__(file_format=file_format, **kwargs)


@dataclasses.dataclass(eq=False)
class CorpusConfig(tfds.core.BuilderConfig):
  files: tuple[str, ...] = ()  # names of corpora/<name>.jsonl.xz


class JaxsslCorpus(_ArrayRecordBuilder):
  """English and/or Chinese documents shipped with jaxssl; see corpora/PROVENANCE.md for licences.

  About 2% of the documents of each file, chosen by a hash of their id, form the validation
  split, so a file's split is the same in every config; documents are kept whole, so no text
  is shared between the splits.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      CorpusConfig(
          name="en",
          description="Moby Dick, US State of the Union addresses 1790-2021, World English Bible.",
          files=_ENGLISH_FILES,
      ),
      CorpusConfig(
          name="zh",
          description="LibreOffice help (Simplified and Traditional), People's Daily January 1998.",
          files=_CHINESE_FILES,
      ),
      # Both languages in one dataset, for one model (and one vocabulary) over both.
      CorpusConfig(
          name="bilingual",
          description="The en and zh configs together: English and Chinese documents.",
          files=_ENGLISH_FILES + _CHINESE_FILES,
      ),
      # One file alone: small corpora for quick runs and tests.
      *(CorpusConfig(name=file, description=f"{file}.jsonl.xz alone.", files=(file,))
        for file in _ENGLISH_FILES + _CHINESE_FILES),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "en"

  def _info(self) -> tfds.core.DatasetInfo:
    features = {key: tfds.features.Text() for key in _FEATURES}
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager  # the documents ship with the package
    splits = {"train": [], "validation": []}
    for name in self.builder_config.files:
      documents = _read_records(_CORPORA_DIR / f"{name}.jsonl.xz")
      for split, split_documents in _split_by_hash(documents, {
          "validation": _VALIDATION_FRACTION
      }).items():
        splits[split] += split_documents
    return {split: self._generate_examples(documents) for split, documents in splits.items()}

  def _generate_examples(self, documents):
    for document in documents:
      yield document["id"], {key: document[key] for key in _FEATURES}


@dataclasses.dataclass(eq=False)
class SentimentConfig(tfds.core.BuilderConfig):
  file: str = ""  # name of tasks/<file>.jsonl.xz


class JaxsslSentiment(_ArrayRecordBuilder):
  """Sentences with human sentiment ratings (VADER; Hutto & Gilbert 2014), labelled by sign.

  ``label`` is positive for a mean rating >= MIN_ABS_RATING and negative for <= -MIN_ABS_RATING;
  sentences in between are too ambiguous to label and are left out (the config descriptions
  and tasks/PROVENANCE.md count them). Of the labelled sentences, 10% each, chosen by a hash
  of their id, form the test and validation splits, the rest train. See tasks/PROVENANCE.md
  for licences.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SentimentConfig(
          name=domain,
          description=(f"VADER {domain.replace('_', ' ')}: {labelled} sentences with "
                       f"|rating| >= {MIN_ABS_RATING}; {left_out} more ambiguous ones left out."),
          file=f"vader_{domain}") for domain, (labelled, left_out) in _SENTIMENT_DOMAINS.items()
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "movie_reviews"

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "text": tfds.features.Text(),
        "rating": tfds.features.Scalar(np.float32, doc="Mean human rating, -4 to +4."),
        "label": tfds.features.ClassLabel(names=SENTIMENT_LABELS),
    })
    return self.dataset_info_from_configs(features=features, supervised_keys=("text", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # the sentences ship with the package
    sentences = _read_records(_TASKS_DIR / f"{self.builder_config.file}.jsonl.xz")
    labelled = [s for s in sentences if abs(s["rating"]) >= MIN_ABS_RATING]
    return {
        split: self._generate_examples(split_sentences)
        for split, split_sentences in _split_by_hash(labelled, _SENTIMENT_HELD_OUT).items()
    }

  def _generate_examples(self, sentences):
    for sentence in sentences:
      yield sentence["id"], {
          "id": sentence["id"],
          "text": sentence["text"],
          "rating": sentence["rating"],
          "label": int(sentence["rating"] > 0)
      }


def _read_records(path: pathlib.Path) -> list[dict]:
  with lzma.open(path, "rt", encoding="utf-8") as lines:
    return [json.loads(line) for line in lines]


def _split_by_hash(records: list[dict], held_out: dict[str, float]) -> dict[str, list[dict]]:
  """Records by split: ``held_out`` maps a split to its fraction, the rest go to train.

  Ids ordered by hash fill each held-out split in turn with round(fraction * N) records (at
  least one): stable across runs and machines, and independent of the file's order.
  """
  by_hash = sorted(records, key=lambda r: hashlib.sha256(r["id"].encode("utf-8")).hexdigest())
  splits = {}
  for split, fraction in held_out.items():
    size = max(1, round(fraction * len(records)))
    splits[split], by_hash = by_hash[:size], by_hash[size:]
  return {"train": by_hash, **splits}


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  for module in _JAXSSL_BUILDER_MODULES:
    importlib.import_module(module)
  try:
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except ValueError:  # also TFDS's DatasetNotFoundError; perhaps a catalog package not yet imported
    for package in _TEXT_CATALOG_PACKAGES:
      with contextlib.suppress(ImportError):
        importlib.import_module(package)
  try:
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except ValueError as error:
    raise ValueError(
        f"unknown dataset name or config {name!r}; use 'jaxssl_corpus/en', 'jaxssl_corpus/zh', "
        "'jaxssl_corpus/bilingual', 'jaxssl_corpus/<corpus file>', 'jaxssl_sentiment/<domain>', "
        "'jaxssl_sentiment_zh', 'jaxssl_pos/brown', 'jaxssl_paraphrase/kjv_web', "
        "'jaxssl_qa/bible_cloze' or a TFDS catalog name such as 'wikipedia/20230601.en'") from error


def _prepared_source(builder: tfds.core.DatasetBuilder, name: str, split: str):
  """A random-access source over ``split``, preparing the dataset first if needed."""
  builder.download_and_prepare()
  known_splits = builder.info.splits  # empty under tfds.testing.mock_data, which serves any split
  if known_splits and split.split("[")[0] not in known_splits:
    raise ValueError(f"unknown split {split!r} for {name}; use one of {sorted(known_splits)}")
  try:
    return builder.as_data_source(split=split)
  except ValueError as error:  # array_record refuses a slice that selects no file at all
    raise ValueError(f"split {split!r} of {name} selects no examples; widen the split") from error


def _all_records(source) -> list:
  """Every record of a data source, read in one batched call where the source has one (an
  array_record read per record costs about as much as decoding it)."""
  indices = range(len(source))
  try:
    return list(source.__getitems__(indices))
  except (AttributeError, TypeError):  # a plain sequence, or a tfds.testing.mock_data source,
    return [source[index] for index in indices]  # whose batched read takes no keys


def load_texts(name: str, split: str, data_dir: str | None, text_key: str = "text") -> list[str]:
  """Texts of a split's documents, preparing the dataset in ``data_dir`` first if needed.

  ``name`` is 'jaxssl_corpus/en', 'jaxssl_corpus/zh', 'jaxssl_corpus/bilingual' (both),
  'jaxssl_corpus/<corpus file>' (e.g. 'jaxssl_corpus/moby_dick') or any TFDS catalog name;
  ``split`` may carry a TFDS slice such as 'train[:10%]'. Documents whose text is empty or
  whitespace are skipped.
  """
  builder = _builder(name, data_dir)
  if text_key not in builder.info.features:
    raise ValueError(f"text_key={text_key!r} is not a feature of {name}; "
                     f"use one of {sorted(builder.info.features)}")
  source = _prepared_source(builder, name, split)
  texts = [_as_str(record[text_key]) for record in _all_records(source)]
  texts = [text for text in texts if text.strip()]
  if not texts:
    raise ValueError(f"split {split!r} of {name} has no non-empty {text_key!r}; "
                     "choose another split or text_key")
  return texts


def load_examples(name: str, split: str, data_dir: str | None) -> list[dict]:
  """Every feature of a split's examples, with text as str, scalars as int or float and
  sequences as lists (a Sequence of a dict, such as SQuAD's ``answers``, as a dict of lists).

  ``name`` is e.g. 'jaxssl_sentiment/movie_reviews' (features id, text, rating, label) or any
  TFDS catalog name; ``split`` may carry a TFDS slice such as 'test[:100]'.
  """
  source = _prepared_source(_builder(name, data_dir), name, split)
  examples = [{
      key: _as_python(value) for key, value in record.items()
  } for record in _all_records(source)]
  if not examples:
    raise ValueError(f"split {split!r} of {name} has no examples; choose another split")
  return examples


def label_names(name: str, data_dir: str | None, label_key: str = "label") -> list[str]:
  """The class names of a dataset's ClassLabel feature ``label_key``, in label order; for a
  sequence of class labels (e.g. a tag per word), those of its elements."""
  features = _builder(name, data_dir).info.features
  feature = features[label_key] if label_key in features else None
  if isinstance(feature, tfds.features.Sequence):
    feature = feature.feature
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ValueError(f"{name} has no class-label feature {label_key!r}; use a classification "
                     "dataset such as 'jaxssl_sentiment/movie_reviews'")
  return list(feature.names)


def _as_str(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _as_python(value):
  """bytes as str and numpy scalars as int or float; sequences (a Sequence feature's lists or
  arrays, and the dicts of them that a Sequence of a dict gives) element by element, as lists."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
    return value.item()
  if isinstance(value, dict):
    return {key: _as_python(item) for key, item in value.items()}
  if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
    return value.tolist()  # numbers in one call (a POS sentence's tags, say)
  if isinstance(value, (list, np.ndarray)):
    return [_as_python(item) for item in value]
  return value
