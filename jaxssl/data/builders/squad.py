"""Extractive question answering as TFDS datasets with the features of TFDS's ``squad``.

``jaxssl_qa`` has the features of the catalog's ``squad/v1.1`` (``id``, ``title``, ``context``,
``question``, ``answers`` = {"text": [...], "answer_start": [...]}, character offsets into
``context``), so code written for one reads the other. Its configs:

* ``bible_cloze`` (default): cloze questions made from the shipped KJV/WEB aligned verses; see
  ``JaxsslQa`` for how, and tasks/PROVENANCE.md for counts and baselines.
* ``squad_fixture``: five SQuAD v1.1 dev questions (two paragraphs), the same in ``train`` and
  ``validation``: a format test, too small to learn or measure anything.
"""

import collections
from collections.abc import Callable
import dataclasses
import hashlib
import json
import os
import re

from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.question_answering import qa_utils

from jaxssl.data.builders import shipped

BLANK = "_____"  # stands in a cloze question for the words it asks for
_SQUAD_FIXTURE = shipped.TASKS_DIR / "squad_fixture.json"
_ALIGNED_VERSES = shipped.TASKS_DIR / "kjv_web_verses.jsonl.xz"
_CLOZE_HELD_OUT = {"test": 0.1, "validation": 0.1}  # fractions of chapters; the rest is train
_VERSES_PER_CONTEXT = 6  # on average; chapters are cut into contexts of 4 to 8 verses
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters: the unit that answers are chosen in
_NUMBER_WORDS = frozenset(
    ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
     "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
     "hundred thousand").split())
# 'one' is mostly a pronoun; 'hundred' and 'thousand' come with a count ('an hundred' in the KJV
# is 'one hundred' in the WEB), so alone they would be half an answer.
_ANSWER_NUMBER_WORDS = _NUMBER_WORDS - {"one", "hundred", "thousand"}


def read_squad_json(path: str | os.PathLike) -> tuple[list[dict], int]:
  """The questions of a SQuAD v1.1-format file as examples, and how many questions were skipped.

  One example per question, with the features of TFDS's ``squad``. An answer whose text is empty
  or is not at ``context[answer_start:]`` is dropped, since training on it would teach the wrong
  span; a question left with no answer is skipped and counted. As in TFDS, ``title`` may be
  missing (it is then ""); any other missing key is an error.
  """
  try:
    with open(path, encoding="utf-8") as file:
      squad = json.load(file)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not JSON ({error}); give a SQuAD v1.1-format file") from error
  examples, skipped = [], 0
  try:
    for article in squad["data"]:
      for paragraph in article["paragraphs"]:
        context = paragraph["context"]
        for qa in paragraph["qas"]:
          answers = [answer for answer in qa["answers"] if _is_at_offset(answer, context)]
          if not answers:
            skipped += 1
            continue
          examples.append({
              "id": qa["id"],
              "title": article.get("title", ""),
              "context": context,
              "question": qa["question"],
              "answers": {
                  "text": [answer["text"] for answer in answers],
                  "answer_start": [answer["answer_start"] for answer in answers],
              },
          })
  except KeyError as error:
    raise ValueError(f"{path} lacks the key {error.args[0]!r}; give a SQuAD v1.1-format file "
                     '({"data": [{"paragraphs": [{"context", "qas": [...]}]}]})') from error
  return examples, skipped


def _is_at_offset(answer: dict, context: str) -> bool:
  text, start = answer["text"], answer["answer_start"]
  return bool(text) and start >= 0 and context[start:start + len(text)] == text


def _proper_names(verses: list[dict]) -> set[str]:
  """Capitalised words whose lower-case form occurs nowhere in either translation: names such as
  'Moses' or 'Jerusalem', but not sentence-initial words such as 'And', 'Behold' or 'God'."""
  words = {
      word for verse in verses for text in (verse["kjv"], verse["web"])
      for word in _WORD.findall(text)
  }
  return {
      word for word in words if len(word) > 1 and word[0].isupper() and word.lower() not in words
  }


def _stands_alone(word: str, words: list[str]) -> bool:
  """Whether ``word`` (once in ``words``) has no number word beside it: 'seven' but not the
  'two' of 'twenty-two', which would be half an answer."""
  index = words.index(word)
  neighbours = words[max(0, index - 1):index] + words[index + 1:index + 2]
  return not any(neighbour.lower() in _NUMBER_WORDS for neighbour in neighbours)


def _answer_word(verse: dict, context: str, proper_names: set[str]) -> str | None:
  """The word a verse's cloze question asks for, or None if the verse has no fit word.

  A fit word is a proper name or a number word that occurs exactly once in the KJV verse and
  exactly once in the whole context (so in the WEB verse), so that the blank has a single answer
  span. Of several, a hash of the verse's reference picks one.
  """
  kjv_words = _WORD.findall(verse["kjv"])
  web_words = _WORD.findall(verse["web"])
  kjv_counts = collections.Counter(kjv_words)
  context_counts = collections.Counter(_WORD.findall(context))
  candidates = [
      word for word in dict.fromkeys(web_words)
      if kjv_counts[word] == 1 and context_counts[word] == 1 and
      (word in proper_names or (word in _ANSWER_NUMBER_WORDS and _stands_alone(word, kjv_words) and
                                _stands_alone(word, web_words)))
  ]
  if not candidates:
    return None
  choice = int(hashlib.sha256(verse["ref"].encode("utf-8")).hexdigest(), 16) % len(candidates)
  return candidates[choice]


