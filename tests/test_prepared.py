"""Corpus splits tokenized once into array_record shards and reused by later runs."""

import json
import os

import pytest

from jaxssl.core import pretrain
from jaxssl.data import prepared
from jaxssl.data import pretraining
from jaxssl.data import tokenizer as tokenizer_lib

TEXTS = ["One sentence here. And a second one!", "  ", "Another document. Short."]


@pytest.fixture
def tokenizer(tokenizer_path):
  return tokenizer_lib.Tokenizer.load(tokenizer_path)


def identity(**fields):
  return {"dataset": "test", "split": "train", "text_key": "text", **fields}


def test_records_round_trip():
  for document in ([[5, 6, 7], [8]], [[9]], [[10, 11], [], [12]], []):
    decoded = prepared.decode_document(prepared.encode_document(document))
    assert [sentence.tolist() for sentence in decoded] == document


def as_lists(corpus):
  return [[sentence.tolist() for sentence in document] for document in corpus]


def test_a_split_is_tokenized_once_then_read_back(tokenizer, tmp_path, capsys):
  calls = []

  def texts():
    calls.append(1)
    return TEXTS

  first = as_lists(prepared.documents(str(tmp_path), identity(), tokenizer, texts, "test train"))
  assert first == pretraining.tokenize_documents(tokenizer, TEXTS)
  assert "prepared 2 documents" in capsys.readouterr().out
  [key] = os.listdir(tmp_path)
  with open(tmp_path / key / prepared.INDEX_FILE, encoding="utf-8") as f:
    index = json.load(f)
  assert index["documents"] == 2 and index["sentences"] == 4
  assert index["tokens"] == sum(len(s) for document in first for s in document)
  corpus = prepared.PreparedCorpus(str(tmp_path / key))
  assert as_lists([corpus[1], corpus[-1]]) == [first[1], first[1]]
  with pytest.raises(IndexError):
    corpus[2]  # pylint: disable=pointless-statement
  ids = [token for document in first for sentence in document for token in sentence]
  counts = corpus.unigram_counts()
  assert counts.shape == (tokenizer.vocab_size,) and counts.sum() == len(ids)
  assert all(counts[token] == ids.count(token) for token in ids)

  def unread():
    raise AssertionError("texts read although the split was prepared")

  assert as_lists(prepared.documents(str(tmp_path), identity(), tokenizer, unread,
                                     "test train")) == first
  assert "reusing 2 documents" in capsys.readouterr().out
  assert calls == [1]
  # Another split, or another tokenizer, is another key.
  prepared.documents(str(tmp_path), identity(split="other"), tokenizer, texts, "test other")
  assert len(os.listdir(tmp_path)) == 2


def test_a_changed_file_or_tokenizer_is_prepared_again(tokenizer, tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("First version. Of the file.", encoding="utf-8")
  source = lambda: prepared.source_identity(str(corpus), "train", "text", "file", None)
  before = source()
  corpus.write_text("Second version, longer. Of the same file.", encoding="utf-8")
  assert source() != before
  root = str(tmp_path / "prepared")
  prepared.documents(root, before, tokenizer, lambda: TEXTS, "a")
  other_tokenizer = tmp_path / "other.model"
  other_tokenizer.write_bytes(open(tokenizer.model_path, "rb").read() + b"\0")
  key, _ = prepared._key(before, str(other_tokenizer))  # pylint: disable=protected-access
  assert key not in os.listdir(root)


def test_a_failed_prepare_leaves_nothing_to_reuse(tokenizer, tmp_path):

  def texts():
    raise ValueError("bad corpus")

  with pytest.raises(ValueError, match="bad corpus"):
    prepared.documents(str(tmp_path), identity(), tokenizer, texts, "test")
  assert os.listdir(tmp_path) == []


def test_a_second_run_reuses_the_first_runs_tokens(tiny_config, tmp_path, capsys):
  tiny_config.update(num_train_steps=2, prepared_dir=str(tmp_path / "prepared"))
  pretrain.run(tiny_config, str(tmp_path / "first"))
  assert capsys.readouterr().out.count(": prepared ") == 2  # the train and eval splits
  first_keys = sorted(os.listdir(tmp_path / "prepared"))
  pretrain.run(tiny_config, str(tmp_path / "second"))
  assert capsys.readouterr().out.count(": reusing ") == 2
  assert sorted(os.listdir(tmp_path / "prepared")) == first_keys
