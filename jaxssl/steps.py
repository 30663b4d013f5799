"""Pure train and eval steps. State and batches are plain pytrees; the model is rebuilt from
its graph definition inside the loss (``nnx.merge``), so nothing here holds mutable state."""

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
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


def make_train_step(loss_fn, optimizer, accumulation_steps=1, prepare=None):
  """Returns ``train_step(state, batch, rng) -> (state, metric sums)`` for any objective.

  ``loss_fn(params, batch, rng) -> (loss, sums)``. ``rng`` is the run's base key: each step
  folds in its step number, so masks, dropout and hence a resumed run are fixed by
  (seed, step) alone. ``prepare(batch, rng) -> (batch, rng)``, if given, first does the work
  that must see the whole batch (BERT's masking, the loss normalisers).

  With ``accumulation_steps`` k > 1 the batch is cut into k micro-batches whose gradients and
  sums are added up before one update, so only a micro-batch's activations are alive at a
  time. The update is the whole batch's when ``loss_fn`` adds up over rows (as the
  pretraining losses do: their weights are normalised over the whole batch in ``prepare``);
  only dropout masks differ, being drawn per micro-batch.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def gradients(params, batch, rng):
    if accumulation_steps == 1:
      return grad_fn(params, batch, rng)
    micro_batches = jax.tree.map(lambda rows: micro_batch_rows(rows, accumulation_steps), batch)

    def accumulate(totals, inputs):
      micro_batch, index = inputs
      grads_and_sums = grad_fn(params, micro_batch, jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, totals, grads_and_sums), None

    first = jax.tree.map(lambda rows: rows[0], micro_batches)
    zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype),
                         jax.eval_shape(grad_fn, params, first, rng))
    totals, _ = jax.lax.scan(accumulate, zeros, (micro_batches, jnp.arange(accumulation_steps)))
    return totals

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    if prepare is not None:
      batch, rng = prepare(batch, rng)
    grads, sums = gradients(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    sums["grad_norm"] = optax.tree.norm(grads)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), sums

  return train_step


def micro_batch_rows(rows, count):
  """(B, ...) -> (count, B / count, ...), micro-batch i holding rows i, i + count, ...

  Strided rather than contiguous: a batch sharded over devices by rows keeps every device's
  share of each micro-batch on that device (when count divides the rows per device).
  """
  return rows.reshape(rows.shape[0] // count, count, *rows.shape[1:]).swapaxes(0, 1)


def normalised(weights):
  """Loss weights: ``weights`` over their total in the whole batch, so a loss weighted by them
  is the whole batch's mean and adds up over micro-batches."""
  return weights / jnp.maximum(jnp.sum(weights), 1.0)


def weighted_loss(logits, labels, loss_weights):
  loss_sum, _, _ = objectives.classification_sums(logits, labels, loss_weights)
  return loss_sum


def mask_batch(batch, rng, config, special):
  """The batch plus BERT's masking drawn with ``rng``: ``masked_input_ids`` (B, T),
  ``masked_positions``, ``masked_labels`` and ``mlm_weights`` (B, P; 0 on padding rows)."""
  masked_ids, positions, labels, weights = objectives.mask_tokens(
      rng,
      batch["input_ids"],
      special_ids=special["special_ids"],
      vocab_size=special["vocab_size"],
      first_regular_id=special["first_regular_id"],
      mask_id=special["mask_id"],
      max_predictions=config.max_predictions_per_seq,
      mask_prob=config.mask_prob)
  return {
      **batch, "masked_input_ids": masked_ids,
      "masked_positions": positions,
      "masked_labels": labels,
      "mlm_weights": weights * batch["example_weights"][:, None]
  }


def bert_outputs(graphdef, params, batch, pad_id, dropout_rng=None):
  """The pretraining model's outputs on a masked batch (``mask_batch``)."""
  model = nnx.merge(graphdef, params)
  return model(batch["masked_input_ids"], batch["segment_ids"], batch["input_ids"] != pad_id,
               batch["masked_positions"], dropout_rng)


def bert_sums(outputs, batch):
  """Summed MLM and NSP loss/accuracy terms of one masked batch."""
  mlm_loss, mlm_correct, mlm_count = objectives.classification_sums(outputs["mlm_logits"],
                                                                    batch["masked_labels"],
                                                                    batch["mlm_weights"])
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


def make_bert_train_step(graphdef, optimizer, config, special, accumulation_steps=1):
  """The MLM (+ NSP when ``config.nsp``) train step; see ``make_train_step``."""

  def prepare(batch, rng):
    mask_rng, dropout_rng = jax.random.split(rng)
    batch = mask_batch(batch, mask_rng, config, special)
    return {
        **batch, "mlm_loss_weights": normalised(batch["mlm_weights"]),
        "nsp_loss_weights": normalised(batch["example_weights"])
    }, dropout_rng

  def loss_fn(params, batch, rng):
    outputs = bert_outputs(graphdef, params, batch, special["pad_id"], rng)
    loss = weighted_loss(outputs["mlm_logits"], batch["masked_labels"], batch["mlm_loss_weights"])
    if config.nsp:
      loss += weighted_loss(outputs["nsp_logits"], batch["next_sentence_labels"],
                            batch["nsp_loss_weights"])
    return loss, bert_sums(outputs, batch)

  return make_train_step(loss_fn, optimizer, accumulation_steps, prepare)


def make_bert_eval_step(graphdef, config, special):
  """Returns ``eval_step(params, batch, rng) -> metric sums`` with no dropout.

  Callers pass a fixed ``rng`` per eval batch so every evaluation masks the same tokens.
  """

  def eval_step(params, batch, rng):
    batch = mask_batch(batch, rng, config, special)
    return bert_sums(bert_outputs(graphdef, params, batch, special["pad_id"]), batch)

  return eval_step


def gpt_logits(graphdef, params, batch, dropout_rng=None):
  """(B, T, V) next-token logits of packed rows."""
  model = nnx.merge(graphdef, params)
  logits, _ = model(
      batch["input_ids"], batch["positions"], batch["segment_ids"], dropout_rng=dropout_rng)
  return logits  # (B, T, V)


def gpt_weights(batch):
  return batch["target_weights"] * batch["example_weights"][:, None]  # (B, T)


def gpt_sums(logits, batch):
  """Summed next-token loss/accuracy over the weighted targets of packed rows."""
  loss, correct, count = objectives.classification_sums(logits, batch["target_ids"],
                                                        gpt_weights(batch))
  return dict(lm_loss_sum=loss, lm_correct=correct, lm_count=count)


def make_gpt_train_step(graphdef, optimizer, accumulation_steps=1):
  """The next-token prediction train step; see ``make_train_step``."""

  def prepare(batch, rng):
    return {**batch, "lm_loss_weights": normalised(gpt_weights(batch))}, rng

  def loss_fn(params, batch, rng):
    logits = gpt_logits(graphdef, params, batch, rng)
    loss = weighted_loss(logits, batch["target_ids"], batch["lm_loss_weights"])
    return loss, gpt_sums(logits, batch)

  return make_train_step(loss_fn, optimizer, accumulation_steps, prepare)


def make_gpt_eval_step(graphdef):

  def eval_step(params, batch, rng):
    del rng  # nothing random at evaluation
    return gpt_sums(gpt_logits(graphdef, params, batch), batch)

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
