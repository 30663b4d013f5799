"""Paraphrase pairs from the verse-aligned King James and World English Bibles (TFDS
``jaxssl_paraphrase``).

Features as in GLUE's MRPC: ``sentence1`` (a KJV verse), ``sentence2`` (a WEB verse), ``label``
(not_paraphrase, paraphrase), plus ``pair_kind``, how the pair was made, and ``id``, the refs of
the two verses (``Gen.1.1/Gen.1.3``). See ``make_pairs`` for how negatives are chosen.
"""

import dataclasses
import difflib
import hashlib
import re

import tensorflow_datasets as tfds

from jaxssl.data.builders import shipped

LABELS = ("not_paraphrase", "paraphrase")
ALIGNED, NEIGHBOUR, WORD_OVERLAP = "aligned", "neighbour", "word_overlap"  # the pair kinds
# A candidate negative whose words are this similar to the true partner's (difflib's ratio of
# the two word sequences) is a near copy of it; see make_pairs.
NEAR_COPY_RATIO = 0.8
_HELD_OUT = {"test": 0.1, "validation": 0.1}  # fractions of chapters; the rest is train
_WORD = re.compile(r"[^\W_]+")


def make_pairs(verses: list[dict]) -> dict[str, list[dict]]:
  """Each chapter's pairs: for every verse its aligned KJV/WEB pair and one hard negative.

  ``verses`` are records {"ref": "Book.chapter.verse", "kjv", "web"}. A negative pairs a KJV
  verse with the WEB text of another verse of the same chapter, so both sides share the
  chapter's topic, names and style, and each side's own text says nothing about the label. A
  hash of the ref picks one of two kinds for each verse, about half each:

  * ``neighbour``: the nearest verse (ties: the one closer in length to the true partner),
    which usually continues the same sentence or story;
  * ``word_overlap``: the verse whose WEB words overlap most with the KJV verse's (Dice
    coefficient of the lowercased word sets; ties: the nearest verse), which weakens word
    overlap as a cue (tasks/PROVENANCE.md measures how much).

  Skipped as candidates are the verse itself and near copies of its true partner: WEB texts
  whose word sequence matches the partner's with difflib ratio >= NEAR_COPY_RATIO (an exact
  repeat, or a refrain that differs only in names or numbers, as 'the seventh to Jesharelah, his
  sons and his brothers, twelve;'). Such a pair is nearly the positive pair again, so its label
  would hang on a word or two; the true KJV/WEB partners themselves often differ more than that.
  A verse with no candidate left gives no pairs, so the classes stay balanced. The choice
  depends only on the verses' text and refs, not on their order in the file.
  """
  chapters = {}  # "Book.chapter": {verse number: verse}
  for verse in verses:
    chapter, number = verse["ref"].rsplit(".", 1)
    chapters.setdefault(chapter, {})[int(number)] = verse
  return {
      chapter: _chapter_pairs([numbered[n] for n in sorted(numbered)])
      for chapter, numbered in chapters.items()
  }


def _chapter_pairs(verses: list[dict]) -> list[dict]:
  """The pairs of one chapter's verses, given in verse order."""
  web_words = [_words(verse["web"]) for verse in verses]
  web_word_sets = [set(words) for words in web_words]
  pairs = []
  for index, verse in enumerate(verses):
    kind = _negative_kind(verse["ref"])
    candidates = (
        other for other in _by_preference(kind, index, verses, web_word_sets)
        if not _is_near_copy(web_words[other], web_words[index]))
    negative = next(candidates, None)
    if negative is not None:
      pairs += [_pair(verse, verse, ALIGNED), _pair(verse, verses[negative], kind)]
  return pairs


def _by_preference(kind: str, index: int, verses: list[dict],
                   web_word_sets: list[set[str]]) -> list[int]:
  """The indices of the chapter's other verses, the best negative of ``kind`` first."""
  others = [other for other in range(len(verses)) if other != index]
  if kind == NEIGHBOUR:
    length = len(verses[index]["web"])
    return sorted(
        others,
        key=lambda other: (abs(other - index), abs(len(verses[other]["web"]) - length), other))
  kjv_word_set = set(_words(verses[index]["kjv"]))
  return sorted(
      others,
      key=lambda other: (-_dice(kjv_word_set, web_word_sets[other]), abs(other - index), other))


def _words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


def _negative_kind(ref: str) -> str:
  return (NEIGHBOUR, WORD_OVERLAP)[hashlib.sha256(ref.encode("utf-8")).digest()[0] % 2]


def _dice(words: set[str], other_words: set[str]) -> float:
  return 2 * len(words & other_words) / max(1, len(words) + len(other_words))


def _is_near_copy(words: list[str], partner_words: list[str]) -> bool:
  matcher = difflib.SequenceMatcher(None, words, partner_words, autojunk=False)
  # quick_ratio bounds ratio from above and is much cheaper.
  return matcher.quick_ratio() >= NEAR_COPY_RATIO and matcher.ratio() >= NEAR_COPY_RATIO


def _pair(kjv_verse: dict, web_verse: dict, kind: str) -> dict:
  return {
      "id": f"{kjv_verse['ref']}/{web_verse['ref']}",
      "sentence1": kjv_verse["kjv"],
      "sentence2": web_verse["web"],
      "label": int(kind == ALIGNED),
      "pair_kind": kind,
  }


@dataclasses.dataclass(eq=False)
class ParaphraseConfig(tfds.core.BuilderConfig):
  file: str = ""  # name of tasks/<file>.jsonl.xz


class JaxsslParaphrase(shipped.ArrayRecordBuilder):
  """KJV/WEB verse pairs labelled paraphrase (aligned verses) or not (hard negatives).

  ``kjv_web``: 31,090 aligned verses in 1,189 chapters give 62,180 pairs, half of them
  positive; whole chapters go to one split, 10% each, chosen by a hash of the chapter
  (``Gen.1``), to ``test`` and ``validation`` and the rest to ``train``:

  ==========  ========  ======  =======  =========  ============
  split       chapters  pairs   aligned  neighbour  word_overlap
  ==========  ========  ======  =======  =========  ============
  train       951       49,604  24,802   12,311     12,491
  validation  119       6,728   3,364    1,682      1,682
  test        119       5,848   2,924    1,509      1,415
  all         1,189     62,180  31,090   15,502     15,588
  ==========  ========  ======  =======  =========  ============

  See ``make_pairs`` for how the negatives are chosen, and tasks/PROVENANCE.md for licences and
  for how well shallow cues (length, word overlap) separate the classes.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ParaphraseConfig(
          name="kjv_web",
          description="King James Version vs World English Bible verses, with hard negatives.",
          file="kjv_web_verses")
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "kjv_web"

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "sentence1": tfds.features.Text(),
        "sentence2": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=LABELS),
        "pair_kind": tfds.features.Text(),
    })
    return self.dataset_info_from_configs(features=features)

  def _split_generators(self, dl_manager):
    del dl_manager  # the verses ship with the package
    verses = shipped.read_records(shipped.TASKS_DIR / f"{self.builder_config.file}.jsonl.xz")
    chapters = [{"id": chapter, "pairs": pairs} for chapter, pairs in make_pairs(verses).items()]
    return {
        split: self._generate_examples(split_chapters)
        for split, split_chapters in shipped.split_by_hash(chapters, _HELD_OUT).items()
    }

  def _generate_examples(self, chapters):
    for chapter in chapters:
      for pair in chapter["pairs"]:
        yield pair["id"], pair
