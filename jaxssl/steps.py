"""Pure train and eval steps. State and batches are plain pytrees; the model is rebuilt from
its graph definition inside the loss (``nnx.merge``), so nothing here holds mutable state."""

import math
from typing import Any

import flax.struct
import jax
import optax
from flax import nnx

from jaxssl import objectives


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # () int32, number of updates applied
  params: Any  # nnx.State of the model's Params
  opt_state: Any  # optax state mirroring ``params``


def make_optimizer(config):
  """AdamW with linear warm-up then linear decay (BERT's schedule) and global-norm clipping.

  Weight decay skips biases and LayerNorm parameters: exactly the parameters with one axis.
  """
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps),
      optax.linear_schedule(config.learning_rate, config.learning_rate * config.final_lr_fraction,
                            max(config.num_train_steps - config.warmup_steps, 1)),
  ],
                                  boundaries=[config.warmup_steps])
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(
          schedule,
          b1=config.adam_b1,
          b2=config.adam_b2,
          eps=config.adam_eps,
          weight_decay=config.weight_decay,
          mask=decay_mask),
  ), schedule


def make_train_step(loss_fn, optimizer):
  """Returns ``train_step(state, batch, rng) -> (state, metric sums)`` for any objective.

  ``loss_fn(params, batch, rng) -> (loss, sums)``. ``rng`` is the run's base key: each step
  folds in its step number, so masks, dropout and hence a resumed run are fixed by
  (seed, step) alone.
  """

  def train_step(state, batch, rng):
    grads, sums = jax.grad(
        loss_fn, has_aux=True)(state.params, batch, jax.random.fold_in(rng, state.step))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    sums["grad_norm"] = optax.tree.norm(grads)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), sums

  return train_step


def _bert_outputs(graphdef, params, batch, rng, config, special, dropout_rng):
  """Masks the batch with ``rng`` and runs the pretraining model; returns (outputs, masking)."""
  masked_ids, positions, labels, weights = objectives.mask_tokens(
      rng,
      batch["input_ids"],
      special_ids=special["special_ids"],
      vocab_size=special["vocab_size"],
      first_regular_id=special["first_regular_id"],
      mask_id=special["mask_id"],
      max_predictions=config.max_predictions_per_seq,
      mask_prob=config.mask_prob)
  weights = weights * batch["example_weights"][:, None]
  model = nnx.merge(graphdef, params)
  outputs = model(masked_ids, batch["segment_ids"], batch["input_ids"] != special["pad_id"],
                  positions, dropout_rng)
  return outputs, (labels, weights)


def bert_sums(outputs, labels, weights, batch):
  """Summed MLM and NSP loss/accuracy terms of one batch."""
  mlm_loss, mlm_correct, mlm_count = objectives.classification_sums(outputs["mlm_logits"], labels,
                                                                    weights)
  nsp_loss, nsp_correct, nsp_count = objectives.classification_sums(outputs["nsp_logits"],
                                                                    batch["next_sentence_labels"],
                                                                    batch["example_weights"])
  return dict(
      mlm_loss_sum=mlm_loss,
      mlm_correct=mlm_correct,
      mlm_count=mlm_count,
      nsp_loss_sum=nsp_loss,
      nsp_correct=nsp_correct,
      nsp_count=nsp_count)


def make_bert_train_step(graphdef, optimizer, config, special):
  """The MLM (+ NSP when ``config.nsp``) train step; see ``make_train_step``."""

  def loss_fn(params, batch, rng):
    mask_rng, dropout_rng = jax.random.split(rng)
    outputs, (labels, weights) = _bert_outputs(graphdef, params, batch, mask_rng, config, special,
                                               dropout_rng)
    sums = bert_sums(outputs, labels, weights, batch)
    loss = objectives.mean_from_sums(sums["mlm_loss_sum"], sums["mlm_count"])
    if config.nsp:
      loss += objectives.mean_from_sums(sums["nsp_loss_sum"], sums["nsp_count"])
    return loss, sums

  return make_train_step(loss_fn, optimizer)


def make_bert_eval_step(graphdef, config, special):
  """Returns ``eval_step(params, batch, rng) -> metric sums`` with no dropout.

  Callers pass a fixed ``rng`` per eval batch so every evaluation masks the same tokens.
  """

  def eval_step(params, batch, rng):
    outputs, (labels, weights) = _bert_outputs(graphdef, params, batch, rng, config, special, None)
    return bert_sums(outputs, labels, weights, batch)

  return eval_step


def gpt_sums(graphdef, params, batch, dropout_rng=None):
  """Summed next-token loss/accuracy over the weighted targets of packed rows."""
  model = nnx.merge(graphdef, params)
  logits, _ = model(
      batch["input_ids"], batch["positions"], batch["segment_ids"],
      dropout_rng=dropout_rng)  # (B, T, V)
  weights = batch["target_weights"] * batch["example_weights"][:, None]
  loss, correct, count = objectives.classification_sums(logits, batch["target_ids"], weights)
  return dict(lm_loss_sum=loss, lm_correct=correct, lm_count=count)


def make_gpt_train_step(graphdef, optimizer):
  """The next-token prediction train step; see ``make_train_step``."""

  def loss_fn(params, batch, rng):
    sums = gpt_sums(graphdef, params, batch, rng)
    return objectives.mean_from_sums(sums["lm_loss_sum"], sums["lm_count"]), sums

  return make_train_step(loss_fn, optimizer)


def make_gpt_eval_step(graphdef):

  def eval_step(params, batch, rng):
    del rng  # nothing random at evaluation
    return gpt_sums(graphdef, params, batch)

  return eval_step


def summarize(sums, num_steps=1):
  """Host-side means from sums accumulated over ``num_steps`` steps (the logged metrics)."""
  metrics = {}
  for name in ("mlm", "nsp", "lm"):
    if f"{name}_loss_sum" in sums:
      count = max(float(sums[f"{name}_count"]), 1.0)
      metrics[f"{name}_loss"] = float(sums[f"{name}_loss_sum"]) / count
      metrics[f"{name}_accuracy"] = float(sums[f"{name}_correct"]) / count
      if name != "nsp":
        metrics[f"{name}_perplexity"] = math.exp(metrics[f"{name}_loss"])
  if "grad_norm" in sums:
    metrics["grad_norm"] = float(sums["grad_norm"]) / num_steps
  return metrics
