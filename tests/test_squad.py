"""SQuAD-format reading, the jaxssl_qa datasets, and SQuAD v1.1's exact match and F1."""

import json
import logging

import pytest
import tensorflow_datasets as tfds

from jaxssl.core.tasks import qa_metrics
from jaxssl.data import corpora
from jaxssl.data.builders import squad

# pylint: disable=protected-access

FIXTURE = squad._SQUAD_FIXTURE
CLOZE_SPLIT_SIZES = {"train": 6859, "validation": 979, "test": 750}  # as tasks/PROVENANCE.md says


def _write_squad(path, qas, context="Moses went up to Sinai."):
  path.write_text(
      json.dumps({"data": [{
          "title": "T",
          "paragraphs": [{
              "context": context,
              "qas": qas
          }]
      }]}))
  return path


def _assert_answers_at_offsets(example):
  answers = example["answers"]
  assert answers["text"] and len(answers["text"]) == len(answers["answer_start"]), example["id"]
  for text, start in zip(answers["text"], answers["answer_start"]):
    assert isinstance(text, str) and isinstance(start, int), example["id"]
    assert example["context"][start:start + len(text)] == text, example["id"]


def test_fixture_reads_every_question():
  examples, skipped = squad.read_squad_json(FIXTURE)
  assert len(examples) == 5 and skipped == 0
  first = examples[0]
  assert first["id"] == "5733be284776f41900661182"
  assert first["title"] == "University_of_Notre_Dame"
  assert first["answers"] == {"text": ["Saint Bernadette Soubirous"], "answer_start": [515]}
  assert len(examples[1]["answers"]["text"]) == 3  # all of a question's answers are kept
  for example in examples:
    _assert_answers_at_offsets(example)


def test_answers_off_their_offset_are_dropped_and_counted(tmp_path, monkeypatch, caplog):
  path = _write_squad(tmp_path / "bad.json", [
      {
          "id": "kept",
          "question": "Who?",
          "answers": [{
              "text": "Moses",
              "answer_start": 0
          }, {
              "text": "Moses",
              "answer_start": 3
          }]
      },
      {
          "id": "bad_offset",
          "question": "Where?",
          "answers": [{
              "text": "Sinai",
              "answer_start": 2
          }]
      },
      {
          "id": "empty",
          "question": "What?",
          "answers": [{
              "text": "",
              "answer_start": 0
          }]
      },
  ])
  examples, skipped = squad.read_squad_json(path)
  assert skipped == 2
  assert [example["id"] for example in examples] == ["kept"]
  assert examples[0]["answers"] == {"text": ["Moses"], "answer_start": [0]}
  monkeypatch.setattr(squad, "_SQUAD_FIXTURE", path)
  with caplog.at_level(logging.WARNING):
    splits = squad._squad_fixture_splits()
  assert len(splits["train"]) == 1
  assert "skipped 2 questions" in caplog.text


def test_missing_key_and_bad_json_name_the_file(tmp_path):
  path = tmp_path / "no_context.json"
  path.write_text(json.dumps({"version": "1.1", "data": [{"paragraphs": [{"qas": []}]}]}))
  with pytest.raises(ValueError, match=r"no_context\.json lacks the key 'context'"):
    squad.read_squad_json(path)
  path = tmp_path / "truncated.json"
  path.write_text('{"data": [')
  with pytest.raises(ValueError, match=r"truncated\.json is not JSON"):
    squad.read_squad_json(path)


def test_squad_fixture_loads_through_corpora(tfds_dir):
  for split in ("train", "validation"):
    examples = corpora.load_examples("jaxssl_qa/squad_fixture", split, tfds_dir)
    assert sorted(example["id"] for example in examples) == sorted(
        example["id"] for example in squad.read_squad_json(FIXTURE)[0])
    for example in examples:
      assert all(isinstance(example[key], str) for key in ("id", "title", "context", "question"))
      _assert_answers_at_offsets(example)


