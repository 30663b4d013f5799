"""The fine-tuning suite: runs, reuse of finished runs, the table and the loss-curve plot."""

import json
import os

import pytest

from jaxssl import metrics as metrics_lib
from jaxssl import suite


def write_run(workdir, losses, dev, config, last_step=None):
  """A run of ``config``'s config.json and metrics.jsonl as finetune.run writes them, its last
  evaluation at ``last_step`` (default: the end, a finished run)."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json())
  writer = metrics_lib.MetricWriter(workdir)
  for step, loss in losses:
    writer.write(step, "train", {"loss": loss})
  writer.write(last_step or config.num_train_steps, "eval", dev)
  writer.close()


def test_table_shows_every_metric_with_its_baseline():
  results = {
      "minilm": {
          "sentiment": {
              "accuracy": 0.85,
              "f1": 0.8,
              "matthews_corrcoef": 0.7,
              "majority_accuracy": 0.47,
              "majority_f1": 0.64,
              "majority_matthews_corrcoef": 0.0
          },
          "rating": {
              "pearson": 0.8,
              "spearman": 0.75,
              "mean_prediction_mse": 4.0
          },
          "qa": {
              "exact_match": 0.5,
              "f1": 0.6,
              "majority_answer_exact_match": 0.05,
              "majority_answer_f1": 0.06
          },
      },
  }
  results["scratch"] = {
      task: {
          **metrics,
          **{
              name: metrics[name] / 2 for name in metrics if "majority" not in name
          }
      } for task, metrics in results["minilm"].items()
  }
  results = {
      name: {
          task: [metrics] for task, metrics in runs.items()
      } for name, runs in results.items()
  }
  lines = suite.table(results, ["sentiment", "rating", "qa"]).splitlines()
  assert lines[0] == "| task | metric | baseline | minilm | scratch |"
  assert lines[2] == "| sentiment | accuracy | 0.4700 (majority) | 0.8500 | 0.4250 |"
  assert lines[5] == "| rating | pearson | — | 0.8000 | 0.4000 |"
  assert lines[7] == "| qa | exact_match | 0.0500 (majority_answer) | 0.5000 | 0.2500 |"
  assert lines[8] == "| qa | f1 | 0.0600 (majority_answer) | 0.6000 | 0.3000 |"
  assert len(lines) == 2 + 3 + 2 + 2


def test_finished_runs_are_read_back_and_unfinished_ones_resumed(tmp_path, monkeypatch):
  dev = {"pearson": 0.5, "spearman": 0.4, "mean_prediction_mse": 3.0, "loss": 1.0}
  write_run(
      str(tmp_path / "minilm" / "rating"), [(10, 2.0), (20, 1.5)], dev,
      suite.task_config("rating", "minilm"))
  results = suite.run_suite(str(tmp_path), ["minilm"], ["rating"])
  assert results == {"minilm": {"rating": [dev]}}  # read back: nothing trained
  write_run(
      str(tmp_path / "scratch" / "rating"), [(10, 2.0)],
      dev,
      suite.task_config("rating", "scratch"),
      last_step=10)
  resumed = []
  monkeypatch.setattr(suite.finetune, "run", lambda config, workdir: resumed.append(
      (config.init_from, workdir)) or dev)
  suite.run_suite(str(tmp_path), ["minilm", "scratch"], ["rating"])
  assert resumed == [("scratch", str(tmp_path / "scratch" / "rating"))]
  # A finished run of another config is an error, not this config's result.
  with pytest.raises(
      ValueError,
      match=r"incompatible run \(learning_rate=0.0001, this config has "
      r"0.0002\); use a new --workdir"):
    suite.run_suite(str(tmp_path), ["minilm"], ["rating"], learning_rate=2e-4)
  with pytest.raises(ValueError, match=r"task='nope' is not a fine-tuning task"):
    suite.run_suite(str(tmp_path), ["minilm"], ["nope"])
  # an encoder and its random-weight twin get a directory each; two "bert" paths cannot
  assert suite.run_name("scratch:/runs/bert") == "scratch-bert"
  assert suite.run_name("/runs/bert/") == "bert" and suite.run_name("scratch") == "scratch"
  with pytest.raises(
      ValueError,
      match=r"init_from '/a/bert' would share the run directory "
      r"'bert' with another encoder"):
    suite.run_suite(str(tmp_path), ["/a/bert", "/b/bert"], ["rating"])


def test_seeds_run_apart_and_the_table_gives_mean_and_sd(tmp_path, monkeypatch):
  runs = []

  def fake_run(config, workdir):
    runs.append((config.seed, workdir))
    return {"pearson": 0.5 + 0.1 * config.seed, "spearman": 0.4}

  monkeypatch.setattr(suite.finetune, "run", fake_run)
  results = suite.run_suite(str(tmp_path), ["minilm"], ["rating"], seeds=3)
  assert runs == [(0, str(tmp_path / "minilm" / "rating")),
                  (1, str(tmp_path / "minilm" / "rating.seed1")),
                  (2, str(tmp_path / "minilm" / "rating.seed2"))]
  lines = suite.table(results, ["rating"]).splitlines()
  assert lines[2] == "| rating | pearson | — | 0.6000 ± 0.1000 |"
  assert lines[3] == "| rating | spearman | — | 0.4000 ± 0.0000 |"
  with pytest.raises(ValueError, match="seeds=0 is out of range; set it >= 1"):
    suite.run_suite(str(tmp_path), ["minilm"], ["rating"], seeds=0)


def test_loss_curves_png(tmp_path):
  dev = {"accuracy": 0.8}
  results = {}
  for name, losses in (("minilm", [(10, 0.6), (20, 0.4)]), ("scratch", [(10, 0.7), (20, 0.69)])):
    write_run(
        str(tmp_path / name / "sentiment"), losses, dev,
        suite.task_config("sentiment", name, num_train_steps=20))
    results[name] = {"sentiment": [dev]}
  path = str(tmp_path / "curves.png")
  suite.plot_losses(str(tmp_path), results, ["sentiment"], path)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_suite_fine_tunes_a_task_from_a_jaxssl_encoder(tiny_encoder, tfds_dir, tmp_path):
  results = suite.run_suite(
      str(tmp_path), [tiny_encoder], ["sentiment"],
      learning_rate=1e-3,
      num_train_steps=2,
      eval_every=2,
      train_split="train[:32]",
      eval_split="validation[:32]",
      data_dir=tfds_dir)
  name = os.path.basename(tiny_encoder)
  [dev] = results[name]["sentiment"]
  assert {"accuracy", "f1", "matthews_corrcoef", "majority_accuracy"} <= set(dev)
  config = json.loads((tmp_path / name / "sentiment" / "config.json").read_text())
  assert config["learning_rate"] == 1e-3 and config["batch_size"] == suite.SHARED["batch_size"]


def test_the_full_recipe_replaces_the_fast_budget():
  full = suite.task_config("sentiment", "minilm", recipe="full")
  fast = suite.task_config("sentiment", "minilm")
  assert (full.max_seq_length, full.batch_size, full.group_by_length) == (128, 32, True)
  assert full.train_split == "train" and full.eval_every == full.num_train_steps == 460
  assert (fast.max_seq_length, fast.batch_size, fast.num_train_steps) == (64, 16, 120)
  assert fast.train_split == "train[:2048]"
  assert suite.task_config("pos", "minilm", recipe="full", seed=2).seed == 2
