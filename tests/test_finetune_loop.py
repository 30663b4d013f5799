"""The fine-tuning loop's parts: dynamic padding and the best checkpoint that predict loads."""

import numpy as np
import pytest

from jaxssl import checkpoint
from jaxssl import metrics as metrics_lib
from jaxssl import predict
from jaxssl.core import finetune
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
from test_finetune import small_config


@pytest.mark.parametrize("task, max_seq_length", [("sentiment", 64), ("pos", 64), ("qa", 384)])
def test_dynamic_padding_gives_the_padded_batchs_loss(task, max_seq_length, tiny_encoder, tfds_dir):
  config = small_config(
      tfds_dir, task, init_from=tiny_encoder, max_seq_length=max_seq_length, doc_stride=32)
  task_spec = catalog.get_task(task)
  kind = kinds.get(task_spec.kind)
  graphdef, encoder_params, tokenizer = finetune.load_encoder(config)
  label_names = (None if kind.num_outputs else finetune.corpora.label_names(
      task_spec.dataset, tfds_dir, task_spec.label_key))
  rows, _ = finetune.encode_split(config, task_spec, tokenizer, "train[:64]",
                                  len(label_names) if label_names else None)
  lengths = finetune.bucket_lengths(max_seq_length)
  batch, _ = next(finetune.train_batches(rows, 16, seed=0, lengths=lengths))
  longest = batch["attention_mask"].sum(axis=1).max()
  assert batch["input_ids"].shape[1] == min(length for length in lengths if length >= longest)
  shortest_rows = np.argsort(rows.arrays["attention_mask"].sum(axis=1))[:4]
  padded = {key: value[shortest_rows] for key, value in rows.arrays.items()}
  padded["example_weights"] = np.ones(4, np.float32)
  dynamic = finetune.trimmed(padded, lengths)
  assert dynamic["input_ids"].shape[1] < max_seq_length
  hidden = finetune.nnx.merge(graphdef, encoder_params).cfg.hidden_size
  params = {
      "encoder":
          encoder_params,
      "head":
          kind.head.init(rng_lib.run_key(0, "head"), hidden, kind.num_outputs or len(label_names))
  }
  forward = finetune.make_forward(graphdef, kind.head, dropout_rate=0.0)

  def loss(batch):
    sums, weight = kind.head.loss(forward(params, batch, None), batch)
    return float(sums["loss"]) / float(weight)

  np.testing.assert_allclose(loss(dynamic), loss(padded), rtol=1e-5)


def test_the_best_and_the_latest_checkpoints_are_kept(tmp_path):
  state = {"w": np.zeros(3, np.float32)}
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=1, best_metric="accuracy")
  for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.7), (4, None)]:
    checkpointer.save(step, state, {}, None if accuracy is None else {"accuracy": accuracy})
  checkpointer.close()
  assert sorted(
      int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit()) == [2, 4]
  reader = checkpoint.Checkpointer(str(tmp_path), read_only=True, best_metric="accuracy")
  assert (reader.best_step(), reader.latest_step()) == (2, 4)
  assert reader.metrics(2) == {"accuracy": 0.9}
  reader.close()


def test_predict_loads_the_best_evaluated_checkpoint(tiny_encoder, tfds_dir, tmp_path):
  config = small_config(
      tfds_dir,
      init_from=tiny_encoder,
      train_split="train[:128]",
      eval_split="validation[:64]",
      max_seq_length=32,
      batch_size=8,
      num_train_steps=8,
      learning_rate=3e-3,
      log_every=2,
      eval_every=2,
      checkpoint_every=2)
  dev = finetune.run(config, str(tmp_path))
  evaluations = [r for r in metrics_lib.read_metrics(str(tmp_path)) if r["split"] == "eval"]
  assert [r["step"] for r in evaluations] == [2, 4, 6, 8]
  best = max(reversed(evaluations), key=lambda r: r["accuracy"])  # the later of a tie
  predictor = predict.Predictor(str(tmp_path))
  assert predictor.step == best["step"]
  assert dev["accuracy"] == best["accuracy"]
  saved = finetune.checkpoints(str(tmp_path), catalog.get_task("sentiment"))
  assert (saved.best_step, saved.latest_step) == (best["step"], 8)


