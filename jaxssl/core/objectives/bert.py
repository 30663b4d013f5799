"""The BERT objective: masked-language modelling on sentence pairs (80/10/10 masking), plus
next-sentence prediction from [CLS] when ``config.nsp``.

Owns everything that differs for BERT: the model, its batches, the train and eval steps, the
metrics and the baseline the run is judged against.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.core import flops
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core.objectives import losses
from jaxssl.data import batching
from jaxssl.data import pretraining
from jaxssl.models import bert


def mask_tokens(rng,
                input_ids,
                *,
                special_ids,
                vocab_size,
                first_regular_id,
                mask_id,
                max_predictions,
                mask_prob=0.15):
  """Chooses and corrupts the tokens to predict, as in BERT, independently for every call.

  Per row, ``round(mask_prob * real_tokens)`` positions (at least 1, at most
  ``max_predictions``) are drawn uniformly among non-special tokens. Of those, 80% become
  [MASK], 10% a random regular token, 10% stay unchanged.

  input_ids: (B, T) int32. Returns (masked_input_ids (B, T), masked_positions (B, P),
  masked_labels (B, P), masked_weights (B, P) float32 with 1 on real predictions), P =
  max_predictions.
  """
  choose_rng, action_rng, random_token_rng = jax.random.split(rng, 3)
  is_special = jnp.isin(input_ids, jnp.asarray(special_ids))  # (B, T)
  real_tokens = jnp.sum(input_ids != special_ids[0], axis=1)  # special_ids[0] is [PAD]
  num_candidates = jnp.sum(~is_special, axis=1)
  num_to_predict = jnp.clip(
      jnp.round(real_tokens * mask_prob).astype(jnp.int32), 1, max_predictions)
  num_to_predict = jnp.minimum(num_to_predict, num_candidates)  # (B,)

  # A random score per token, candidates first: the top P are a uniform random subset.
  scores = jax.random.uniform(choose_rng, input_ids.shape) + jnp.where(is_special, -2.0, 0.0)
  _, masked_positions = jax.lax.top_k(scores, max_predictions)  # (B, P)
  slots = jnp.arange(max_predictions)[None, :]
  masked_weights = (slots < num_to_predict[:, None]).astype(jnp.float32)  # (B, P)
  masked_labels = jnp.take_along_axis(input_ids, masked_positions, axis=1)  # (B, P)

  action = jax.random.uniform(action_rng, masked_positions.shape)
  random_tokens = jax.random.randint(random_token_rng, masked_positions.shape, first_regular_id,
                                     vocab_size, input_ids.dtype)
  replacement = jnp.where(action < 0.8, mask_id,
                          jnp.where(action < 0.9, random_tokens, masked_labels))
  replacement = jnp.where(masked_weights > 0, replacement, masked_labels)
  rows = jnp.arange(input_ids.shape[0])[:, None]
  masked_input_ids = input_ids.at[rows, masked_positions].set(replacement)
  return masked_input_ids, masked_positions.astype(jnp.int32), masked_labels, masked_weights


def mask_batch(batch, rng, config, special):
  """The batch plus BERT's masking drawn with ``rng``: ``masked_input_ids`` (B, T),
  ``masked_positions``, ``masked_labels`` and ``mlm_weights`` (B, P; 0 on padding rows)."""
  masked_ids, positions, labels, weights = mask_tokens(
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


def model_outputs(graphdef, params, batch, pad_id, dropout_rng=None):
  """The pretraining model's outputs on a masked batch (``mask_batch``)."""
  model = nnx.merge(graphdef, params)
  return model(batch["masked_input_ids"], batch["segment_ids"], batch["input_ids"] != pad_id,
               batch["masked_positions"], dropout_rng)


def metric_sums(outputs, batch):
  """Summed MLM and NSP loss/accuracy terms of one masked batch."""
  mlm_loss, mlm_correct, mlm_count = losses.classification_sums(outputs["mlm_logits"],
                                                                batch["masked_labels"],
                                                                batch["mlm_weights"])
  nsp_loss, nsp_correct, nsp_count = losses.classification_sums(outputs["nsp_logits"],
                                                                batch["next_sentence_labels"],
                                                                batch["example_weights"])
  return dict(
      mlm_loss_sum=mlm_loss,
      mlm_correct=mlm_correct,
      mlm_count=mlm_count,
      nsp_loss_sum=nsp_loss,
      nsp_correct=nsp_correct,
      nsp_count=nsp_count)


def special_ids(tokenizer):
  """The token ids masking needs, read from the run's tokenizer."""
  return dict(
      special_ids=(tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id),
      vocab_size=tokenizer.vocab_size,
      first_regular_id=tokenizer.num_special,
      mask_id=tokenizer.mask_id,
      pad_id=tokenizer.pad_id)


def make_train_step(graphdef, optimizer, config, special, accumulation_steps=1):
  """The MLM (+ NSP when ``config.nsp``) train step; see ``steps.make_train_step``."""

  def prepare(batch, rng):
    batch = mask_batch(batch, rng_lib.stream(rng, "masking"), config, special)
    return {
        **batch, "mlm_loss_weights": losses.normalised(batch["mlm_weights"]),
        "nsp_loss_weights": losses.normalised(batch["example_weights"])
    }, rng_lib.stream(rng, "dropout")

  def loss_fn(params, batch, rng):
    outputs = model_outputs(graphdef, params, batch, special["pad_id"], rng)
    loss = losses.weighted_loss(outputs["mlm_logits"], batch["masked_labels"],
                                batch["mlm_loss_weights"])
    if config.nsp:
      loss += losses.weighted_loss(outputs["nsp_logits"], batch["next_sentence_labels"],
                                   batch["nsp_loss_weights"])
    return loss, metric_sums(outputs, batch)

  return steps.make_train_step(loss_fn, optimizer, accumulation_steps, prepare)


