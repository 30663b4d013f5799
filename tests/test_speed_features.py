"""Speed features change how a step is computed, never what: gradient accumulation, remat and
scan over layers against the plain step on the same weights and batch."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxssl import sharding
from jaxssl.models import bert
from jaxssl.models import gpt
from jaxssl.models import layers
from jaxssl.core import objectives
from jaxssl.core import pretrain
from jaxssl.core import steps
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.core.objectives import gpt as gpt_objective
from jaxssl.data import tokenizer as tokenizer_lib

VOCAB, BATCH, LENGTH = 300, 8, 24
SPECIAL = dict(
    special_ids=(tokenizer_lib.PAD_ID, tokenizer_lib.CLS_ID, tokenizer_lib.SEP_ID,
                 tokenizer_lib.MASK_ID),
    vocab_size=VOCAB,
    first_regular_id=tokenizer_lib.FIRST_REGULAR_ID,
    mask_id=tokenizer_lib.MASK_ID,
    pad_id=tokenizer_lib.PAD_ID)
OPTIONS = ml_collections.ConfigDict(
    dict(
        learning_rate=1e-3,
        warmup_steps=0,
        final_lr_fraction=1.0,
        num_train_steps=10,
        max_grad_norm=1.0,
        adam_b1=0.9,
        adam_b2=0.999,
        adam_eps=1e-6,
        weight_decay=0.01,
        max_predictions_per_seq=6,
        mask_prob=0.15,
        nsp=True))


def bert_batch(rng):
  """Rows of uneven length (padding) and one padding row: micro-batches count differently."""
  ids = rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32)
  ids[:, 0], ids[:, 10] = 2, 3
  for row, length in enumerate(rng.integers(12, LENGTH + 1, BATCH)):
    ids[row, length - 1], ids[row, length:] = 3, 0
  return {
      "input_ids": ids,
      "segment_ids": (np.arange(LENGTH) > 10).astype(np.int32)[None].repeat(BATCH, 0),
      "next_sentence_labels": rng.integers(0, 2, BATCH).astype(np.int32),
      "example_weights": (np.arange(BATCH) != 5).astype(np.float32)
  }


def gpt_batch(rng):
  """Packed rows with uneven target weights and one padding row."""
  ids = rng.integers(5, VOCAB, (BATCH, LENGTH + 1)).astype(np.int32)
  segment_ids = 1 + (np.arange(LENGTH)[None] >= rng.integers(4, LENGTH, (BATCH, 1)))
  return {
      "input_ids": ids[:, :-1],
      "target_ids": ids[:, 1:],
      "positions": np.arange(LENGTH, dtype=np.int32)[None].repeat(BATCH, 0),
      "segment_ids": segment_ids.astype(np.int32),
      "target_weights": (rng.random((BATCH, LENGTH)) < 0.7).astype(np.float32),
      "example_weights": (np.arange(BATCH) != 5).astype(np.float32)
  }


def model_and_step(family, accumulation_steps=1, **model_fields):
  """(TrainState, train step, batch) of a tiny model of ``family``."""
  fields = dict(size="tiny", vocab_size=VOCAB, dropout_rate=0.0, **model_fields)
  optimizer, _ = steps.make_optimizer(OPTIONS)
  rng = np.random.default_rng(0)
  if family == "bert":
    cfg = bert.BertConfig.from_dict({**fields, "attention_dropout_rate": 0.0})
    graphdef, params = nnx.split(bert.BertForPretraining(cfg, nnx.Rngs(0)), nnx.Param)
    step = bert_objective.make_train_step(graphdef, optimizer, OPTIONS, SPECIAL, accumulation_steps)
    batch = bert_batch(rng)
  else:
    cfg = gpt.GPTConfig.from_dict(fields)
    graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)), nnx.Param)
    step = gpt_objective.make_train_step(graphdef, optimizer, accumulation_steps)
    batch = gpt_batch(rng)
  state = steps.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  return state, jax.jit(step), batch


@pytest.mark.parametrize("family, accumulation_steps", [("bert", 2), ("gpt", 4)])
def test_gradient_accumulation_gives_the_big_batch_update(family, accumulation_steps):
  state, big_step, batch = model_and_step(family)
  _, micro_step, _ = model_and_step(family, accumulation_steps)
  key = jax.random.key(0)
  big_state, big_sums = big_step(state, batch, key)
  micro_state, micro_sums = micro_step(state, batch, key)
  for name, value in big_sums.items():
    np.testing.assert_allclose(micro_sums[name], value, rtol=1e-5, err_msg=name)
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), big_state.params, state.params)
  assert np.median(jax.tree.leaves(moved)) > 1e-4  # updates far above the tolerance
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), micro_state.params,
               big_state.params)


def test_micro_batches_stride_over_the_rows():
  rows = np.arange(12).reshape(6, 2)
  micro = steps.micro_batch_rows(rows, 3)
  assert micro.shape == (3, 2, 2)
  np.testing.assert_array_equal(micro[1], rows[[1, 4]])


@functools.cache
def loss_and_grads(family, remat="none", scan_layers=False):
  """Loss and gradients of a tiny model's pretraining loss, with dropout on."""
  fields = dict(
      size="tiny", vocab_size=VOCAB, dropout_rate=0.1, remat=remat, scan_layers=scan_layers)
  rng = np.random.default_rng(0)
  if family == "bert":
    cfg = bert.BertConfig.from_dict({**fields, "attention_dropout_rate": 0.1})
    graphdef, params = nnx.split(bert.BertForPretraining(cfg, nnx.Rngs(0)), nnx.Param)
    batch = bert_objective.mask_batch(
        jax.tree.map(jnp.asarray, bert_batch(rng)), jax.random.key(1), OPTIONS, SPECIAL)

    def loss_fn(params):
      outputs = bert_objective.model_outputs(graphdef, params, batch, SPECIAL["pad_id"],
                                             jax.random.key(2))
      sums = bert_objective.metric_sums(outputs, batch)
      return sums["mlm_loss_sum"] + sums["nsp_loss_sum"]
  else:
    graphdef, params = nnx.split(gpt.GPT(gpt.GPTConfig.from_dict(fields), nnx.Rngs(0)), nnx.Param)
    batch = gpt_batch(rng)

    def loss_fn(params):
      logits = gpt_objective.model_logits(graphdef, params, batch, jax.random.key(2))
      return gpt_objective.metric_sums(logits, batch)["lm_loss_sum"]

  return jax.jit(jax.value_and_grad(loss_fn))(params)