def _word_span(word: str, text: str) -> tuple[int, int]:
  return next(match.span() for match in _WORD.finditer(text) if match.group() == word)


def _contexts(chapter: list[dict]) -> list[list[dict]]:
  """A chapter's verses cut into round(n / 6) runs of near-equal length, 4 to 8 verses each (a
  chapter of fewer than 4 verses is one run)."""
  count = max(1, round(len(chapter) / _VERSES_PER_CONTEXT))
  bounds = [len(chapter) * index // count for index in range(count + 1)]
  return [chapter[start:end] for start, end in zip(bounds, bounds[1:])]


def _cloze_examples(verses: list[dict]) -> list[dict]:
  """A cloze question for every verse that has a fit answer word, its context the WEB verses
  around it; ``title`` is the chapter, e.g. 'Gen.1'."""
  proper_names = _proper_names(verses)
  chapters = collections.defaultdict(list)
  for verse in verses:
    chapters[verse["ref"].rsplit(".", 1)[0]].append(verse)
  examples = []
  for title, chapter in chapters.items():
    for context_verses in _contexts(chapter):
      context = " ".join(verse["web"] for verse in context_verses)
      verse_start = 0
      for verse in context_verses:
        word = _answer_word(verse, context, proper_names)
        if word is not None:
          kjv_start, kjv_end = _word_span(word, verse["kjv"])
          examples.append({
              "id": verse["ref"],
              "title": title,
              "context": context,
              "question": verse["kjv"][:kjv_start] + BLANK + verse["kjv"][kjv_end:],
              "answers": {
                  "text": [word],
                  "answer_start": [verse_start + _word_span(word, verse["web"])[0]],
              },
          })
        verse_start += len(verse["web"]) + 1
  return examples


def _bible_cloze_splits() -> dict[str, list[dict]]:
  examples = _cloze_examples(shipped.read_records(_ALIGNED_VERSES))
  chapters = [{"id": title} for title in dict.fromkeys(example["title"] for example in examples)]
  chapters_by_split = shipped.split_by_hash(chapters, _CLOZE_HELD_OUT)
  split_of_chapter = {
      chapter["id"]: split for split, split_chapters in chapters_by_split.items()
      for chapter in split_chapters
  }
  splits = {split: [] for split in chapters_by_split}
  for example in examples:
    splits[split_of_chapter[example["title"]]].append(example)
  return splits


def _squad_fixture_splits() -> dict[str, list[dict]]:
  examples, skipped = read_squad_json(_SQUAD_FIXTURE)
  if skipped:
    logging.warning("%s: skipped %d questions with no answer at its offset", _SQUAD_FIXTURE,
                    skipped)
  return {"train": examples, "validation": examples}


@dataclasses.dataclass(eq=False)
class QaConfig(tfds.core.BuilderConfig):
  make_splits: Callable[[], dict[str, list[dict]]] | None = None  # the examples of each split


class JaxsslQa(shipped.ArrayRecordBuilder):
  """Extractive question answering with the features of TFDS's ``squad/v1.1``.

  ``bible_cloze``: each chapter of the aligned KJV/WEB verses (tasks/kjv_web_verses.jsonl.xz)
  is cut into runs of 4 to 8 consecutive verses (``_contexts``); a run's WEB verses, joined by
  spaces, are the context. Each verse of the run that has a fit answer word (a proper name such
  as 'Moses', or a number word such as 'seven' standing alone, found exactly once in the KJV
  verse and exactly once in the context) gives one question: the KJV wording of the verse with
  that word replaced by ``BLANK``; the answer is the word in the WEB verse, at its offset in the
  context. These are cloze questions made by rule, not questions people asked. The answer is a
  word both translations share while the rest of the verse is reworded, so it is found by
  matching the KJV wording to the WEB's; the wordings share many words, though, and a baseline
  that picks the name or number whose neighbouring words most overlap the question's gets about
  73% exact match (tasks/PROVENANCE.md). Ids are verse references and ``title`` the chapter;
  10% of the chapters each, chosen by a hash, form the test and validation splits, so no chapter
  or context is in two splits.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      QaConfig(
          name="bible_cloze",
          description=("KJV verses with a name or number blanked out, answered from 4-8 WEB "
                       "verses of the same chapter; split by chapter."),
          make_splits=_bible_cloze_splits),
      QaConfig(
          name="squad_fixture",
          description="5 SQuAD v1.1 dev questions, in train and validation: format tests only.",
          make_splits=_squad_fixture_splits),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "bible_cloze"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=qa_utils.squadlike_features())

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ship with the package
    return {
        split: self._generate_examples(examples)
        for split, examples in self.builder_config.make_splits().items()
    }

  def _generate_examples(self, examples):
    for example in examples:
      yield example["id"], example
