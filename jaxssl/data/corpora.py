"""The shipped pretraining corpora as a TFDS dataset, and document texts from any TFDS dataset.

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

import tensorflow_datasets as tfds

_CORPORA_DIR = pathlib.Path(__file__).parent / "corpora"
_VALIDATION_FRACTION = 0.02
_ENGLISH_FILES = ("moby_dick", "sotu", "web_bible")
_CHINESE_FILES = ("libreoffice_help_zh_cn", "libreoffice_help_zh_tw", "peoples_daily_199801")
_FEATURES = ("id", "source", "title", "text")  # all text, as in the corpus files

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


@dataclasses.dataclass(eq=False)
class CorpusConfig(tfds.core.BuilderConfig):
  files: tuple[str, ...] = ()  # names of corpora/<name>.jsonl.xz


class JaxsslCorpus(tfds.core.GeneratorBasedBuilder):
  """English or Chinese documents shipped with jaxssl; see corpora/PROVENANCE.md for licences.

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
      # One file alone: small corpora for quick runs and tests.
      *(CorpusConfig(name=file, description=f"{file}.jsonl.xz alone.", files=(file,))
        for file in _ENGLISH_FILES + _CHINESE_FILES),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "en"

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    # TFDS defaults to tfrecord, which needs TensorFlow to write and cannot be read randomly.
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {key: tfds.features.Text() for key in _FEATURES}
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager  # the documents ship with the package
    splits = {"train": [], "validation": []}
    for name in self.builder_config.files:
      documents = _read_documents(_CORPORA_DIR / f"{name}.jsonl.xz")
      validation_ids = _validation_ids([document["id"] for document in documents])
      for document in documents:
        splits["validation" if document["id"] in validation_ids else "train"].append(document)
    return {split: self._generate_examples(documents) for split, documents in splits.items()}

  def _generate_examples(self, documents):
    for document in documents:
      yield document["id"], {key: document[key] for key in _FEATURES}


def _read_documents(path: pathlib.Path) -> list[dict[str, str]]:
  with lzma.open(path, "rt", encoding="utf-8") as lines:
    return [json.loads(line) for line in lines]


def _validation_ids(document_ids: list[str]) -> set[str]:
  """The ~2% of ids (at least one) with the smallest hashes: stable across runs and machines."""
  num_validation = max(1, round(_VALIDATION_FRACTION * len(document_ids)))
  by_hash = sorted(document_ids, key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())
  return set(by_hash[:num_validation])


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
        "'jaxssl_corpus/<corpus file>' or a TFDS catalog name such as 'wikipedia/20230601.en'"
    ) from error


def load_texts(name: str, split: str, data_dir: str | None, text_key: str = "text") -> list[str]:
  """Texts of a split's documents, preparing the dataset in ``data_dir`` first if needed.

  ``name`` is 'jaxssl_corpus/en', 'jaxssl_corpus/zh', 'jaxssl_corpus/<corpus file>' (e.g.
  'jaxssl_corpus/moby_dick') or any TFDS catalog name; ``split`` may carry a TFDS slice such as
  'train[:10%]'. Documents whose text is empty or whitespace are skipped.
  """
  builder = _builder(name, data_dir)
  if text_key not in builder.info.features:
    raise ValueError(f"text_key={text_key!r} is not a feature of {name}; "
                     f"use one of {sorted(builder.info.features)}")
  builder.download_and_prepare()
  known_splits = builder.info.splits  # empty under tfds.testing.mock_data, which serves any split
  if known_splits and split.split("[")[0] not in known_splits:
    raise ValueError(f"unknown split {split!r} for {name}; use one of {sorted(known_splits)}")
  source = builder.as_data_source(split=split)
  texts = [_as_str(source[index][text_key]) for index in range(len(source))]
  texts = [text for text in texts if text.strip()]
  if not texts:
    raise ValueError(f"split {split!r} of {name} has no non-empty {text_key!r}; "
                     "choose another split or text_key")
  return texts


def _as_str(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
