"""``jaxssl_corpus``: the English and Chinese documents shipped with jaxssl, for pretraining."""

import dataclasses

import tensorflow_datasets as tfds

from jaxssl.data.builders import shipped

_VALIDATION_FRACTION = 0.02
_ENGLISH_FILES = ("moby_dick", "sotu", "web_bible")
_CHINESE_FILES = ("libreoffice_help_zh_cn", "libreoffice_help_zh_tw", "peoples_daily_199801")
_FEATURES = ("id", "source", "title", "text")  # all text, as in the corpus files


@dataclasses.dataclass(eq=False)
class CorpusConfig(tfds.core.BuilderConfig):
  files: tuple[str, ...] = ()  # names of corpora/<name>.jsonl.xz


class JaxsslCorpus(shipped.ArrayRecordBuilder):
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
      documents = shipped.read_records(shipped.CORPORA_DIR / f"{name}.jsonl.xz")
      for split, split_documents in shipped.split_by_hash(documents, {
          "validation": _VALIDATION_FRACTION
      }).items():
        splits[split] += split_documents
    return {split: self._generate_examples(documents) for split, documents in splits.items()}

  def _generate_examples(self, documents):
    for document in documents:
      yield document["id"], {key: document[key] for key in _FEATURES}
