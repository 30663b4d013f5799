"""What differs between pretraining objectives: model, examples, steps, baseline, summary.

``train.run`` is the same loop for every family; ``config.objective`` picks one of FAMILIES.
"""

import numpy as np

from jaxssl import steps
from jaxssl.data import packing
from jaxssl.data import pretraining
from jaxssl.models import bert
from jaxssl.models import gpt


def token_counts(documents, tokenizer):
  """Training-token frequencies (sentence-split token documents), specials zeroed."""
  counts = np.bincount(
      np.concatenate([np.concatenate(doc) for doc in documents]), minlength=tokenizer.vocab_size)
  counts[:tokenizer.num_special] = 0
  return counts


class Bert:
  """Masked-language modelling on sentence pairs, plus next-sentence prediction if config.nsp."""

  progress_metric = "mlm_loss"
  model_config_class = bert.BertConfig

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
    config = self.config
    pair_options = dict(
        max_seq_length=config.max_seq_length,
        short_seq_prob=config.short_seq_prob,
        random_next_prob=0.5 if config.nsp else 0.0,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        pad_id=tokenizer.pad_id)
    train = pretraining.pair_batches(
        train_documents,
        batch_size=config.batch_size,
        seed=config.seed,
        **processes,
        **pair_options)
    evaluation = pretraining.fixed_pair_batches(
        eval_documents,
        batch_size=config.batch_size,
        seed=config.seed + 1,
        num_batches=config.eval_batches,
        **processes,
        **pair_options)
    return train, evaluation

  def steps(self, graphdef, optimizer, tokenizer):
    special = dict(
        special_ids=(tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id),
        vocab_size=tokenizer.vocab_size,
        first_regular_id=tokenizer.num_special,
        mask_id=tokenizer.mask_id,
        pad_id=tokenizer.pad_id)
    return (steps.make_bert_train_step(graphdef, optimizer, self.config, special,
                                       self.config.grad_accumulation_steps),
            steps.make_bert_eval_step(graphdef, self.config, special))

  def baseline(self, eval_batches, train_documents, tokenizer):
    """MLM accuracy of always predicting the most frequent training token.

    Masked positions are drawn uniformly among non-special tokens, so the expected accuracy is
    that token's share of the evaluation's non-special tokens.
    """
    most_frequent = int(np.argmax(token_counts(train_documents, tokenizer)))
    ids = np.concatenate([b["input_ids"][b["example_weights"] > 0].ravel() for b in eval_batches])
    regular = ids[ids >= tokenizer.num_special]
    self.baseline_token = tokenizer.id_to_piece(most_frequent)
    return {"unigram_mlm_accuracy": float(np.mean(regular == most_frequent))}

  def summary(self, metrics):
    return (f"eval mlm_accuracy={metrics['mlm_accuracy']:.4f} (unigram baseline "
            f"{metrics['unigram_mlm_accuracy']:.4f}, always {self.baseline_token!r}), "
            f"mlm_perplexity={metrics['mlm_perplexity']:.1f}, "
            f"nsp_accuracy={metrics['nsp_accuracy']:.4f}")


class Gpt:
  """Next-token prediction on documents packed into full rows."""

  progress_metric = "lm_loss"
  model_config_class = gpt.GPTConfig

  def __init__(self, config, model_config=None):
    self.config = config
    self.model_config = model_config or gpt.GPTConfig.from_dict({
        **config.model.to_dict(), "vocab_size": config.vocab_size
    })

  def check(self):
    pass  # max_seq_length against the position table is checked for every family

  def make_model(self, rngs):
    return gpt.GPT(self.model_config, rngs)

  def batches(self, tokenizer, train_documents, eval_documents, processes):
    config = self.config
    options = dict(max_seq_length=config.max_seq_length, separator_id=tokenizer.sep_id)
    train = packing.packed_batches(
        packing.flatten_documents(train_documents),
        batch_size=config.batch_size,
        seed=config.seed,
        **processes,
        **options)
    evaluation = packing.fixed_packed_batches(
        packing.flatten_documents(eval_documents),
        batch_size=config.batch_size,
        seed=config.seed + 1,
        pad_id=tokenizer.pad_id,
        num_batches=config.eval_batches,
        **processes,
        **options)
    return train, evaluation

  def steps(self, graphdef, optimizer, tokenizer):
    del tokenizer  # next-token prediction needs no special ids
    return (steps.make_gpt_train_step(graphdef, optimizer, self.config.grad_accumulation_steps),
            steps.make_gpt_eval_step(graphdef))

  def baseline(self, eval_batches, train_documents, tokenizer):
    """Perplexity of the training unigram distribution (add-one smoothed) on the eval targets."""
    counts = token_counts(train_documents, tokenizer).astype(np.float64)
    counts[tokenizer.sep_id] = len(train_documents)  # one separator after each document
    log_probs = np.log((counts + 1) / (counts + 1).sum())
    targets = np.concatenate([b["target_ids"][b["target_weights"] > 0] for b in eval_batches])
    return {"unigram_perplexity": float(np.exp(-log_probs[targets].mean()))}

  def summary(self, metrics):
    return (f"eval lm_perplexity={metrics['lm_perplexity']:.1f} (unigram perplexity "
            f"{metrics['unigram_perplexity']:.1f}), lm_accuracy={metrics['lm_accuracy']:.4f}")


FAMILIES = {"bert": Bert, "gpt": Gpt}


def family(config, model_config=None):
  """The objective's family; ``model_config`` (a checkpoint's, see ``init_from``) replaces the
  one ``config.model`` describes."""
  if config.objective not in FAMILIES:
    raise ValueError(
        f"objective={config.objective!r} is not supported; use one of {sorted(FAMILIES)}.")
  return FAMILIES[config.objective](config, model_config)