def test_bible_cloze_questions_and_splits(tfds_dir):
  splits = {
      split: corpora.load_examples("jaxssl_qa/bible_cloze", split, tfds_dir)
      for split in CLOZE_SPLIT_SIZES
  }
  assert {split: len(examples) for split, examples in splits.items()} == CLOZE_SPLIT_SIZES
  for examples in splits.values():
    for example in examples:
      _assert_answers_at_offsets(example)
      (answer,) = example["answers"]["text"]
      assert example["question"].count(squad.BLANK) == 1, example["id"]
      assert answer not in squad._WORD.findall(example["question"]), example["id"]
      assert example["id"].rsplit(".", 1)[0] == example["title"]
  chapters = {
      split: {example["title"] for example in examples} for split, examples in splits.items()
  }
  assert not chapters["train"] & chapters["validation"]
  assert not chapters["train"] & chapters["test"]
  assert not chapters["validation"] & chapters["test"]
  # Most contexts are longer than a 128-token window, so doc_stride windows are exercised.
  train = splits["train"]
  assert sum(len(example["context"].split()) > 128 for example in train) > len(train) / 2
  havilah = next(example for example in train if example["id"] == "Gen.2.11")
  assert havilah["question"] == ("The name of the first is Pison: that is it which compasseth the "
                                 "whole land of _____, where there is gold;")
  assert havilah["answers"]["text"] == ["Havilah"]


def test_catalog_squad_goes_through_the_same_loader(tmp_path):
  # pylint: disable-next=import-outside-toplevel,unused-import
  import tensorflow_datasets.question_answering
  with tfds.testing.mock_data(num_examples=4):  # random text and offsets, offline
    examples = corpora.load_examples("squad/v1.1", "train", str(tmp_path / "tfds"))
  assert len(examples) == 4
  for example in examples:
    assert set(example) == {"id", "title", "context", "question", "answers"}
    assert all(isinstance(example[key], str) for key in ("id", "title", "context", "question"))
    answers = example["answers"]
    assert isinstance(answers["text"], list) and isinstance(answers["answer_start"], list)
    assert all(isinstance(text, str) for text in answers["text"])
    assert all(isinstance(start, int) for start in answers["answer_start"])


def test_normalize_answer():
  assert qa_metrics.normalize_answer("The  Cat!") == "cat"
  assert qa_metrics.normalize_answer("An apple, a day; theory") == "apple day theory"
  assert qa_metrics.normalize_answer("  Saint-Bernadette's\t(1858) ") == "saintbernadettes 1858"


def test_exact_match_and_f1():
  assert qa_metrics.exact_match("the Cat.", ["a dog", "cat"]) == 1.0
  assert qa_metrics.exact_match("cat sat", ["cat"]) == 0.0
  # prediction {cat, sat}, truth {cat, sat, down}: precision 1, recall 2/3, F1 0.8.
  assert qa_metrics.f1("The cat sat", ["a cat sat down"]) == pytest.approx(0.8)
  # Against 'red sky' precision = recall = 1/2; against 'sky' precision 1/2, recall 1: 2/3.
  assert qa_metrics.f1("blue sky", ["red sky", "sky"]) == pytest.approx(2 / 3)
  assert qa_metrics.f1("blue blue sky", ["blue sky sky"]) == pytest.approx(2 / 3)
  assert qa_metrics.f1("the", ["a"]) == 0.0  # nothing left after normalizing


def test_squad_scores():
  scores = qa_metrics.squad_scores(["Cat", "blue sky"], [["the cat"], ["red sky", "sky"]])
  assert scores["exact_match"] == pytest.approx(0.5)
  assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)
  with pytest.raises(ValueError, match="2 predictions for 1 questions"):
    qa_metrics.squad_scores(["a", "b"], [["a"]])
  with pytest.raises(ValueError, match="question 1 has no reference answer"):
    qa_metrics.squad_scores(["a", "b"], [["a"], []])
