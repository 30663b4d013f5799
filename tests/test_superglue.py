"""SuperGLUE: each task's examples as its kind's inputs, the official metrics against hand-worked
values, the multiple-choice head, and every task end to end on mocked TFDS data (offline), one of
them through the ``python -m jaxssl.main`` command."""

import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import ROOT, load_config
from jaxssl import metrics as metrics_lib
from jaxssl import predict
from jaxssl.core import finetune
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import heads
from jaxssl.core.tasks import kinds
from jaxssl.core.tasks import superglue


class WordTokenizer:
  """A word per token: enough to lay rows out."""
  cls_id, sep_id, pad_id = 1, 2, 0

  def encode(self, text):
    return [3 + len(word) for word in text.split()]


def rows_of(examples, labels=None):
  """``catalog.Rows`` with one row per example, as scoring reads them."""
  arrays = {} if labels is None else {"labels": np.asarray(labels)}
  return catalog.Rows(arrays, np.arange(len(examples)), examples, {}, {}, 0)


def one_hot(predictions, num_classes):
  return np.eye(num_classes)[predictions]


def test_the_word_and_spans_asked_about_are_marked():
  wic = superglue.wic({
      "sentence1": "He sat on the bank.",
      "sentence2": "The bank lent money.",
      "start1": 14,
      "end1": 18,
      "start2": 4,
      "end2": 8
  })
  assert (wic["marked1"], wic["marked2"]) == ("He sat on the *bank*.", "The *bank* lent money.")
  wsc = superglue.wsc({
      "text":
          "The city councilmen refused the demonstrators a permit because they feared violence.",
      "span1_index":
          1,
      "span1_text":
          "city councilmen",
      "span2_index":
          9,
      "span2_text":
          "they"
  })
  assert wsc["marked"] == ("The *city councilmen* refused the demonstrators a permit because "
                           "#they# feared violence.")
  multirc = superglue.multirc({
      "paragraph": "P.",
      "question": "Who?",
      "answer": "Ann",
      "idx": {
          "paragraph": 3,
          "question": 1,
          "answer": 0
      }
  })
  assert (multirc["question_answer"], multirc["group"]) == ("Who? Ann", "3/1")
  copa = superglue.copa({
      "premise": "The man broke his toe.",
      "question": "cause",
      "choice1": "He dropped a hammer on his foot.",
      "choice2": "He got a hole in his sock."
  })
  assert copa["choices"][1] == ("The man broke his toe. What was the cause of this?",
                                "He got a hole in his sock.")
  record = superglue.record({
      "passage": "Obama met Merkel.",
      "query": "@placeholder smiled.",
      "entities": ["Merkel", "Obama"]
  })
  assert record["choices"] == [("Obama met Merkel.", "Merkel smiled."),
                               ("Obama met Merkel.", "Obama smiled.")]


def test_cb_accuracy_and_macro_f1_match_hand_worked_values():
  labels, predicted = [0, 0, 1, 2, 2, 1], [0, 1, 1, 2, 0, 1]
  # F1 per class: 0: P 1/2, R 1/2 -> 1/2; 1: P 2/3, R 1 -> 4/5; 2: P 1, R 1/2 -> 2/3.
  scores = kinds.CLASSIFICATION.score(catalog.TASKS["cb"], rows_of([{}] * 6, labels),
                                      one_hot(predicted, 3), kinds.DecodeOptions())
  assert scores == pytest.approx({"accuracy": 4 / 6, "f1_macro": (1 / 2 + 4 / 5 + 2 / 3) / 3})


def test_multirc_f1a_and_exact_match_match_hand_worked_values():
  # Three questions: q1's three answers (one missed), q2's two (right), q3's one (right).
  groups = ["p/q1"] * 3 + ["p/q2"] * 2 + ["p/q3"]
  labels, predicted = [1, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 1]
  scores = kinds.CLASSIFICATION.score(catalog.TASKS["multirc"],
                                      rows_of([{
                                          "group": group
                                      } for group in groups], labels), one_hot(predicted, 2),
                                      kinds.DecodeOptions())
  # F1a over all six answers: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 4/5; EM: 2 of 3 questions.
  assert scores == pytest.approx({"f1a": 4 / 5, "group_exact_match": 2 / 3})


def test_record_takes_the_best_gold_answer_for_each_chosen_entity():
  examples = [
      superglue.record({
          "passage": "p",
          "query": "@placeholder",
          "entities": ["Merkel", "Obama"],
          "answers": ["Barack Obama", "Obama"]
      }),
      superglue.record({
          "passage": "p",
          "query": "@placeholder",
          "entities": ["United States of America", "Germany"],
          "answers": ["the United States", "US"]
      }),
  ]
  scores = kinds.MULTIPLE_CHOICE.score(catalog.TASKS["record"], rows_of(examples),
                                       np.array([[0.0, 3.0], [2.0, 1.0]]), kinds.DecodeOptions())
  # "Obama": exact against "Obama". "United States of America" vs "the United States": 2 shared
  # words, P 2/4, R 2/2, F1 2/3 (vs "US" 0): the maximum over the gold answers counts.
  assert scores == pytest.approx({"f1": (1 + 2 / 3) / 2, "exact_match": 1 / 2})


