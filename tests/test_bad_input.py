"""Every input error a user can make: one line on stderr, non-zero exit, nothing written."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, SMALL_CORPUS, fake_devices, run_main
from jaxssl.core import pretrain


def fails_with(config, workdir, expected, env=None, extra=()):
  """Runs the entry point and checks it fails with one error line containing ``expected``."""
  process = run_main(config, workdir, env=env, extra=extra)
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode != 0
  last_line = stderr.strip().splitlines()[-1]
  assert expected in last_line, stderr[-2000:]
  assert "Traceback" not in stderr
  return stdout


def test_unknown_config_key(tiny_config, tmp_path):
  fails_with(tiny_config, tmp_path / "run", "no_such_field", extra=["--config.no_such_field=1"])
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config, expected", [
    ("bert_pretrain.py:size=huge", "model.size='huge' is not a preset"),
    ("bert_pretrain.py:recipe=gpu", "recipe='gpu': use one of ('demo', 'cpu')"),
    ("bert_finetune.py:task=pos,recipe=fast", "recipe='fast' is not a recipe; use recipe=full"),
    ("bert_finetune.py:task=pos_brown,recipe=full", "task='pos_brown' has no full recipe"),
])
def test_unknown_config_argument(tmp_path, config, expected):
  process = subprocess.run([
      sys.executable, "-m", "jaxssl.main", f"--config=configs/{config}",
      f"--workdir={tmp_path / 'run'}"
  ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=300)
  assert process.returncode != 0
  assert expected in process.stderr.strip().splitlines()[-1]
  assert "Traceback" not in process.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "dataset, split, expected",
    [
        ("jaxssl_corpus/no_such_corpus", "train", "no_such_corpus"),
        ("no_such_dataset", "train", "no_such_dataset"),
        (SMALL_CORPUS, "train[:0]", "train[:0]"),  # an empty corpus
        ("/no/such/folder/*.txt", "train", "matches no .txt, .jsonl, .parquet file"),
    ])
def test_missing_or_empty_corpus(tiny_config, tmp_path, dataset, split, expected):
  tiny_config.dataset = dataset
  tiny_config.train_split = split
  fails_with(tiny_config, tmp_path / "run", expected)
  assert not (tmp_path / "run").exists()


def test_max_seq_length_above_position_table(tiny_config, tmp_path):
  tiny_config.max_seq_length = 1024
  fails_with(tiny_config, tmp_path / "run", "max_seq_length=1024 exceeds the position table")
  assert not (tmp_path / "run").exists()


def test_batch_not_divisible_by_data_parallel_devices(tiny_config, tmp_path):
  tiny_config.batch_size = 12
  fails_with(
      tiny_config,
      tmp_path / "run",
      "batch_size=12 is not divisible by the 8 data-parallel",
      env={"XLA_FLAGS": fake_devices(8)})
  assert not (tmp_path / "run").exists()


def test_tokenizer_vocabulary_must_match_embedding(tiny_config, tmp_path):
  tiny_config.vocab_size = 2000  # the fixture tokenizer has 1000 pieces
  fails_with(tiny_config, tmp_path / "run", "has 1000 tokens but the model embeds vocab_size=2000")
  assert not (tmp_path / "run").exists()


def test_workdir_holding_an_incompatible_run(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  tiny_config.num_train_steps = 2
  tiny_config.eval_every = tiny_config.checkpoint_every = 2
  pretrain.run(tiny_config, workdir)
  before = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
  tiny_config.model.size = "mini"
  fails_with(tiny_config, workdir, "holds an incompatible run")
  after = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
  assert before == after