# Every policy on BERT; GPT shares layers.run_blocks, so two of them cover its block call.
@pytest.mark.parametrize("family, remat, scan_layers", [
    ("bert", "full", False),
    ("bert", "dots_saveable", False),
    ("bert", "dots_with_no_batch_dims_saveable", False),
    ("bert", "none", True),
    ("bert", "full", True),
    ("gpt", "full", False),
    ("gpt", "dots_with_no_batch_dims_saveable", True),
])
def test_remat_and_scan_keep_loss_and_gradients(family, remat, scan_layers):
  loss, grads = loss_and_grads(family)
  other_loss, other_grads = loss_and_grads(family, remat=remat, scan_layers=scan_layers)
  np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), other_grads,
               grads)


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_scan_layers_keeps_the_per_layer_parameters(family):
  """Checkpoints, converters and the KV-cache decoder see the same tree either way."""
  make = {
      "bert": lambda **f: bert.BertForPretraining(bert.BertConfig(**f), nnx.Rngs(0)),
      "gpt": lambda **f: gpt.GPT(gpt.GPTConfig(**f), nnx.Rngs(0))
  }[family]
  unrolled = nnx.state(make(num_layers=2), nnx.Param)
  scanned = nnx.state(make(num_layers=2, scan_layers=True), nnx.Param)
  assert jax.tree.structure(scanned) == jax.tree.structure(unrolled)
  jax.tree.map(np.testing.assert_array_equal, scanned, unrolled)


def test_scanned_gpt_decodes_with_its_cache():
  cfg = gpt.GPTConfig.from_dict(dict(size="tiny", vocab_size=VOCAB, scan_layers=True))
  model = gpt.GPT(cfg, nnx.Rngs(0))
  ids = jnp.asarray(np.random.default_rng(0).integers(5, VOCAB, (2, 10)), jnp.int32)
  positions = jnp.arange(10)[None].repeat(2, 0)
  full, _ = model(ids, positions)
  cached, _ = model(ids, positions, cache=gpt.init_cache(cfg, 2, 16))
  np.testing.assert_allclose(cached, full, atol=1e-5)


def test_unknown_remat_policy_names_the_choices():
  with pytest.raises(ValueError, match="model.remat='some'.*'none', 'full'"):
    bert.BertConfig(remat="some")
  with pytest.raises(ValueError, match="model.remat='some'"):
    gpt.GPTConfig(remat="some")
  assert set(layers.REMAT_CHOICES) == {"none", *layers.REMAT_POLICIES}


def test_unknown_attention_implementation_names_the_choices():
  for config in (bert.BertConfig, gpt.GPTConfig):
    with pytest.raises(ValueError, match="model.attention_implementation='flash'.*'xla', 'cudnn'"):
      config(attention_implementation="flash")


def test_cudnn_attention_is_refused_off_gpu_before_training(tiny_config):
  tiny_config.model.attention_implementation = "cudnn"
  mesh = sharding.make_mesh(tiny_config.mesh)
  with pytest.raises(ValueError, match="'cudnn' needs an NVIDIA GPU.*this run: cpu, float32"):
    pretrain.check_config(tiny_config, objectives.get(tiny_config), mesh)


@pytest.mark.parametrize("accumulation_steps", [0, 3])
def test_accumulation_steps_must_split_the_batch(tiny_config, accumulation_steps):
  tiny_config.grad_accumulation_steps = accumulation_steps
  mesh = sharding.make_mesh(tiny_config.mesh)
  with pytest.raises(ValueError, match=f"grad_accumulation_steps={accumulation_steps} must"):
    pretrain.check_config(tiny_config, objectives.get(tiny_config), mesh)


@pytest.mark.slow
def test_training_with_every_speed_feature_matches_the_plain_run(tiny_config, tmp_path):
  """pretrain.run end to end: accumulation, remat and scan together lose what the plain run does."""
  tiny_config.num_train_steps = tiny_config.eval_every = tiny_config.checkpoint_every = 4
  tiny_config.log_every = 2
  tiny_config.eval_batches = 1
  plain = pretrain.run(tiny_config, str(tmp_path / "plain"))
  tiny_config.grad_accumulation_steps = 2
  tiny_config.model.remat = "full"
  tiny_config.model.scan_layers = True
  fast = pretrain.run(tiny_config, str(tmp_path / "fast"))
  for name in ("mlm_loss", "nsp_loss", "mlm_accuracy"):
    np.testing.assert_allclose(fast[name], plain[name], rtol=1e-4, err_msg=name)
