"""Pretraining on your own text: local .txt/.jsonl/.parquet corpora and hf: names."""

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SMALL_CORPUS
from jaxssl import metrics
from jaxssl.core import pretrain
from jaxssl.data import corpora
from jaxssl.data import sources


def write_jsonl(path, records):
  path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
  """b.txt, a.txt (two paragraphs), an empty file, and a JSONL and a Parquet file in a subfolder."""
  root = tmp_path / "corpus"
  (root / "more").mkdir(parents=True)
  (root / "b.txt").write_text("Bee one.\nBee two.", encoding="utf-8")
  (root / "a.txt").write_text("Ay one.\n\n  \nAy two.", encoding="utf-8")
  (root / "empty.txt").write_text("", encoding="utf-8")
  (root / "notes.md").write_text("not a corpus file", encoding="utf-8")
  write_jsonl(root / "more" / "c.jsonl", [{"text": "Cee one.", "id": 1}, {"text": "Cee two."}])
  pq.write_table(pa.table({"text": ["Dee one.", None, "Dee two."]}), root / "more" / "d.parquet")
  return root


def test_a_folder_is_read_recursively_in_path_order_skipping_empty_documents(folder, capsys):
  texts = corpora.load_texts(str(folder), "train", None)
  assert texts == [
      "Ay one.\n\n  \nAy two.", "Bee one.\nBee two.", "Cee one.", "Cee two.", "Dee one.", "Dee two."
  ]
  assert "skipped 1 empty document(s) of 7" in capsys.readouterr().out  # empty.txt


def test_paragraph_documents_globs_and_text_key(folder, tmp_path):
  assert corpora.load_texts(
      f"{folder}/*.txt", "train", None,
      txt_documents="paragraph") == ["Ay one.", "Ay two.", "Bee one.\nBee two."]
  write_jsonl(tmp_path / "body.jsonl", [{"body": "One."}, {"body": "Two."}])
  assert corpora.load_texts(str(tmp_path / "body.jsonl"), "train", None, "body") == ["One.", "Two."]
  assert corpora.load_texts(f"{folder}/**/*.parquet", "train", None) == ["Dee one.", "Dee two."]
  assert corpora.load_texts(f"{folder}/**", "train", None) == corpora.load_texts(
      str(folder), "train", None)  # the folder and its files, each read once


def test_splits_slice_the_one_train_split(tmp_path):
  write_jsonl(tmp_path / "c.jsonl", [{"text": f"Document {i}."} for i in range(200)])
  name = str(tmp_path / "c.jsonl")
  held_out = corpora.load_texts(name, "train[:1%]", None)
  rest = corpora.load_texts(name, "train[1%:]", None)
  assert held_out == ["Document 0.", "Document 1."]
  assert held_out + rest == corpora.load_texts(name, "train", None)
  with pytest.raises(ValueError, match=r"one split, 'train'; hold part of it out with "):
    corpora.load_texts(name, "validation", None)


def test_tfds_names_are_not_taken_for_paths():
  for name in (SMALL_CORPUS, "glue/sst2", "wikipedia/20230601.en"):
    assert not sources.is_external(name)
  for name in ("hf:wikitext/wikitext-2-raw-v1", "./mine", "/data/*.txt", "notes.jsonl"):
    assert sources.is_external(name)


@pytest.mark.parametrize("write, name, message", [
    (lambda root: None, "*.txt", r"matches no \.txt, \.jsonl, \.parquet file"),
    (lambda root: (root / "x.txt").write_bytes(b"fine\nbad \xff byte\n"), "x.txt",
     r"x\.txt:2: byte 0xff is not UTF-8"),
    (lambda root: write_jsonl(root / "x.jsonl", [{
        "text": "a"
    }, {
        "body": "b"
    }]), "x.jsonl", r"x\.jsonl:2: no 'text' field \(has \['body'\]\); set --config.text_key"),
    (lambda root: (root / "x.jsonl").write_text('{"text": "a"}\n{"text": \n'), "x.jsonl",
     r"x\.jsonl:2: not JSON"),
    (lambda root: write_jsonl(root / "x.jsonl", [{
        "text": 3
    }]), "x.jsonl", r"x\.jsonl:1: 'text' is a int, not a string"),
    (lambda root: pq.write_table(pa.table({"body": ["a"]}), root / "x.parquet"), "x.parquet",
     r"x\.parquet: no column 'text' \(has \['body'\]\)"),
    (lambda root: (root / "x.parquet").write_text("not parquet"), "x.parquet",
     r"x\.parquet: not a readable Parquet file"),
])
def test_bad_files_are_named_with_their_line(tmp_path, write, name, message):
  write(tmp_path)
  with pytest.raises(ValueError, match=message):
    corpora.load_texts(str(tmp_path / name), "train", None)


def test_hf_names_without_the_datasets_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
  with pytest.raises(ValueError, match=r"needs the datasets package: pip install datasets"):
    corpora.load_texts("hf:wikitext/wikitext-2-raw-v1", "train", None)


def test_pretraining_on_a_folder_of_text_files(tiny_config, tfds_dir, tmp_path):
  root = tmp_path / "books"
  root.mkdir()
  chapters = corpora.load_texts(SMALL_CORPUS, "train[:40]", tfds_dir)
  for index, chapter in enumerate(chapters):
    (root / f"chapter{index:03d}.txt").write_text(chapter, encoding="utf-8")
  tiny_config.update(
      dataset=str(root),
      data_dir=None,
      train_split="train[5%:]",
      eval_split="train[:5%]",
      num_train_steps=10)
  workdir = str(tmp_path / "run")
  eval_metrics = pretrain.run(tiny_config, workdir)
  assert np.isfinite(eval_metrics["mlm_loss"])
  losses = [r["mlm_loss"] for r in metrics.read_metrics(workdir) if r["split"] == "train"]
  assert losses[-1] < losses[0]


def test_a_file_changed_between_two_reads_is_read_again(tmp_path):
  corpus = tmp_path / "c.jsonl"
  write_jsonl(corpus, [{"text": "Old."}])
  assert corpora.load_texts(str(corpus), "train", None) == ["Old."]
  write_jsonl(corpus, [{"text": "New, longer."}])
  assert corpora.load_texts(str(corpus), "train", None) == ["New, longer."]
