"""ELECTRA (Clark et al., 2020): a narrow BERT generator fills the masked positions with tokens it
samples, and a BERT discriminator tells, for every token, whether it was replaced. The
discriminator's encoder is what fine-tuning keeps (``encoder``, as in ``BertForPretraining``).
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.models import bert
from jaxssl.models import layers


def generator_config(cfg: bert.BertConfig, size: float) -> bert.BertConfig:
  """``cfg`` at ``size`` times its width: as many layers, ``size`` of its heads (at least one)
  of the same width, the MLP scaled alike (ELECTRA-Small's generator: a quarter)."""
  heads = max(1, round(cfg.num_heads * size))
  hidden = heads * (cfg.hidden_size // cfg.num_heads)
  return dataclasses.replace(
      cfg, hidden_size=hidden, num_heads=heads, mlp_dim=cfg.mlp_dim * hidden // cfg.hidden_size)


class ElectraForPretraining(nnx.Module):
  """The discriminator (``encoder`` + a per-token replaced/original head) and the generator (a
  ``BertForPretraining`` without NSP, on its own embeddings)."""

  def __init__(self, cfg: bert.BertConfig, generator_cfg: bert.BertConfig, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.encoder = bert.BertEncoder(cfg, rngs)
    self.replaced_transform = layers.dense(d, d, "embed", "mlp", cfg, rngs)
    self.replaced_classifier = layers.dense(d, 1, "mlp", None, cfg, rngs)
    self.generator = bert.BertForPretraining(generator_cfg, rngs, with_nsp=False)

  def discriminate(self, input_ids, segment_ids, attention_mask, dropout_rng=None):
    """input_ids, segment_ids: (B, T) int; attention_mask: (B, T) bool. Returns (B, T) float32
    logits that each token was replaced."""
    sequence, _ = self.encoder(input_ids, segment_ids, attention_mask, dropout_rng)  # (B, T, D)
    hidden = jax.nn.gelu(self.replaced_transform(sequence), approximate=False)  # (B, T, D)
    return self.replaced_classifier(hidden)[..., 0].astype(jnp.float32)  # (B, T)