def test_choices_become_one_row_with_padding_choices_and_the_first_right_answer():
  examples = [{
      "passage": "a b c",
      "query": "@placeholder d",
      "entities": entities,
      "answers": answers
  } for entities, answers in ((["x", "yy", "zzz"], ["zzz", "yy"]), (["x"], ["x"]), (["x", "yy"],
                                                                                    ["w"]))]
  rows = catalog.encode(catalog.TASKS["record"], WordTokenizer(), examples, max_seq_length=8)
  assert rows.arrays["input_ids"].shape == (2, 3, 8)  # (examples, most choices, tokens)
  assert rows.arrays["labels"].tolist() == [1, 0]  # "yy" is the first right choice
  assert rows.arrays["input_ids"][0, 2].tolist() == [1, 4, 4, 4, 2, 6, 4, 2]  # [CLS] a b c [SEP]..
  assert rows.arrays["attention_mask"][1, 1:].sum() == 0  # padding choices: all padding
  assert rows.skipped == {"no answer among the choices": 1}


def test_the_multiple_choice_head_gives_padding_choices_nothing():
  scores = np.array([[2.0, 0.0, 5.0]])  # a third, padding choice that would win
  batch = {"attention_mask": np.array([[[1, 1], [1, 0], [0, 0]]]), "labels": np.array([0])}
  params = heads.init_multiple_choice(np.zeros(2, np.uint32), 4)
  sequence = np.zeros((1, 3, 2, 4), np.float32)
  masked = heads.apply_multiple_choice(params, sequence, batch)
  assert masked.shape == (1, 3) and masked[0, 2] < -1e30
  sums, weight = heads.MULTIPLE_CHOICE.loss(
      np.where(batch["attention_mask"][:, :, 0] > 0, scores,
               np.finfo(np.float32).min), batch)
  assert float(sums["loss"]) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
  assert float(sums["accuracy"]) == 1.0 and float(weight) == 1.0


def record_source(*args, **kwargs):
  """Mocked ReCoRD examples whose answers are among their entities (random ones never are)."""
  del args, kwargs
  entities = [b"Obama", b"Merkel", b"Berlin", b"Germany"]
  return [{
      "passage": b"Obama met Merkel in Berlin, Germany.",
      "query": b"@placeholder said the talks went well.",
      "entities": entities[:2 + i % 3],
      "answers": [entities[i % 2]],
      "idx": {
          "passage": i,
          "query": i
      }
  } for i in range(8)]


RECORDS = {
    "copa": {
        "premise": "The ice melted.",
        "question": "cause",
        "choice1": "It was warm.",
        "choice2": "It was dark."
    },
    "record": {
        "passage": "Obama met Merkel in Berlin.",
        "query": "@placeholder spoke first.",
        "entities": ["Obama", "Merkel", "Berlin"]
    },
}


def small_config(task, tfds_dir, init_from):
  """configs/bert_finetune.py:task=TASK for 2 steps of 4 rows of 32 tokens."""
  config = load_config("bert_finetune", f"task={task}")
  config.update(
      init_from=init_from,
      data_dir=tfds_dir,
      num_train_steps=2,
      batch_size=4,
      max_seq_length=32,
      eval_every=2,
      log_every=1)
  return config


@pytest.mark.slow
@pytest.mark.parametrize("task", catalog.SUPERGLUE_TASKS)
def test_every_superglue_task_fine_tunes_end_to_end(task, tiny_encoder, tmp_path):
  workdir = tmp_path / "run"
  mock = {"as_data_source_fn": record_source} if task == "record" else {"num_examples": 8}
  with tfds.testing.mock_data(**mock):  # random texts, offsets and labels, offline
    finetune.run(small_config(task, str(tmp_path / "tfds"), tiny_encoder), str(workdir))
  evaluation = [r for r in metrics_lib.read_metrics(str(workdir)) if r["split"] == "eval"][-1]
  for metric in catalog.TASKS[task].metrics:
    assert 0.0 <= evaluation[metric] <= 1.0 or (metric == "matthews_corrcoef" and
                                                -1.0 <= evaluation[metric] <= 1.0), evaluation
    assert f"majority_{metric}" in evaluation
  assert (workdir / "checkpoints" / "2").is_dir()
  if task == "wic":  # records cannot carry WiC's offsets: one line that says what to do instead
    with pytest.raises(ValueError, match="which records do not carry; score a split"):
      predict.Predictor(str(workdir)).predict([{"text_a": "a", "text_b": "b"}])
  if task in RECORDS:  # multiple choice predicts from records of the dataset's own features
    [prediction] = predict.Predictor(str(workdir)).predict([RECORDS[task]])
    choices = RECORDS[task].get("entities") or [RECORDS[task]["choice1"], RECORDS[task]["choice2"]]
    assert prediction["answer"] == choices[prediction["choice"]]
    assert len(prediction["probabilities"]) == len(choices)
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)


# ``python -m jaxssl.main`` as a program (absl flags, config overrides, exit status) over mocked
# TFDS data: the mock is set up in the same process, then the module runs as __main__.
MOCKED_MAIN = """
import runpy, sys
import tensorflow_datasets as tfds
sys.argv[0] = "jaxssl.main"
with tfds.testing.mock_data(num_examples=8):
  runpy.run_module("jaxssl.main", run_name="__main__")
"""


@pytest.mark.slow
def test_the_jaxssl_main_command_runs_copa_on_mocked_data(tiny_encoder, tmp_path):
  workdir = tmp_path / "run"
  process = subprocess.run([
      sys.executable, "-c", MOCKED_MAIN, "--config=configs/bert_finetune.py:task=copa",
      f"--workdir={workdir}", f"--config.init_from={tiny_encoder}",
      f"--config.data_dir={tmp_path / 'tfds'}", "--config.num_train_steps=2",
      "--config.batch_size=4", "--config.max_seq_length=32", "--config.eval_every=2"
  ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert process.returncode == 0, process.stderr[-2000:]
  assert "Done: 2 steps. Best dev accuracy" in process.stdout
  assert (workdir / "checkpoints" / "2").is_dir()