def test_patience_counts_evaluations_since_the_best():
  stop = finetune.patience_stopper("accuracy", 2, history=[0.5, float("nan")])
  assert [stop({"accuracy": a}) for a in (0.6, 0.6, 0.55, 0.7)] == [False, False, True, False]
  assert finetune.patience_stopper("accuracy", 0, history=[]) is None


def test_early_stopping_ends_the_run_and_its_rerun_trains_no_further(tiny_encoder, tfds_dir,
                                                                     tmp_path, capsys):
  # learning_rate 0: the weights never change, so no evaluation after the first is better.
  config = small_config(
      tfds_dir,
      init_from=tiny_encoder,
      train_split="train[:64]",
      eval_split="validation[:32]",
      max_seq_length=32,
      batch_size=8,
      num_train_steps=40,
      learning_rate=0.0,
      log_every=2,
      eval_every=2,
      checkpoint_every=2,
      early_stopping_patience=2)
  finetune.run(config, str(tmp_path))
  assert "Done: 6 steps (stopped early: no better dev accuracy in 2 evaluations)" in (
      capsys.readouterr().out)
  records = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in records if r["split"] == "eval"] == [2, 4, 6]
  assert records[-1] == {"step": 6, "split": "train", "early_stopped": True}
  saved = finetune.checkpoints(str(tmp_path), catalog.get_task("sentiment"))
  assert (saved.best_step, saved.latest_step) == (6, 6)  # equal scores: the later is kept
  finetune.run(config, str(tmp_path))  # the same command again: nothing more to train
  assert metrics_lib.read_metrics(str(tmp_path)) == records
  predictor = predict.Predictor(str(tmp_path))
  assert predictor.step == 6 and "stopped at step" not in capsys.readouterr().out


def test_a_negative_patience_is_one_line_before_anything_is_written(tfds_dir, tmp_path):
  config = small_config(tfds_dir, early_stopping_patience=-1)
  with pytest.raises(ValueError, match="early_stopping_patience=-1 is out of range; set it >= 0"):
    finetune.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_warmup_ratio_and_cosine_decay_shape_the_learning_rate(tfds_dir, tmp_path):
  config = small_config(
      tfds_dir, num_train_steps=100, learning_rate=1.0, warmup_ratio=0.1, final_lr_fraction=0.0)
  schedules = {}
  for decay in ("linear", "cosine"):
    config.lr_decay = decay
    schedules[decay] = steps.make_optimizer(config)[1]
  for schedule in schedules.values():  # warm-up over 10% of the 100 steps, then the decay
    assert [float(schedule(step)) for step in (5, 10, 100)] == pytest.approx([0.5, 1.0, 0.0])
  assert float(schedules["linear"](32)) == pytest.approx(1 - 22 / 90)
  assert float(schedules["cosine"](32)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 22 / 90)))
  config.update(num_train_steps=64, lr_decay="linear")  # 6.4 warm-up steps round up, as in HF
  assert [float(steps.make_optimizer(config)[1](step)) for step in (6, 7)
         ] == pytest.approx([6 / 7, 1])
  config.lr_decay = "step"
  with pytest.raises(ValueError, match="lr_decay='step' is not a schedule; use one of"):
    finetune.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_length_grouped_batches_hold_similar_lengths_and_cover_every_row():
  lengths = np.random.default_rng(0).integers(3, 120, size=800)  # (R,)
  grouped = finetune.train_indices(800, 16, seed=0, row_lengths=lengths, group_batches=10)
  plain = finetune.train_indices(800, 16, seed=0)
  epoch = [next(grouped) for _ in range(50)]  # 50 batches of 16: one pass over the 800 rows
  assert sorted(np.concatenate(epoch).tolist()) == list(range(800))
  spread = lambda batches: np.mean([np.ptp(lengths[b]) for b in batches])
  assert spread(epoch) < spread([next(plain) for _ in range(50)]) / 4


