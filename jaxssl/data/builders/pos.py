"""Part-of-speech tagged English sentences (the Brown Corpus) as the TFDS dataset ``jaxssl_pos``.

Each sentence carries two tag sequences: ``brown_tags``, the corpus's own tags as written (471
distinct strings in the shipped file, with the compound markers -tl title, -hl headline, -nc
cited word, fw- foreign word, * negation, $ possessive and + contraction), and ``tags``, the 12
universal tags of Petrov, Das & McDonald (2012) that those map to.

The mapping is the published one (NLTK's ``universal_tagset/en-brown.map``, from the
universal-pos-tags project), shipped lowercased as tasks/brown_universal_tags.tsv. It lists
every one of the Brown Corpus's 472 tag strings, compounds included, so a tag is looked up as
it is and never reduced first. Its conventions, for reading the labels:

* -tl, -hl and -nc never change the class (``np-tl`` is NOUN, like ``np``); every fw- tag is X.
* A possessive keeps its base's class (``np$`` NOUN) except ``cd$`` (NOUN), ``pp$$`` (mine,
  PRON) and ``ap$``, ``rb$``, ``jj$-tl`` (PRT); ``pp$`` (my) and ``wp$`` (whose) are DET.
* Negated verbs (``md*``, ``bez*``) stay VERB; ``*`` itself (not, n't) is ADV.
* A + tag whose first part is a verb stays VERB (``md+ppss``, ``vb+ppo``, ``hv+to``); the
  other contractions with a verb (``ppss+md`` I'll, ``pps+bez`` it's, ``ex+bez`` there's,
  ``wrb+dod``) are PRT, as are ``to+vb``, ``rp+in`` and ``wrb+in``; the rest keep their first
  part's class (``jj+jj-nc`` ADJ, ``rb+cs`` ADV, ``in+ppo`` ADP, ``nn+in`` NOUN); ``do+ppss``,
  ``wdt+ber+pp`` and ``wdt+do+pps`` are X.
* Some plain tags map less obviously: ``pn`` (anyone, nothing) is NOUN; ``ex`` (existential
  there), ``to``, ``uh``, ``abl`` and ``abn`` are PRT; ``cs`` is ADP.
"""

import dataclasses
import functools

import tensorflow_datasets as tfds

from jaxssl.data.builders import shipped

# The universal tagset of Petrov, Das & McDonald (2012), "A Universal Part-of-Speech Tagset".
UNIVERSAL_TAGS = ("ADJ", "ADP", "ADV", "CONJ", "DET", "NOUN", "NUM", "PRT", "PRON", "VERB", ".",
                  "X")
_TAG_MAP_FILE = shipped.TASKS_DIR / "brown_universal_tags.tsv"
_HELD_OUT = {"test": 0.1, "validation": 0.1}  # fractions of text samples; the rest is train


@functools.cache
def brown_to_universal() -> dict[str, str]:
  """Every Brown tag string (lowercase, as in the corpus) to its universal tag."""
  with open(_TAG_MAP_FILE, encoding="utf-8") as lines:
    return dict(line.rstrip("\n").split("\t") for line in lines)


@dataclasses.dataclass(eq=False)
class PosConfig(tfds.core.BuilderConfig):
  file: str = ""  # name of tasks/<file>.jsonl.xz


class JaxsslPos(shipped.ArrayRecordBuilder):
  """Sentences of the Brown Corpus with their Brown and universal part-of-speech tags.

  ``brown``: 56,287 sentences from 491 of the corpus's 500 text samples (the 9 humour
  samples, category R, are withheld as a held-out evaluation set). Whole samples go to one
  split, 10% each, chosen by a hash of the sample id (``ca01`` ...), to ``test`` and
  ``validation`` and the rest to ``train``, so no text is shared between splits: 393/49/49
  samples, 44,876/5,506/5,905 sentences. ``id`` is the sample id and the sentence's index
  within it (``ca01-0``). ``brown_tags`` names all 472 Brown tag strings, also the one
  (``fw-uh-tl``) that occurs only in the withheld samples. See tasks/PROVENANCE.md for
  licences and baselines.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      PosConfig(
          name="brown",
          description="Brown Corpus (1961 American English), 56,287 sentences in 491 samples.",
          file="brown")
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "brown"

  def _info(self) -> tfds.core.DatasetInfo:
    brown_tag_names = tuple(brown_to_universal())  # in the map file's order, which is sorted
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "tokens": tfds.features.Sequence(tfds.features.Text()),
        "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=UNIVERSAL_TAGS)),
        "brown_tags": tfds.features.Sequence(tfds.features.ClassLabel(names=brown_tag_names)),
    })
    return self.dataset_info_from_configs(features=features, supervised_keys=("tokens", "tags"))

  def _split_generators(self, dl_manager):
    del dl_manager  # the sentences ship with the package
    sentences = shipped.read_records(shipped.TASKS_DIR / f"{self.builder_config.file}.jsonl.xz")
    sentences_by_sample = {}  # sample id: its sentences in text order
    for sentence in sentences:
      sentences_by_sample.setdefault(sentence["doc"], []).append(sentence)
    samples = [{
        "id": sample,
        "sentences": sample_sentences
    } for sample, sample_sentences in sentences_by_sample.items()]
    return {
        split: self._generate_examples(split_samples)
        for split, split_samples in shipped.split_by_hash(samples, _HELD_OUT).items()
    }

  def _generate_examples(self, samples):
    universal = brown_to_universal()
    for sample in samples:
      for index, sentence in enumerate(sample["sentences"]):
        sentence_id = f"{sample['id']}-{index}"
        yield sentence_id, {
            "id": sentence_id,
            "tokens": sentence["tokens"],
            "tags": [universal[tag] for tag in sentence["tags"]],
            "brown_tags": sentence["tags"],
        }
