"""Zero-shot cross-lingual transfer (jaxssl.analysis.transfer) on a tiny encoder: every number in
the table comes from the fine-tuning runs, and bad input is refused before anything is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from conftest import ROOT
from conftest import SMALL_CORPUS
from jaxssl import metrics as metrics_lib
from jaxssl import predict
from jaxssl.analysis import transfer
from jaxssl.data import corpora
from jaxssl.core import finetune

EN_DATASET = "jaxssl_sentiment/movie_reviews"
TINY_BUDGET = dict(
    train_split="train[:64]",
    eval_split="validation[:40]",
    num_train_steps=3,
    batch_size=8,
    max_seq_length=32,
    warmup_steps=1,
    log_every=1)


def last_eval(run_dir):
  return [r for r in metrics_lib.read_metrics(run_dir) if r["split"] == "eval"][-1]


@pytest.mark.slow
def test_table_numbers_come_from_the_runs(tiny_encoder, tfds_dir, tmp_path):
  workdir = str(tmp_path / "transfer")
  results = transfer.run_transfer(
      workdir, [tiny_encoder],
      EN_DATASET,
      tfds_dir,
      TINY_BUDGET, {"moby_dick": SMALL_CORPUS},
      seeds=2,
      en_examples=[12])
  name = os.path.basename(tiny_encoder)
  assert list(results["models"]) == [name, "scratch"]
  assert all(len(seeds) == 2 for model in results["models"].values() for seeds in model.values())
  # Read back, not run again; without the scratch runs when asked.
  again = transfer.run_transfer(
      workdir, [tiny_encoder],
      EN_DATASET,
      tfds_dir,
      TINY_BUDGET, {"moby_dick": SMALL_CORPUS},
      seeds=2,
      en_examples=[12],
      scratch=False)
  assert list(again["models"]) == [name] and again["models"][name] == results["models"][name]

  # Zero-shot: the English model's own predictions on the Chinese dev slice, scored by hand.
  dev = corpora.load_examples(transfer.ZH_DATASET, "validation[:40]", tfds_dir)
  zh_names = corpora.label_names(transfer.ZH_DATASET, tfds_dir)
  predictor = predict.Predictor(os.path.join(workdir, name, "sentiment_en"))
  predicted = [p["label"] for p in predictor.predict([{"text": e["text"]} for e in dev])]
  truth = [zh_names[e["label"]] for e in dev]
  zero_shot = results["models"][name]["sentiment_en/zh"][0]
  assert zero_shot["accuracy"] == pytest.approx(np.mean(np.array(predicted) == np.array(truth)))
  assert zero_shot["f1"] == pytest.approx(
      sk_metrics.f1_score(truth, predicted, pos_label="positive"))
  # In-language numbers are the runs' final dev evaluations, seed 1's in "<run>.seed1".
  for model in (name, "scratch"):
    for run, setting in (("sentiment_en", "sentiment_en/en"), ("sentiment_zh", "sentiment_zh/zh")):
      for seed, directory in enumerate((run, run + ".seed1")):
        record = last_eval(os.path.join(workdir, model, directory))
        assert record["step"] == 3
        assert results["models"][model][setting][seed] == {m: record[m] for m in transfer.METRICS}
        assert read_config(os.path.join(workdir, model, directory))["seed"] == seed
  # The curve's point: the first 12 English sentences, 10 passes of batches of 8 (15 steps)
  # capped at the budget's 3 steps; its zero-shot number is that run's own evaluation on Chinese.
  point = results["curve"]["points"][12]
  for seed, directory in enumerate(("sentiment_en.n12", "sentiment_en.n12.seed1")):
    config = read_config(os.path.join(workdir, name, directory))
    assert (config["train_split"], config["num_train_steps"], config["seed"]) == ("train[:12]", 3,
                                                                                  seed)
    assert point[seed]["zh"] == predict.Predictor(os.path.join(workdir, name, directory)).evaluate(
        transfer.ZH_DATASET, "validation[:40]", tfds_dir)
  assert transfer.curve_budget({**TINY_BUDGET, "num_train_steps": 9}, 4, 0)["num_train_steps"] == 5

  # The scratch encoder has the pretrained one's architecture and tokenizer, not its weights.
  with open(
      os.path.join(workdir, name, "sentiment_en", "model_config.json"), encoding="utf-8") as f:
    pretrained_shape = json.load(f)
  with open(
      os.path.join(workdir, "scratch", "sentiment_en", "model_config.json"), encoding="utf-8") as f:
    assert json.load(f) == pretrained_shape
  with open(os.path.join(tiny_encoder, "tokenizer.model"), "rb") as original, open(
      os.path.join(workdir, "scratch", "sentiment_zh", "tokenizer.model"), "rb") as copied:
    assert original.read() == copied.read()
  config = transfer.suite.task_config("sentiment", tiny_encoder)
  pretrained_embedding = token_embedding(finetune.load_encoder(config)[1])
  config.init_from = f"scratch:{tiny_encoder}"
  scratch_embedding = token_embedding(finetune.load_encoder(config)[1])
  assert pretrained_embedding.shape == scratch_embedding.shape
  assert not np.allclose(pretrained_embedding, scratch_embedding, atol=1e-3)

  # Majority baselines: the training split's most frequent label, on the Chinese dev labels.
  zh_train = [
      e["label"] for e in corpora.load_examples(transfer.ZH_DATASET, "train[:64]", tfds_dir)
  ]
  majority = np.bincount(zh_train).argmax()
  baseline = results["baselines"]["majority class of the Chinese training split"]
  assert baseline["accuracy"] == pytest.approx(
      np.mean(np.array([e["label"] for e in dev]) == majority))
  assert baseline["label"] == zh_names[majority]

  # The MLM accuracy on a corpus's validation documents is what the pretraining run's own
  # evaluation measured there (tiny_encoder was pretrained on SMALL_CORPUS).
  pretraining = results["pretraining"][name]
  assert pretraining["mlm_accuracy_by_language"]["moby_dick"] == pytest.approx(
      last_eval(tiny_encoder)["mlm_accuracy"], abs=1e-6)
  assert pretraining["mlm_accuracy"] == last_eval(tiny_encoder)["mlm_accuracy"]

  markdown = transfer.tables(results)
  accuracies = [seed["accuracy"] for seed in results["models"][name]["sentiment_en/zh"]]
  assert f"| {name} | {EN_DATASET} (English) | jaxssl_sentiment_zh validation[:40] (zero-shot) | " \
      f"{np.mean(accuracies):.4f} ± {np.std(accuracies, ddof=1):.4f} |" in markdown
  curve_accuracies = [seed["zh"]["accuracy"] for seed in point]
  assert "| 12 | 3 | " in markdown and f"{np.mean(curve_accuracies):.4f} ± " in markdown
  assert "| 64 | 3 | " in markdown  # the full training split (train[:64]) is the last point
  assert f"| {name} | {SMALL_CORPUS} | train | 2 | " in markdown
  transfer.plot(results, str(tmp_path / "transfer.png"))
  assert (tmp_path / "transfer.png").read_bytes()[:4] == b"\x89PNG"
  transfer.plot_curve(results, str(tmp_path / "curve.png"))
  assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def read_config(directory):
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    return json.load(f)


def token_embedding(encoder_params):
  return np.asarray(encoder_params["token_embed"]["embedding"].get_value())


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "jaxssl.analysis.transfer", *args],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        timeout=300)


@pytest.mark.slow
def test_cli_refuses_bad_input(tmp_path):
  not_bert = tmp_path / "gpt_run"
  not_bert.mkdir()
  (not_bert / "config.json").write_text(json.dumps({"objective": "gpt"}), encoding="utf-8")
  no_checkpoint = tmp_path / "bert_run"
  no_checkpoint.mkdir()
  (no_checkpoint / "config.json").write_text(json.dumps({"objective": "bert"}), encoding="utf-8")
  cases = [
      ([f"--pretrained={tmp_path / 'missing'}"], "holds no run (no config.json)"),
      ([f"--pretrained={not_bert}"], "holds a 'gpt' run, not BERT pretraining"),
      (["--pretrained=e5", "--seeds=0"], "seeds=0 is out of range"),
      (["--pretrained=minilm", "--en_examples=100,3k"], "--en_examples='3k': give numbers"),
      (["--pretrained=minilm", "--en_examples=0"], "en_examples has 0; give numbers"),
      (["--pretrained=minilm", f"--scratch_of={not_bert}"], "holds a 'gpt' run, not BERT"),
  ]
  for arguments, message in cases:
    process = run_cli(*arguments, f"--workdir={tmp_path / 'out'}")
    assert process.returncode == 2, process.stderr
    last_line = process.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line, process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "out").exists()
  with pytest.raises(ValueError, match="has no checkpoint yet"):
    transfer.check_pretrained([str(no_checkpoint)])
  assert sorted(os.listdir(no_checkpoint)) == ["config.json"]
  # Published encoders are taken by name; a published decoder is refused.
  assert transfer.check_pretrained(["e5", "minilm"]) == {"e5": "e5", "minilm": "minilm"}
  with pytest.raises(ValueError, match="is a decoder"):
    transfer.check_pretrained(["smollm2"])