def test_evaluation_pads_each_batch_to_its_bucket_and_gives_the_full_padding_outputs(
    tiny_encoder, tfds_dir):
  config = small_config(tfds_dir, "pos", init_from=tiny_encoder, max_seq_length=64)
  task = catalog.get_task("pos")
  kind = kinds.get(task.kind)
  graphdef, encoder_params, tokenizer = finetune.load_encoder(config)
  rows, _ = finetune.encode_split(config, task, tokenizer, "validation[:40]", 12)
  hidden = finetune.nnx.merge(graphdef, encoder_params).cfg.hidden_size
  params = {
      "encoder": encoder_params,
      "head": kind.head.init(rng_lib.run_key(0, "head"), hidden, 12)
  }
  seen = []

  def step(params, batch):
    seen.append(batch["input_ids"].shape[1])
    return forward(params, batch, None), {"weight": np.float32(1)}

  forward = finetune.make_forward(graphdef, kind.head, 0.0)
  outputs, _ = finetune.run_model(step, params, rows.arrays, 8, token_outputs=True)
  assert max(seen) == 64 and min(seen) < 64  # shortest rows first, each batch to its bucket
  full = np.asarray(forward(params, {**rows.arrays, "example_weights": np.ones(40)}, None))
  assert outputs.shape == full.shape
  real = rows.arrays["attention_mask"] > 0
  np.testing.assert_allclose(outputs[real], full[real], atol=1e-4)


def test_gradient_accumulation_makes_the_whole_batchs_update(tiny_encoder, tfds_dir):
  config = small_config(
      tfds_dir,
      init_from=tiny_encoder,
      max_seq_length=32,
      dropout_rate=0.0,
      attention_dropout_rate=0.0)
  task = catalog.get_task("sentiment")
  kind = kinds.get(task.kind)
  graphdef, encoder_params, tokenizer = finetune.load_encoder(config)
  rows, _ = finetune.encode_split(config, task, tokenizer, "train[:16]", 2)
  batch = {key: value[:16] for key, value in rows.arrays.items()}
  batch["example_weights"] = np.ones(16, np.float32)
  hidden = finetune.nnx.merge(graphdef, encoder_params).cfg.hidden_size
  params = {
      "encoder": encoder_params,
      "head": kind.head.init(rng_lib.run_key(0, "head"), hidden, 2)
  }
  optimizer, _ = steps.make_optimizer(config)
  forward = finetune.make_forward(graphdef, kind.head, 0.0)
  updated = []
  for accumulation in (1, 4):
    train_step, _ = finetune.make_steps(forward, kind.head, optimizer, accumulation)
    fresh = steps.fresh_state(finetune.jax.tree.map(np.array, params), optimizer)  # a copy: donated
    state, _ = train_step(fresh, batch, rng_lib.run_key(0, "train"))
    updated.append(finetune.jax.tree.leaves(state.params))
  for one, accumulated in zip(*updated):
    np.testing.assert_allclose(one, accumulated, atol=2e-6)


def test_layer_wise_decay_scales_each_layers_update():
  params = {
      "encoder": {
          "token_embed": {
              "embedding": np.ones((4, 2))
          },
          "blocks": [{
              "mlp": {
                  "kernel": np.ones((2, 2))
              }
          }, {
              "mlp": {
                  "kernel": np.ones((2, 2))
              }
          }]
      },
      "head": {
          "kernel": np.ones((2, 2))
      }
  }
  scales = steps.layer_scales(params, 0.5)
  assert scales["head"]["kernel"] == 1.0
  assert [block["mlp"]["kernel"] for block in scales["encoder"]["blocks"]] == [0.25, 0.5]
  assert scales["encoder"]["token_embed"]["embedding"] == 0.125
  config = type(
      "Config", (),
      dict(
          num_train_steps=10,
          warmup_steps=0,
          learning_rate=0.1,
          final_lr_fraction=1.0,
          weight_decay=0.0,
          adam_b1=0.9,
          adam_b2=0.999,
          adam_eps=1e-8,
          max_grad_norm=1e9,
          layer_lr_decay=0.5))
  optimizer, _ = steps.make_optimizer(config)
  grads = finetune.jax.tree.map(np.ones_like, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["encoder"]["blocks"][0]["mlp"]["kernel"], -0.025, rtol=1e-4)
  np.testing.assert_allclose(updates["head"]["kernel"], -0.1, rtol=1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("grad_accumulation_steps", 5, "grad_accumulation_steps=5 does not divide batch_size=16"),
    ("doc_stride", 0, "doc_stride=0 is out of range; set it >= 1"),
    ("layer_lr_decay", 0.0, "layer_lr_decay=0.0 is out of range; set it > 0 and <= 1"),
    ("layer_lr_decay", 1.5, "layer_lr_decay=1.5 is out of range"),
])
def test_a_budget_that_cannot_work_is_one_line_before_anything_is_written(
    tfds_dir, tmp_path, field, value, message):
  config = small_config(tfds_dir, **{field: value})
  with pytest.raises(ValueError, match=message):
    finetune.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
