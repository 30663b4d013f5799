"""Records from TFDS datasets: the shipped corpora and tasks (``jaxssl.data.builders``) and
the TFDS catalog, through one path.

This is the module the rest of jaxssl reads datasets through (the builders in
``jaxssl.data.builders`` are the only other code that imports tensorflow_datasets). Datasets
are written as array_record and read through random-access data sources, so TensorFlow is
never needed.
"""

import contextlib
import fcntl
import importlib
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxssl.data import builders  # pylint: disable=unused-import  (registers the shipped datasets)
from jaxssl.data import sources

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


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
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
        "'jaxssl_qa/bible_cloze', 'jaxssl_sequences/<splice|promoters|malonylation>' or a TFDS catalog name such as 'wikipedia/20230601.en'"
    ) from error


def _prepared(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The dataset's builder, the dataset prepared first if needed. Processes sharing a local
  data dir prepare a dataset one at a time: the others wait, then reuse it."""
  data_path = str(_builder(name, data_dir).data_dir)
  with contextlib.ExitStack() as stack:
    if "://" not in data_path:  # a local directory (a cloud bucket takes no file lock)
      folder, version = os.path.split(data_path)
      os.makedirs(folder, exist_ok=True)
      lock_file = stack.enter_context(
          open(os.path.join(folder, f".{version}.lock"), "a", encoding="utf-8"))
      fcntl.flock(lock_file, fcntl.LOCK_EX)
    builder = _builder(name, data_dir)  # made now, it sees what another process prepared
    builder.download_and_prepare()
  return builder


def _prepared_source(builder: tfds.core.DatasetBuilder, name: str, split: str):
  """A random-access source over ``split`` of a prepared dataset."""
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


def dataset_version(name: str, data_dir: str | None) -> str:
  """A TFDS dataset's full name with its version (e.g. 'jaxssl_corpus/en/1.0.0'), which changes
  when its contents do."""
  return _builder(name, data_dir).info.full_name


def load_texts(name: str,
               split: str,
               data_dir: str | None,
               text_key: str = "text",
               txt_documents: str = "file") -> list[str]:
  """Texts of a split's documents, preparing the dataset in ``data_dir`` first if needed.

  ``name`` is 'jaxssl_corpus/en', 'jaxssl_corpus/zh', 'jaxssl_corpus/bilingual' (both),
  'jaxssl_corpus/<corpus file>' (e.g. 'jaxssl_corpus/moby_dick'), any TFDS catalog name, or
  local files or an ``hf:`` dataset (``jaxssl.data.sources``, which reads them, with
  ``txt_documents``); ``split`` may carry a TFDS slice such as 'train[:10%]'. Documents whose
  text is empty or whitespace are skipped.
  """
  if sources.is_external(name):
    return _external_texts(name, split, text_key, txt_documents)
  builder = _builder(name, data_dir)
  if text_key not in builder.info.features:
    raise ValueError(f"text_key={text_key!r} is not a feature of {name}; "
                     f"use one of {sorted(builder.info.features)}")
  source = _prepared_source(_prepared(name, data_dir), name, split)
  texts = [_as_str(record[text_key]) for record in _all_records(source)]
  texts = [text for text in texts if text.strip()]
  if not texts:
    raise ValueError(f"split {split!r} of {name} has no non-empty {text_key!r}; "
                     "choose another split or text_key")
  return texts


def _external_texts(name, split, text_key, txt_documents):
  """``load_texts`` of local files or an ``hf:`` dataset; a local corpus's one split, "train",
  sliced by TFDS's split syntax. Prints how many empty documents were skipped."""
  if name.startswith(sources.HF_PREFIX):
    documents = sources.hf_documents(name, split, text_key)
  else:
    documents = sources.local_documents(name, text_key, txt_documents)
    info = tfds.core.SplitInfo(name="train", shard_lengths=[len(documents)], num_bytes=0)
    try:
      instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute({"train": info})
    except (ValueError, AssertionError) as error:
      raise ValueError(f"split {split!r} of {name}: {error} A local corpus has one split, "
                       "'train'; hold part of it out with --config.train_split='train[1%:]' "
                       "--config.eval_split='train[:1%]'.") from None
    documents = [
        document for instruction in instructions
        for document in documents[instruction.from_:instruction.to]
    ]
  texts = [document for document in documents if document.strip()]
  if len(texts) < len(documents):
    print(f"{name} {split}: skipped {len(documents) - len(texts)} empty document(s) of "
          f"{len(documents)}.")
  if not texts:
    raise ValueError(f"split {split!r} of {name} has no non-empty document; check the files "
                     "and text_key.")
  return texts


def load_examples(name: str, split: str, data_dir: str | None) -> list[dict]:
  """Every feature of a split's examples, with text as str, scalars as int or float and
  sequences as lists (a Sequence of a dict, such as SQuAD's ``answers``, as a dict of lists).

  ``name`` is e.g. 'jaxssl_sentiment/movie_reviews' (features id, text, rating, label) or any
  TFDS catalog name; ``split`` may carry a TFDS slice such as 'test[:100]'.
  """
  source = _prepared_source(_prepared(name, data_dir), name, split)
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
