"""The GPT objective: next-token prediction on documents packed into full rows.

Owns everything that differs for GPT: the model, its batches, the train and eval steps, the
metrics and the baseline the run is judged against.
"""

import numpy as np
from flax import nnx

from jaxssl.core import flops
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core.objectives import losses
from jaxssl.data import batching
from jaxssl.data import packing
from jaxssl.data import pretraining
from jaxssl.models import gpt


def model_logits(graphdef, params, batch, dropout_rng=None):
  """(B, T, V) next-token logits of packed rows."""
  model = nnx.merge(graphdef, params)
  logits, _ = model(
      batch["input_ids"], batch["positions"], batch["segment_ids"], dropout_rng=dropout_rng)
  return logits  # (B, T, V)


def target_weights(batch):
  return batch["target_weights"] * batch["example_weights"][:, None]  # (B, T)


def metric_sums(logits, batch):
  """Summed next-token loss/accuracy over the weighted targets of packed rows."""
  loss, correct, count = losses.classification_sums(logits, batch["target_ids"],
                                                    target_weights(batch))
  return dict(lm_loss_sum=loss, lm_correct=correct, lm_count=count)


def make_train_step(graphdef, optimizer, accumulation_steps=1):
  """The next-token prediction train step; see ``steps.make_train_step``."""

  def prepare(batch, rng):
    return {
        **batch, "lm_loss_weights": losses.normalised(target_weights(batch))
    }, rng_lib.stream(rng, "dropout")

  def loss_fn(params, batch, rng):
    logits = model_logits(graphdef, params, batch, rng)
    loss = losses.weighted_loss(logits, batch["target_ids"], batch["lm_loss_weights"])
    return loss, metric_sums(logits, batch)

  return steps.make_train_step(loss_fn, optimizer, accumulation_steps, prepare)


def make_eval_step(graphdef):

  def eval_step(params, batch, rng):
    del rng  # nothing random at evaluation
    return metric_sums(model_logits(graphdef, params, batch), batch)

  return eval_step


class Objective:
  """Next-token prediction on documents packed into full rows."""

  name = "gpt"
  progress_metric = "lm_loss"
  model_config_class = gpt.GPTConfig
  checkpoint_prefix = ()  # a published decoder is the whole model

  def __init__(self, config, model_config=None):
    self.config = config
    self.model_config = model_config or gpt.GPTConfig.from_dict({
        **config.model.to_dict(), "vocab_size": config.vocab_size
    })

  def check(self):
    pass  # max_seq_length against the position table is checked for every objective

  def make_model(self, rngs):
    return gpt.GPT(self.model_config, rngs)

  def batches(self, tokenizer, train_documents, eval_documents, processes):
    """Endless shuffled packed rows (checkpointable) and a fixed list of eval batches."""
    config = self.config
    options = dict(max_seq_length=config.max_seq_length, separator_id=tokenizer.sep_id)
    window = config.get("window_documents", batching.DEFAULT_WINDOW_DOCUMENTS)
    train = packing.packed_batches(
        train_documents,
        batch_size=config.batch_size,
        seed=config.seed,
        window_documents=window,
        **processes,
        **options)
    evaluation = packing.fixed_packed_batches(
        packing.flatten_documents(batching.first_documents(eval_documents, window)),
        batch_size=config.batch_size,
        seed=config.seed + 1,
        pad_id=tokenizer.pad_id,
        num_batches=config.eval_batches,
        **processes,
        **options)
    return train, evaluation

  def flops_per_token(self):
    """Model FLOPs of a train step per token (``jaxssl.core.flops``): the decoder and its
    vocabulary projection at every position."""
    cfg = self.model_config
    return (flops.blocks_flops_per_token(cfg, self.config.max_seq_length) +
            flops.output_flops_per_token(cfg.hidden_size, cfg.vocab_size, 1, transform=False))

  @staticmethod
  def real_tokens(batch, tokenizer):
    """Tokens of a host batch's real rows: packed rows hold no padding."""
    del tokenizer
    return int((batch["example_weights"] > 0).sum()) * batch["input_ids"].shape[1]

  def steps(self, graphdef, optimizer, tokenizer):
    del tokenizer  # next-token prediction needs no special ids
    return (make_train_step(graphdef, optimizer,
                            self.config.grad_accumulation_steps), make_eval_step(graphdef))

  @staticmethod
  def summarize(sums, num_steps=1):
    """Host-side means of the step's sums (the logged metrics)."""
    metrics = losses.summarize_terms(sums, ("lm",), perplexity=("lm",))
    return steps.with_grad_norm(metrics, sums, num_steps)

  def baseline(self, eval_batches, train_corpus, tokenizer):
    """Perplexity of the training unigram distribution (add-one smoothed) on the eval targets;
    ``train_corpus`` is a ``prepared.PreparedCorpus`` (its unigram counts are read)."""
    counts = pretraining.content_counts(train_corpus, tokenizer).astype(np.float64)
    counts[tokenizer.sep_id] = len(train_corpus)  # one separator after each document
    log_probs = np.log((counts + 1) / (counts + 1).sum())
    targets = np.concatenate([b["target_ids"][b["target_weights"] > 0] for b in eval_batches])
    return steps.Baseline({"unigram_perplexity": float(np.exp(-log_probs[targets].mean()))},
                          "add-one smoothed training unigrams")

  @staticmethod
  def summary(metrics, baseline):
    del baseline  # its one figure is in the metrics
    return (f"eval lm_perplexity={metrics['lm_perplexity']:.1f} (unigram perplexity "
            f"{metrics['unigram_perplexity']:.1f}), lm_accuracy={metrics['lm_accuracy']:.4f}")
