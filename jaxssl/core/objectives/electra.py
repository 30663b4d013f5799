"""The ELECTRA objective (Clark et al., 2020): replaced-token detection.

BERT's masking picks 15% of the tokens; a narrow generator (``jaxssl.models.electra``) learns
MLM there and samples a token for each; the discriminator then labels every token of the
corrupted text original or replaced. The loss is the generator's MLM loss plus
``discriminator_weight`` (50) times the discriminator's mean binary cross-entropy over all real
tokens, so every token teaches the encoder fine-tuning keeps, not only the 15% masked ones.
No gradient flows through the sampling. Sentence pairs are BERT's without NSP.
"""

import jax
import jax.numpy as jnp
import optax

from flax import nnx

from jaxssl.core import flops
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.core.objectives import losses
from jaxssl.models import electra


def corrupted(batch, generator_logits, rng):
  """(input_ids with the generator's samples at the masked positions (B, T), replaced (B, T)
  float32: 1 where a token differs from the original). Sampling is not differentiated."""
  sampled = jax.random.categorical(rng, jax.lax.stop_gradient(generator_logits))  # (B, P)
  sampled = jnp.where(batch["mlm_weights"] > 0, sampled, batch["masked_labels"])
  rows = jnp.arange(sampled.shape[0])[:, None]
  ids = batch["input_ids"].at[rows, batch["masked_positions"]].set(sampled)  # (B, T)
  return ids, (ids != batch["input_ids"]).astype(jnp.float32)


def token_weights(batch, pad_id):
  """(B, T) float32: 1 on the real tokens of real rows, which the discriminator is scored on."""
  return (batch["input_ids"] != pad_id) * batch["example_weights"][:, None]


def losses_and_sums(graphdef, params, batch, pad_id, rng, dropout_rng=None):
  """(generator MLM loss, discriminator loss, metric sums) of a masked batch whose loss weights
  ``prepare`` normalised; ``rng`` draws the generator's samples."""
  model = nnx.merge(graphdef, params)
  attention = batch["input_ids"] != pad_id
  generator_rng, discriminator_rng = (
      None, None) if dropout_rng is None else jax.random.split(dropout_rng)
  generated = model.generator(batch["masked_input_ids"], batch["segment_ids"], attention,
                              batch["masked_positions"], generator_rng)
  ids, replaced = corrupted(batch, generated["mlm_logits"], rng)
  logits = model.discriminate(ids, batch["segment_ids"], attention, discriminator_rng)  # (B, T)
  token_losses = optax.sigmoid_binary_cross_entropy(logits, replaced)  # (B, T)
  weights = batch["rtd_weights"]
  mlm_loss, mlm_correct, mlm_count = losses.classification_sums(generated["mlm_logits"],
                                                                batch["masked_labels"],
                                                                batch["mlm_weights"])
  sums = dict(
      mlm_loss_sum=mlm_loss,
      mlm_correct=mlm_correct,
      mlm_count=mlm_count,
      rtd_loss_sum=jnp.sum(token_losses * weights),
      rtd_correct=jnp.sum(((logits > 0) == (replaced > 0)) * weights),
      rtd_count=jnp.sum(weights),
      rtd_replaced=jnp.sum(replaced * weights))
  return (losses.weighted_loss(generated["mlm_logits"], batch["masked_labels"],
                               batch["mlm_loss_weights"]),
          jnp.sum(token_losses * batch["rtd_loss_weights"]), sums)


class Objective(bert_objective.Objective):
  """Replaced-token detection with a generator ``generator_size`` times the encoder's width."""

  name = "electra"
  progress_metric = "rtd_loss"

  def check(self):
    super().check()
    if self.config.nsp:
      raise ValueError("nsp=True: ELECTRA has no next-sentence prediction; set nsp=False.")

  def make_model(self, rngs):
    cfg = self.model_config
    return electra.ElectraForPretraining(cfg,
                                         electra.generator_config(cfg, self.config.generator_size),
                                         rngs)

  def flops_per_token(self):
    """Model FLOPs of a train step per token (``jaxssl.core.flops``): the discriminator with its
    per-token head (a (d, d) transform and one logit), and the generator with its MLM head at
    the masked positions."""
    cfg, config = self.model_config, self.config
    generator = electra.generator_config(cfg, config.generator_size)
    return (flops.blocks_flops_per_token(cfg, config.max_seq_length) +
            flops.output_flops_per_token(cfg.hidden_size, 1, 1) +
            flops.blocks_flops_per_token(generator, config.max_seq_length) +
            flops.output_flops_per_token(generator.hidden_size, cfg.vocab_size,
                                         config.max_predictions_per_seq / config.max_seq_length))

  def steps(self, graphdef, optimizer, tokenizer):
    config, special = self.config, bert_objective.special_ids(tokenizer)
    pad_id = special["pad_id"]

    def prepare(batch, rng):
      batch = bert_objective.mask_batch(batch, rng_lib.stream(rng, "masking"), config, special)
      rtd_weights = token_weights(batch, pad_id)
      return {
          **batch, "rtd_weights": rtd_weights,
          "mlm_loss_weights": losses.normalised(batch["mlm_weights"]),
          "rtd_loss_weights": losses.normalised(rtd_weights)
      }, rng

    def loss_fn(params, batch, rng):
      mlm_loss, rtd_loss, sums = losses_and_sums(graphdef, params, batch, pad_id,
                                                 rng_lib.stream(rng, "sampling"),
                                                 rng_lib.stream(rng, "dropout"))
      return mlm_loss + config.discriminator_weight * rtd_loss, sums

    def eval_step(params, batch, rng):
      batch, _ = prepare(batch, rng)
      return losses_and_sums(graphdef, params, batch, pad_id, rng_lib.stream(rng, "sampling"))[2]

    return (steps.make_train_step(loss_fn, optimizer, config.grad_accumulation_steps,
                                  prepare), eval_step)

  @staticmethod
  def summarize(sums, num_steps=1):
    """Host-side means: the generator's ``mlm_*``, the discriminator's ``rtd_*``, and
    ``replaced_share``, the share of tokens the generator changed (always answering
    'original' scores 1 minus it)."""
    metrics = losses.summarize_terms(sums, ("mlm", "rtd"), perplexity=("mlm",))
    metrics["replaced_share"] = float(sums["rtd_replaced"]) / max(float(sums["rtd_count"]), 1.0)
    return steps.with_grad_norm(metrics, sums, num_steps)

  @staticmethod
  def summary(metrics, baseline):
    return (f"eval rtd_accuracy={metrics['rtd_accuracy']:.4f} (always 'original': "
            f"{1 - metrics['replaced_share']:.4f}), generator mlm_accuracy="
            f"{metrics['mlm_accuracy']:.4f} (unigram baseline "
            f"{metrics['unigram_mlm_accuracy']:.4f}, {baseline.description})")
