"""BERT: a post-LN Transformer encoder with MLM and NSP pretraining heads."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.models import layers

# Sizes from Turc et al. 2019 ("Well-Read Students Learn Better") and Devlin et al. 2019.
PRESETS = {
    "tiny": dict(num_layers=2, hidden_size=128, num_heads=2, mlp_dim=512),
    "mini": dict(num_layers=4, hidden_size=256, num_heads=4, mlp_dim=1024),
    "small": dict(num_layers=4, hidden_size=512, num_heads=8, mlp_dim=2048),
    "medium": dict(num_layers=8, hidden_size=512, num_heads=8, mlp_dim=2048),
    "base": dict(num_layers=12, hidden_size=768, num_heads=12, mlp_dim=3072),
    "large": dict(num_layers=24, hidden_size=1024, num_heads=16, mlp_dim=4096),
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 8000
  hidden_size: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  max_position: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"  # Activations recomputed in the backward pass: layers.REMAT_CHOICES.
  scan_layers: bool = False  # Run the blocks as one jax.lax.scan (see layers.run_blocks).
  attention_implementation: str = "xla"  # layers.ATTENTION_IMPLEMENTATIONS.

  def __post_init__(self):
    layers.check_remat(self.remat)
    layers.check_attention_implementation(self.attention_implementation)

  @classmethod
  def from_dict(cls, fields):
    return layers.config_from_dict(cls, PRESETS, fields)


class BertEncoder(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    if cfg.hidden_size % cfg.num_heads:
      raise ValueError(
          f"hidden_size={cfg.hidden_size} is not divisible by num_heads={cfg.num_heads}.")
    self.cfg = cfg
    self.token_embed = layers.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", cfg, rngs)
    self.position_embed = layers.embedding(cfg.max_position, cfg.hidden_size, None, cfg, rngs)
    self.segment_embed = layers.embedding(cfg.type_vocab_size, cfg.hidden_size, None, cfg, rngs)
    self.embed_norm = layers.layer_norm(cfg.hidden_size, cfg, rngs)
    self.blocks = nnx.List([layers.PostLNBlock(cfg, rngs) for _ in range(cfg.num_layers)])

  def __call__(self, input_ids, segment_ids, attention_mask, dropout_rng=None):
    """input_ids, segment_ids: (B, T) int; attention_mask: (B, T) bool, False on padding.

    Returns the last hidden states (B, T, D) and a dict of named intermediates:
    ``hidden_states``, a list of (B, T, D) arrays (embeddings, then each block's output).
    """
    length = input_ids.shape[1]
    embed_rng, *block_rngs = layers.layer_rngs(dropout_rng, 1 + len(self.blocks))
    # The segment table's rows take B*T updates each: as a lookup, its gradient is a scatter-add
    # that serialises on them (bfloat16 BERT-mini on an H100: 4x the step time); a one-hot
    # matmul makes it a reduction.
    segment_table = self.segment_embed.embedding[...].astype(self.cfg.dtype)  # (types, D)
    segments = jax.nn.one_hot(segment_ids, segment_table.shape[0], dtype=segment_table.dtype)
    x = (self.token_embed(input_ids) + self.position_embed(jnp.arange(length))[None] +
         segments @ segment_table)  # (B, T, D)
    x = layers.dropout(self.embed_norm(x), self.cfg.dropout_rate, embed_rng)
    x = layers.constrain(x, layers.BATCH, layers.LENGTH, layers.EMBED)  # (B, T, D)
    mask = attention_mask[:, None, None, :]  # (B, 1, 1, S): every query sees every real key.
    call = lambda block, x, rng: block(x, mask, rng)
    hidden_states = [x, *layers.run_blocks(self.blocks, x, block_rngs, self.cfg, call)]
    return hidden_states[-1], {"hidden_states": hidden_states}


class BertForPretraining(nnx.Module):
  """Encoder + MLM head (tied to the token embeddings) + NSP head on the pooled [CLS]
  (``with_nsp=False``: none, as in ELECTRA's generator)."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs, with_nsp: bool = True):
    d = cfg.hidden_size
    self.encoder = BertEncoder(cfg, rngs)
    self.mlm_transform = layers.dense(d, d, "embed", "mlp", cfg, rngs)
    self.mlm_norm = layers.layer_norm(d, cfg, rngs)
    self.mlm_bias = nnx.Param(jnp.zeros((cfg.vocab_size,), cfg.param_dtype), **layers.axes("vocab"))
    self.with_nsp = with_nsp
    if with_nsp:
      self.pooler = layers.dense(d, d, "embed", "mlp", cfg, rngs)
      self.nsp_classifier = layers.dense(d, 2, "embed", None, cfg, rngs)

  def pooled(self, sequence):  # (B, T, D) -> (B, D): tanh(W · h_[CLS]) as in BERT.
    return jnp.tanh(self.pooler(sequence[:, 0]))

  def __call__(self, input_ids, segment_ids, attention_mask, masked_positions, dropout_rng=None):
    """masked_positions: (B, P) indices of the positions to predict.

    MLM logits are computed only at those P positions, not all T (the vocabulary projection
    is the largest matmul of a small BERT).
    Returns {"mlm_logits": (B, P, V) float32, "nsp_logits": (B, 2) float32 (with_nsp only),
    "sequence": (B, T, D)}.
    """
    sequence, intermediates = self.encoder(input_ids, segment_ids, attention_mask, dropout_rng)
    picked = jnp.take_along_axis(sequence, masked_positions[..., None], axis=1)  # (B, P, D)
    picked = self.mlm_norm(jax.nn.gelu(self.mlm_transform(picked), approximate=False))
    mlm_logits = self.encoder.token_embed.attend(picked) + self.mlm_bias[...]  # (B, P, V)
    outputs = {"mlm_logits": mlm_logits.astype(jnp.float32), "sequence": sequence, **intermediates}
    if self.with_nsp:
      outputs["nsp_logits"] = self.nsp_classifier(self.pooled(sequence)).astype(
          jnp.float32)  # (B, 2)
    return outputs
