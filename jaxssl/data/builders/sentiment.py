"""``jaxssl_sentiment``: English sentences with human sentiment ratings (VADER), shipped with
jaxssl."""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxssl.data.builders import shipped

# VADER's sentences (tasks/vader_<domain>.jsonl.xz) carry the mean of several human ratings on
# -4..+4. A mean within (-1, 1) means the raters found the sentence neutral or disagreed on it:
# too ambiguous for a positive/negative label, so such sentences are left out.
MIN_ABS_RATING = 1.0
_SENTIMENT_HELD_OUT = {"test": 0.1, "validation": 0.1}  # the rest is train
_SENTIMENT_DOMAINS = {  # config name: (sentences labelled, sentences left out as ambiguous)
    "movie_reviews": (9173, 1432),
    "tweets": (2667, 1533),
    "nyt_editorials": (1554, 3636),
}


@dataclasses.dataclass(eq=False)
class SentimentConfig(tfds.core.BuilderConfig):
  file: str = ""  # name of tasks/<file>.jsonl.xz


class JaxsslSentiment(shipped.ArrayRecordBuilder):
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
        "label": tfds.features.ClassLabel(names=shipped.SENTIMENT_LABELS),
    })
    return self.dataset_info_from_configs(features=features, supervised_keys=("text", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # the sentences ship with the package
    sentences = shipped.read_records(shipped.TASKS_DIR / f"{self.builder_config.file}.jsonl.xz")
    labelled = [s for s in sentences if abs(s["rating"]) >= MIN_ABS_RATING]
    return {
        split: self._generate_examples(split_sentences)
        for split, split_sentences in shipped.split_by_hash(labelled, _SENTIMENT_HELD_OUT).items()
    }

  def _generate_examples(self, sentences):
    for sentence in sentences:
      yield sentence["id"], {
          "id": sentence["id"],
          "text": sentence["text"],
          "rating": sentence["rating"],
          "label": int(sentence["rating"] > 0)
      }
