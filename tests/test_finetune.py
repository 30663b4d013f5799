"""Fine-tuning end to end: MiniLM and a scratch encoder on sentiment, regression, GLUE (mocked)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from conftest import ROOT, load_config
from jaxssl import finetune
from jaxssl import metrics as metrics_lib
from jaxssl import train


def small_config(tfds_dir, task="sentiment", **fields):
  """A few steps on 512 training and 256 dev sentences of at most 48 tokens."""
  config = load_config("bert_finetune", f"task={task}")
  config.data_dir = tfds_dir
  config.train_split = "train[:512]"
  config.eval_split = "validation[:256]"
  config.max_seq_length = 48  # 90% of the movie-review sentences fit
  config.batch_size = 16
  config.num_train_steps = 30
  config.warmup_steps = 3
  config.learning_rate = 1e-4
  config.log_every = 10
  config.eval_every = 30
  config.update(fields)
  return config


@pytest.mark.slow
def test_minilm_beats_the_majority_class(tfds_dir, tmp_path):
  dev = finetune.run(small_config(tfds_dir), str(tmp_path / "run"))
  assert dev["accuracy"] > dev["majority_accuracy"] + 0.05, dev
  records = metrics_lib.read_metrics(str(tmp_path / "run"))
  assert [(r["step"], r["split"]) for r in records] == [(10, "train"), (20, "train"), (30, "train"),
                                                        (30, "eval")]
  assert (tmp_path / "run" / "checkpoints" / "30").is_dir()


@pytest.mark.slow
def test_scratch_encoder_runs(tfds_dir, tmp_path):
  config = small_config(
      tfds_dir,
      init_from="scratch",
      num_train_steps=4,
      eval_every=4,
      eval_split="validation[:64]",
      learning_rate=3e-4)
  dev = finetune.run(config, str(tmp_path / "run"))
  assert 0.0 <= dev["accuracy"] <= 1.0 and math.isfinite(dev["loss"]), dev
  assert dev["majority_accuracy"] > 0.4


@pytest.mark.slow
def test_rating_regression_has_finite_correlations(tfds_dir, tmp_path):
  config = small_config(
      tfds_dir, "rating", num_train_steps=4, eval_every=4, eval_split="validation[:64]")
  dev = finetune.run(config, str(tmp_path / "run"))
  assert math.isfinite(dev["pearson"]) and math.isfinite(dev["spearman"]), dev
  assert dev["mean_prediction_mse"] > 0 and math.isfinite(dev["loss"])


@pytest.mark.slow
def test_glue_sst2_goes_through_the_same_path(tmp_path):
  import tensorflow_datasets.text.glue  # pylint: disable=import-outside-toplevel,unused-import
  config = small_config(
      str(tmp_path / "tfds"),
      "sst2",
      train_split="train",
      eval_split="",
      num_train_steps=2,
      log_every=1,
      eval_every=2)
  with tfds.testing.mock_data(num_examples=32):  # random sentences and labels, offline
    dev = finetune.run(config, str(tmp_path / "run"))
  assert set(dev) == {"loss", "accuracy", "majority_accuracy"}
  assert 0.0 <= dev["accuracy"] <= 1.0


def test_empty_text_names_the_example():
  tokenizer = type(
      "Tokenizer", (),
      dict(encode=lambda self, text: [3] * len(text.split()), cls_id=1, sep_id=2, pad_id=0))()
  examples = [{"id": "a", "text": "good film", "label": 1}, {"id": "b", "text": " ", "label": 0}]
  with pytest.raises(ValueError, match=r"validation example 1 \(id 'b'\)"):
    finetune.encode_examples(tokenizer, examples, finetune.TASKS["sentiment"], 8, "validation")


def test_baselines():
  sentiment, rating = finetune.TASKS["sentiment"], finetune.TASKS["rating"]
  majority = finetune.baseline(sentiment, np.array([1, 1, 0]), np.array([1, 0, 0, 0]))
  assert majority["majority_accuracy"] == 0.25
  mean = finetune.baseline(rating, np.array([1.0, 3.0]), np.array([2.0, 4.0]))
  assert mean["mean_prediction_mse"] == 2.0


@pytest.mark.slow
def test_unknown_task_is_one_line(tmp_path):
  process = subprocess.run([
      sys.executable, "-m", "jaxssl.main", "--config=configs/bert_finetune.py:task=nope",
      f"--workdir={tmp_path / 'run'}"
  ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=300)
  assert process.returncode != 0
  assert "task='nope' is not a fine-tuning task" in process.stderr.strip().splitlines()[-1]
  assert "Traceback" not in process.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_encoder_from_a_pretraining_workdir(tiny_config, tmp_path):
  tiny_config.num_train_steps = 2
  tiny_config.checkpoint_every = 2
  train.run(tiny_config, str(tmp_path / "bert"))
  config = load_config("bert_finetune")
  config.init_from = str(tmp_path / "bert")
  graphdef, params, tokenizer = finetune.load_encoder(config)
  batch = finetune.encode_examples(tokenizer, [{
      "text": "Call me Ishmael.",
      "label": 1
  }], finetune.TASKS["sentiment"], 64, "train")
  sequence, _ = nnx.merge(graphdef, params)(batch["input_ids"], batch["segment_ids"],
                                            batch["attention_mask"] > 0)
  assert sequence.shape == (1, 64, 128)  # the tiny preset's hidden size