def make_eval_step(graphdef, config, special):
  """Returns ``eval_step(params, batch, rng) -> metric sums`` with no dropout.

  Callers pass a fixed ``rng`` per eval batch so every evaluation masks the same tokens.
  """

  def eval_step(params, batch, rng):
    batch = mask_batch(batch, rng, config, special)
    return metric_sums(model_outputs(graphdef, params, batch, special["pad_id"]), batch)

  return eval_step


class Objective:
  """Masked-language modelling on sentence pairs, plus next-sentence prediction if config.nsp."""

  name = "bert"
  progress_metric = "mlm_loss"
  model_config_class = bert.BertConfig
  # A published checkpoint (init_from) holds the encoder: its tensors live under this prefix.
  checkpoint_prefix = ("encoder",)

  def __init__(self, config, model_config=None):
    self.config = config
    self.model_config = model_config or bert.BertConfig.from_dict({
        **config.model.to_dict(), "vocab_size": config.vocab_size
    })

  def check(self):
    config = self.config
    if not 0 < config.max_predictions_per_seq <= config.max_seq_length:
      raise ValueError(f"max_predictions_per_seq={config.max_predictions_per_seq} must be in "
                       f"1..max_seq_length={config.max_seq_length}.")

  def make_model(self, rngs):
    return bert.BertForPretraining(self.model_config, rngs)

  def batches(self, tokenizer, train_documents, eval_documents, processes):
    """Endless shuffled training pairs (checkpointable) and a fixed list of eval batches."""
    config = self.config
    pair_options = dict(
        max_seq_length=config.max_seq_length,
        short_seq_prob=config.short_seq_prob,
        random_next_prob=0.5 if config.nsp else 0.0,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        pad_id=tokenizer.pad_id)
    window = config.get("window_documents", batching.DEFAULT_WINDOW_DOCUMENTS)
    train = pretraining.pair_batches(
        train_documents,
        batch_size=config.batch_size,
        seed=config.seed,
        window_documents=window,
        **processes,
        **pair_options)
    evaluation = pretraining.fixed_pair_batches(
        batching.first_documents(eval_documents, window),
        batch_size=config.batch_size,
        seed=config.seed + 1,
        num_batches=config.eval_batches,
        **processes,
        **pair_options)
    return train, evaluation

  def flops_per_token(self):
    """Model FLOPs of a train step per token (``jaxssl.core.flops``): the encoder, and the MLM
    head at the max_predictions_per_seq positions it scores per row."""
    cfg, config = self.model_config, self.config
    return (flops.blocks_flops_per_token(cfg, config.max_seq_length) + flops.output_flops_per_token(
        cfg.hidden_size, cfg.vocab_size, config.max_predictions_per_seq / config.max_seq_length))

  @staticmethod
  def real_tokens(batch, tokenizer):
    """Non-padding tokens of a host batch's real rows (what throughput counts)."""
    real = (batch["input_ids"] != tokenizer.pad_id) * (batch["example_weights"][:, None] > 0)
    return int(real.sum())

  def steps(self, graphdef, optimizer, tokenizer):
    special = special_ids(tokenizer)
    return (make_train_step(graphdef, optimizer, self.config, special,
                            self.config.grad_accumulation_steps),
            make_eval_step(graphdef, self.config, special))

  @staticmethod
  def encoder_outputs(graphdef):
    """``encode(params, batch) -> (B, T, D)``: the encoder's last layer without dropout, on a
    batch of ``input_ids``, ``segment_ids`` and ``attention_mask`` (what probes read)."""

    def encode(params, batch):
      encoder = nnx.merge(graphdef, params).encoder
      sequence, _ = encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"] > 0)
      return sequence

    return encode

  def summarize(self, sums, num_steps=1):
    """Host-side means of the step's sums (the logged metrics); with NSP off, none of the NSP
    head's, which is then neither trained nor given a real pair to judge."""
    terms = ("mlm", "nsp") if self.config.nsp else ("mlm",)
    metrics = losses.summarize_terms(sums, terms, perplexity=("mlm",))
    return steps.with_grad_norm(metrics, sums, num_steps)

  def baseline(self, eval_batches, train_corpus, tokenizer):
    """MLM accuracy of always predicting the most frequent training token, and a line saying so.

    Masked positions are drawn uniformly among non-special tokens, so the expected accuracy is
    that token's share of the evaluation's non-special tokens. ``train_corpus`` is a
    ``prepared.PreparedCorpus`` (its unigram counts are read, not its documents).
    """
    most_frequent = int(np.argmax(pretraining.content_counts(train_corpus, tokenizer)))
    ids = np.concatenate([b["input_ids"][b["example_weights"] > 0].ravel() for b in eval_batches])
    regular = ids[ids >= tokenizer.num_special]
    accuracy = float(np.mean(regular == most_frequent))
    return steps.Baseline({"unigram_mlm_accuracy": accuracy},
                          f"always {tokenizer.id_to_piece(most_frequent)!r}")

  @staticmethod
  def summary(metrics, baseline):
    nsp = f", nsp_accuracy={metrics['nsp_accuracy']:.4f}" if "nsp_accuracy" in metrics else ""
    return (f"eval mlm_accuracy={metrics['mlm_accuracy']:.4f} (unigram baseline "
            f"{metrics['unigram_mlm_accuracy']:.4f}, {baseline.description}), "
            f"mlm_perplexity={metrics['mlm_perplexity']:.1f}{nsp}")
