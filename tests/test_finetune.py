"""Fine-tuning end to end: MiniLM and scratch encoders on sentiment; every task kind on a tiny
jaxssl encoder, with predictions from its workdir; GLUE (mocked) through the same path."""

import json
import math
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
from flax import nnx

from conftest import ROOT, load_config
from jaxssl import metrics as metrics_lib
from jaxssl import predict
from jaxssl import workdir as workdir_lib
from jaxssl.core import finetune
from jaxssl.core import pretrain
from jaxssl.core.tasks import catalog


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
  assert [(r["step"], r["split"]) for r in records] == [(0, "data"), (10, "train"), (20, "train"),
                                                        (30, "train"), (30, "eval")]
  assert records[0]["train_examples"] == 512 and records[0]["dev_examples"] == 256
  assert records[0]["dev_truncated"] == 0 and records[0]["dev_rows"] >= 256  # long texts: windows
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
  pretrain.run(tiny_config, str(tmp_path / "bert"))
  config = load_config("bert_finetune")
  config.init_from = str(tmp_path / "bert")
  graphdef, params, tokenizer = finetune.load_encoder(config)
  batch = catalog.encode(catalog.TASKS["sentiment"], tokenizer, [{
      "text": "Call me Ishmael.",
      "label": 1
  }], 64).arrays
  sequence, _ = nnx.merge(graphdef, params)(batch["input_ids"], batch["segment_ids"],
                                            batch["attention_mask"] > 0)
  assert sequence.shape == (1, 64, 128)  # the tiny preset's hidden size


# Per task: a config override and records in jaxssl.predict's input format.
KIND_CASES = {
    "rating": ({}, [{
        "text": "A fine film."
    }]),
    "paraphrase": ({}, [{
        "text_a": "And God said",
        "text_b": "God said",
        "id": "p1"
    }]),
    "pos": ({}, [{
        "words": ["Call", "me", "Ishmael", "."]
    }, {
        "text": "The whale sank"
    }]),
    "qa": (dict(max_question_length=24, doc_stride=16), [{
        "context": "Moses went up to the mountain.",
        "question": "_____ went up"
    }]),
    "sentiment_zh": ({}, [{
        "text": "这本书很好"
    }]),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(KIND_CASES))
def test_each_task_kind_trains_evaluates_and_predicts(task, tiny_encoder, tfds_dir, tmp_path):
  overrides, records = KIND_CASES[task]
  config = small_config(
      tfds_dir,
      task,
      init_from=tiny_encoder,
      train_split="train[:64]",
      eval_split="validation[:32]",
      max_seq_length=64,
      num_train_steps=3,
      log_every=3,
      eval_every=3,
      **overrides)
  dev = finetune.run(config, str(tmp_path / "run"))
  metrics = catalog.TASKS[task].metrics
  assert set(metrics) | {"loss"} <= set(dev) and all(math.isfinite(dev[m]) for m in metrics), dev
  assert any(name.startswith(("majority", "mean_prediction")) for name in dev), dev

  predictions = predict.Predictor(str(tmp_path / "run")).predict(records)
  assert len(predictions) == len(records)
  labels = json.loads((tmp_path / "run" / workdir_lib.LABELS_FILE).read_text())
  for record, prediction in zip(records, predictions):
    if task == "rating":
      assert math.isfinite(prediction["score"])
    elif task == "pos":
      words = record.get("words") or record["text"].split()
      assert prediction["words"] == words and len(prediction["tags"]) == len(words)
      assert set(prediction["tags"]) <= set(labels)  # every word fits in 64 tokens
    elif task == "qa":
      assert record["context"][prediction["start"]:prediction["end"]] == prediction["answer"]
      assert prediction["answer"]
    else:
      assert prediction["label"] in labels and list(prediction["probabilities"]) == labels
      assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.get("id") == record.get("id")


@pytest.mark.slow
def test_squad_format_data_fine_tunes_through_the_qa_task(tiny_encoder, tfds_dir, tmp_path):
  config = small_config(
      tfds_dir,
      "qa",
      dataset="jaxssl_qa/squad_fixture",  # SQuAD v1.1 JSON, the catalog squad's features
      init_from=tiny_encoder,
      train_split="train",
      eval_split="validation",
      max_seq_length=64,
      doc_stride=32,
      num_train_steps=2,
      eval_every=2)
  dev = finetune.run(config, str(tmp_path / "run"))
  assert 0.0 <= dev["exact_match"] <= dev["f1"] <= 1.0
  data = metrics_lib.read_metrics(str(tmp_path / "run"))[0]
  assert data["train_examples"] == 5 and data["train_rows"] > 5  # long contexts: several windows


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mrpc", "cola", "mnli", "stsb"])
def test_glue_tasks_go_through_the_same_path(task, tiny_encoder, tmp_path):
  import tensorflow_datasets.text.glue  # pylint: disable=import-outside-toplevel,unused-import
  config = small_config(
      str(tmp_path / "tfds"),
      task,
      init_from=tiny_encoder,
      train_split="train",
      eval_split="",
      num_train_steps=2,
      log_every=1,
      eval_every=2)
  with tfds.testing.mock_data(num_examples=16):  # random texts and labels, offline
    dev = finetune.run(config, str(tmp_path / "run"))
  assert set(catalog.TASKS[task].metrics) <= set(dev)


@pytest.mark.slow
def test_predict_command_errors_name_the_record_and_write_nothing(tiny_encoder, tfds_dir, tmp_path):
  config = small_config(
      tfds_dir,
      init_from=tiny_encoder,
      train_split="train[:32]",
      eval_split="validation[:16]",
      num_train_steps=1,
      eval_every=1)
  finetune.run(config, str(tmp_path / "run"))
  good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
  good.write_text('{"text": "Great."}\n\n{"text": "Awful.", "id": 2}\n')
  bad.write_text('{"text": "Great."}\n{"txt": "typo"}\n')

  def predict_command(input_path, output_path):
    return subprocess.run([
        sys.executable, "-m", "jaxssl.predict", f"--workdir={tmp_path / 'run'}",
        f"--input={input_path}", f"--output={output_path}"
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)

  process = predict_command(bad, tmp_path / "bad_out.jsonl")
  assert process.returncode == 2 and "Traceback" not in process.stderr
  assert process.stderr.strip().splitlines()[-1] == (
      f"error: {bad} record 2 has no 'text'; a sentiment model reads records with ['text'].")
  assert not (tmp_path / "bad_out.jsonl").exists()
  process = predict_command(good, tmp_path / "out.jsonl")
  assert process.returncode == 0, process.stderr
  lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [line.get("id") for line in lines] == [None, 2]
  assert all(line["label"] in ("negative", "positive") for line in lines)
