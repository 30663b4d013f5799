"""Sequences that are not language: the shipped DNA and protein sets, symbols as words, and the
pretrained-vs-scratch-vs-classical experiment (jaxssl.analysis.beyond_language)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl.analysis import beyond_language
from jaxssl.core.tasks import catalog
from jaxssl.data import corpora
from jaxssl.data.builders import sequences
from jaxssl.data import sequence_words

COUNTS = {
    "splice": 3000,
    "promoters": 106,
    "malonylation": 10576
}  # tasks/PROVENANCE.md; essen ships nothing


@pytest.mark.parametrize("task", sorted(COUNTS))
def test_shipped_sets_have_their_counts_and_no_sequence_in_two_splits(task, tfds_dir):
  dataset = catalog.SEQUENCE_TASKS[task].dataset
  by_split = {
      split: [e["sequence"] for e in corpora.load_examples(dataset, split, tfds_dir)]
      for split in ("train", "validation", "test")
  }
  everything = [sequence for sequences in by_split.values() for sequence in sequences]
  assert len(everything) == COUNTS[task] == len(set(everything))
  alphabet = set(sequence_words.ALPHABETS[catalog.SEQUENCE_TASKS[task].alphabet])
  assert set("".join(everything)) <= alphabet
  assert all(by_split.values())


def test_melodies_are_interval_letters_read_from_music21(monkeypatch):
  pytest.importorskip("music21")
  assert sequences.intervals([60, 62, 62, 59, 84, 40]) == "omjya"  # +2, 0, -3, clipped +-12
  records = sequences.essen_records((("china", ("testd",)), ("germany", ("erk5",))))
  assert [r["label"] for r in records].count("china") == 8  # testd's 8 tunes
  assert [r["label"] for r in records].count("germany") == 27  # erk5's 27
  assert len({record["sequence"] for record in records}) == len(records)
  assert all(
      len(r["sequence"]) >= 8 and set(r["sequence"]) <= set(sequence_words.ALPHABETS["intervals"])
      for r in records)
  # A melody under two labels is neither's.
  assert not sequences.essen_records((("china", ("testd",)), ("germany", ("testd",))))
  monkeypatch.setitem(sys.modules, "music21", None)  # as if not installed
  with pytest.raises(ValueError, match="pip install music21"):
    sequences.essen_records((("china", ("testd",)),))


def test_mappings_write_symbols_as_words():
  assert sequence_words.to_words("ATCG", "dna", "words") == "we you he she"  # Kao & Lee's
  assert sequence_words.to_words("AC-", "protein", "chars") == "A C -"
  random0 = sequence_words.vocabulary("protein", "random:0")
  assert list(random0) == list(sequence_words.ALPHABETS["protein"])
  assert len(set(random0.values())) == 21 and set(random0.values()) <= set(sequence_words.WORD_POOL)
  assert random0 == sequence_words.vocabulary("protein", "random:0")
  assert random0 != sequence_words.vocabulary("protein", "random:1")
  assert len(set(sequence_words.FIXED_WORDS["protein"].values())) == 21
  with pytest.raises(sequence_words.UnknownSymbol, match="outside the dna alphabet"):
    sequence_words.to_words("ACGN", "dna", "words")
  for bad in ("word", "random", "random:x", "chars:1"):
    with pytest.raises(ValueError, match=f"sequence_words={bad!r} is not a mapping"):
      sequence_words.check_mapping(bad)


def test_a_sequence_task_encodes_words_and_counts_unknown_symbols():
  tokenizer = pretrained.load("minilm").tokenizer
  task = catalog.SEQUENCE_TASKS["splice"]
  examples = [{"sequence": "ACGT", "label": 0}, {"sequence": "ACNT", "label": 1}]
  rows = catalog.encode(task, tokenizer, examples, 16, num_labels=3)
  assert rows.skipped == {"symbols outside the dna alphabet": 1}
  expected = [tokenizer.cls_id, *tokenizer.encode("we he she you"), tokenizer.sep_id]
  assert rows.arrays["input_ids"][0, :len(expected)].tolist() == expected
  chars = catalog.encode(task, tokenizer, examples[:1], 16, num_labels=3, sequence_words="chars")
  assert chars.arrays["input_ids"][0, 1:5].tolist() == tokenizer.encode("a c g t")


@pytest.mark.slow
def test_a_bad_mapping_is_one_line_before_anything_is_written(tmp_path):
  workdir = tmp_path / "splice"
  process = subprocess.run([
      sys.executable, "-m", "jaxssl.main", "--config=configs/bert_finetune.py:task=splice",
      f"--workdir={workdir}", "--config.sequence_words=letters"
  ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=300)
  assert process.returncode == 2
  assert process.stderr.strip().splitlines()[-1].startswith(
      "error: sequence_words='letters' is not a mapping")
  assert "Traceback" not in process.stderr and not workdir.exists()


@pytest.mark.slow
def test_table_numbers_come_from_the_runs_and_baselines(tfds_dir, tmp_path, monkeypatch):
  monkeypatch.setitem(beyond_language.BUDGETS, "promoters",
                      dict(num_train_steps=2, warmup_steps=1, log_every=1, batch_size=8))
  workdir = str(tmp_path / "beyond")
  results = beyond_language.run(workdir, ["promoters"], ["words"], seeds=2, data_dir=tfds_dir)
  for init in beyond_language.INITS:
    for seed, directory in enumerate(("promoters", "promoters.seed1")):
      run_dir = os.path.join(workdir, "words", init, directory)
      record = [r for r in metrics_lib.read_metrics(run_dir) if r["split"] == "eval"][-1]
      assert record["step"] == 2
      assert results["fine_tuned"]["words"][init]["promoters"][seed]["accuracy"] == record[
          "accuracy"]
      with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
      assert (config["sequence_words"], config["seed"], config["init_from"]) == ("words", seed,
                                                                                 init)
  # The majority baseline is the training split's most frequent class on the dev labels.
  train = corpora.load_examples("jaxssl_sequences/promoters", "train", tfds_dir)
  dev = corpora.load_examples("jaxssl_sequences/promoters", "validation", tfds_dir)
  majority = np.bincount([e["label"] for e in train]).argmax()
  assert results["classical"]["promoters"]["majority class"]["accuracy"] == pytest.approx(
      np.mean([e["label"] == majority for e in dev]))
  # Position one-hot features: one 1 per symbol, at its position's block.
  features = beyond_language.one_hot_positions(["AC", "G"], "ACGT", 2)
  assert features.tolist() == [[1, 0, 0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]]
  markdown = beyond_language.table(results)
  scores = [run["accuracy"] for run in results["fine_tuned"]["words"]["minilm"]["promoters"]]
  assert f"{np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f}" in markdown
  beyond_language.plot(results, str(tmp_path / "beyond.png"))
  assert (tmp_path / "beyond.png").read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="--tasks has 'sentiment'; use sequence tasks"):
    beyond_language.run(workdir, ["sentiment"], ["words"], seeds=1, data_dir=tfds_dir)


def test_table_of_dna_and_protein_tasks_has_one_column_per_baseline():
  # The baselines of a DNA and a protein task (different k-mer lengths) share their names.
  dna = (["ACGTAC", "TTGACA", "ACGTTT", "GGGACA"], np.array([0, 1, 0, 1]))
  protein = (["MKV-A", "KLLWY", "MKVAA", "KLWWY"], np.array([0, 1, 0, 1]))
  classical = {
      "splice":
          beyond_language.baseline_scores(dna, dna, "dna", ("accuracy",)),
      "malonylation":
          beyond_language.baseline_scores(protein, protein, "protein",
                                          catalog.SEQUENCE_TASKS["malonylation"].metrics),
  }
  assert list(classical["splice"]) == list(classical["malonylation"])
  assert classical["splice"]["one-hot per position + logistic regression"]["accuracy"] == 1.0
  runs = lambda task: [{m: 0.6 for m in catalog.SEQUENCE_TASKS[task].metrics}] * 2
  results = {
      "tasks": list(classical),
      "classical": classical,
      "fine_tuned": {
          "words": {
              init: {
                  t: runs(t) for t in classical
              } for init in beyond_language.INITS
          }
      },
  }
  lines = beyond_language.table(results).splitlines()
  assert len(lines) == 2 + 1 + 3  # splice: accuracy; malonylation: accuracy, f1, Matthews
  assert lines[-2].startswith("| malonylation | f1 | ") and lines[-2].endswith(
      " | 0.6000 ± 0.0000 | 0.6000 ± 0.0000 |")
