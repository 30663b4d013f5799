"""Model FLOPs per token (what logged throughput and MFU count) against XLA's own count."""

import types

import jax
import numpy as np
import pytest

from jaxssl import cli
from jaxssl.core import flops
from jaxssl.core import objectives
from jaxssl.core import steps

BATCH, LENGTH, VOCAB = 4, 64, 1000
# Token ids as a jaxssl tokenizer numbers its special tokens (no tokenizer is trained here).
TOKENIZER = types.SimpleNamespace(
    pad_id=0, cls_id=1, sep_id=2, mask_id=3, vocab_size=VOCAB, num_special=5)


def batch(family):
  ids = np.random.default_rng(0).integers(TOKENIZER.num_special, VOCAB, (BATCH, LENGTH))
  ids = ids.astype(np.int32)
  ones = np.ones((BATCH, LENGTH), np.int32)
  if family == "gpt":
    return dict(
        input_ids=ids,
        target_ids=ids,
        positions=np.cumsum(ones, 1) - 1,
        segment_ids=ones,
        target_weights=ones.astype(np.float32),
        example_weights=np.ones(BATCH, np.float32))
  return dict(
      input_ids=ids,
      segment_ids=0 * ones,
      next_sentence_labels=np.zeros(BATCH, np.int32),
      example_weights=np.ones(BATCH, np.float32))


@pytest.mark.parametrize("config_name, arg", [("bert_pretrain", "size=tiny,nsp=False"),
                                              ("bert_pretrain", "size=tiny,objective=electra"),
                                              ("gpt_pretrain", "size=tiny")])
def test_model_flops_are_what_xla_counts_less_the_small_ops(config_name, arg):
  config = cli.load_config(config_name, arg)
  config.update(vocab_size=VOCAB, max_seq_length=LENGTH, batch_size=BATCH)
  if config_name == "bert_pretrain":
    config.max_predictions_per_seq = 10
  objective = objectives.get(config)
  optimizer, _ = steps.make_optimizer(config)
  graphdef, init_state, _ = steps.state_structure(objective, optimizer, 0)
  train_step, _ = objective.steps(graphdef, optimizer, TOKENIZER)
  compiled = jax.jit(train_step).lower(
      jax.jit(init_state)(), batch("gpt" if config_name == "gpt_pretrain" else "bert"),
      jax.random.key(0)).compile()
  analysis = compiled.cost_analysis()
  xla_flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
  model_flops = objective.flops_per_token() * BATCH * LENGTH
  # XLA also counts what the model FLOPs leave out: softmax, norms, GELU, the optimizer.
  assert 1.0 <= xla_flops / model_flops < 1.2, (xla_flops, model_flops)


def test_peak_rate_by_chip_name():
  assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
  assert flops.peak_flops("TPU v5 lite") == 197e12
  assert flops.peak_flops("cpu") is None
