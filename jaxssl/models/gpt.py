"""GPT: a pre-LN Transformer decoder with an explicit KV cache for generation.

GPT-2 style by default (learned positions, LayerNorm, GELU MLP, tied embeddings); the
config switches each piece to its Llama counterpart (rotary positions, RMSNorm, SwiGLU,
grouped-query attention, separate output projection, no biases).
Shape letters as in ``layers``, plus K key/value heads, L layers and V vocabulary.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.models import layers

# GPT sizes follow BERT's presets (Turc et al. 2019) so encoder and decoder runs compare;
# "gpt2" is GPT-2 small (Radford et al. 2019). "llama-tiny" exercises every Llama option.
PRESETS = {
    "tiny":
        dict(num_layers=2, hidden_size=128, num_heads=2, mlp_dim=512),
    "mini":
        dict(num_layers=4, hidden_size=256, num_heads=4, mlp_dim=1024),
    "gpt2":
        dict(
            num_layers=12,
            hidden_size=768,
            num_heads=12,
            mlp_dim=3072,
            max_position=1024,
            mlp="gelu_tanh"),
    "llama-tiny":
        dict(
            num_layers=2,
            hidden_size=128,
            num_heads=4,
            num_kv_heads=2,
            mlp_dim=344,
            norm="rmsnorm",
            positions="rotary",
            mlp="swiglu",
            tie_embeddings=False,
            use_bias=False,
            dropout_rate=0.0,
            layer_norm_eps=1e-6),
}
CHOICES = {
    "norm": ("layernorm", "rmsnorm"),
    "positions": ("learned", "rotary"),
    "mlp": ("gelu", "gelu_tanh", "swiglu"),
    "remat": layers.REMAT_CHOICES,
    "attention_implementation": layers.ATTENTION_IMPLEMENTATIONS,
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  vocab_size: int = 8000
  hidden_size: int = 256
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int | None = None  # None: one per query head; fewer: grouped-query attention.
  head_dim: int | None = None  # None: hidden_size // num_heads.
  mlp_dim: int = 1024
  max_position: int = 512  # Longest sequence (prompt + generated tokens) the model accepts.
  norm: str = "layernorm"
  positions: str = "learned"
  rope_theta: float = 10000.0
  mlp: str = "gelu"  # gelu (exact), gelu_tanh (GPT-2's approximation) or swiglu (Llama's).
  tie_embeddings: bool = True  # The output projection is the token embedding table.
  use_bias: bool = True  # Biases in attention and MLP projections (GPT-2 has them, Llama not).
  dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-5
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"  # Activations recomputed in the backward pass: layers.REMAT_CHOICES.
  scan_layers: bool = False  # One jax.lax.scan over the blocks (KV-cache decoding: a loop).
  attention_implementation: str = "xla"  # layers.ATTENTION_IMPLEMENTATIONS (training, prefill).

  def __post_init__(self):
    for field, choices in CHOICES.items():
      if getattr(self, field) not in choices:
        raise ValueError(
            f"model.{field}={getattr(self, field)!r} is unknown; use one of {choices}.")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                       f"num_heads={self.num_heads}; change one or set head_dim.")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}; use a divisor of num_heads.")
    if self.positions == "rotary" and self.head_size % 2:
      raise ValueError(f"rotary positions need an even head size, got {self.head_size}; "
                       "set head_dim (or hidden_size / num_heads) to an even number.")

  @property
  def kv_heads(self):
    """Key/value heads: ``num_kv_heads``, or one per query head when that is None."""
    return self.num_kv_heads or self.num_heads

  @property
  def head_size(self):
    """Width of one attention head: ``head_dim``, or hidden_size // num_heads when None."""
    return self.head_dim or self.hidden_size // self.num_heads

  @classmethod
  def from_dict(cls, fields):
    return layers.config_from_dict(cls, PRESETS, fields)


def init_cache(cfg, batch_size, max_length, dtype=None):
  """An empty KV cache: a plain dict of arrays, so prefill and decode stay pure functions.

  layers: one dict per layer of key (B, K, S, H) and value (B, K, H, S) in ``dtype`` (default
  ``cfg.dtype``), S = ``max_length``. Separate per-layer arrays, laid out as the attention
  matmuls read them, let a decode step use the cache in place: a stacked (L, B, S, K, H)
  array made XLA copy and transpose every layer's cache at every step.
  segment_ids: (B, S) int32, the segment of the token written in each slot (0: padding or
  not yet written). length: () int32, slots written so far; the next call writes after them.
  Rows advance in lockstep (left-pad ragged prompts), and a call writing past S is silently
  clamped by XLA, so size S for the prompt plus every token to be generated.
  """
  key_shape = (batch_size, cfg.kv_heads, max_length, cfg.head_size)
  value_shape = (batch_size, cfg.kv_heads, cfg.head_size, max_length)
  dtype = dtype or cfg.dtype
  return {
      "layers": [{
          "key": jnp.zeros(key_shape, dtype),
          "value": jnp.zeros(value_shape, dtype)
      } for _ in range(cfg.num_layers)],
      "segment_ids": jnp.zeros((batch_size, max_length), jnp.int32),
      "length": jnp.zeros((), jnp.int32)
  }


def apply_rotary(x, positions, theta):
  """Rotates (B, T, N, H) by position, in Llama's "rotate_half" layout.

  Dimension i pairs with i + H/2 (not with its neighbour), so Hugging Face Llama weights load
  as they are. Angles are computed in float32: bfloat16 positions lose integers past 256.
  """
  half = x.shape[-1] // 2
  inverse_frequencies = theta**(-jnp.arange(half, dtype=jnp.float32) / half)  # (H/2,)
  angles = positions[..., None].astype(jnp.float32) * inverse_frequencies  # (B, T, H/2)
  cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]  # (B, T, 1, H/2)
  first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


def causal_mask(query_segments, key_segments, query_slots, key_slots):
  """(B, 1, T, S) bool: a query sees keys at or before its slot in its own segment.

  Padding is segment 0, so real tokens never see it, while a padding query still sees itself:
  no row is fully masked, which keeps every attention kernel free of NaNs.
  """
  causal = key_slots[None, :] <= query_slots[:, None]  # (T, S)
  same_segment = query_segments[:, :, None] == key_segments[:, None, :]  # (B, T, S)
  return (causal[None] & same_segment)[:, None]


def write_kv(layer_cache, start, key, value):
  """Writes (B, T, K, H) keys and values into slots [start, start + T) of one layer's cache."""
  key = jnp.transpose(key, (0, 2, 1, 3)).astype(layer_cache["key"].dtype)  # (B, K, T, H)
  value = jnp.transpose(value, (0, 2, 3, 1)).astype(layer_cache["value"].dtype)  # (B, K, H, T)
  return {
      "key": jax.lax.dynamic_update_slice(layer_cache["key"], key, (0, 0, start, 0)),
      "value": jax.lax.dynamic_update_slice(layer_cache["value"], value, (0, 0, 0, start))
  }


def cached_attention(q, key, value, mask):
  """q: (B, T, N, H) against cached key (B, K, S, H) and value (B, K, H, S); mask (B, 1, T, S).

  Each cached array is laid out with the contracted axis last, the operand layout XLA's CPU
  matmuls take without a copy (measured: any other layout copies the cache every step); ``jax.nn.dot_product_attention`` would
  want (B, S, K, H) and transpose the whole cache at every decode step. Returns (B, T, N, H).
  """
  batch, length, num_heads, head_size = q.shape
  kv_heads = key.shape[1]
  q = q.reshape(batch, length, kv_heads, num_heads // kv_heads, head_size)  # (B, T, K, G, H)
  scale = jnp.sqrt(head_size).astype(q.dtype)
  scores = jnp.einsum("btkgh,bksh->bkgts", q, key.astype(q.dtype)) / scale  # (B, K, G, T, S)
  scores = jnp.where(mask[:, :, None], scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
  context = jnp.einsum("bkgts,bkhs->btkgh", probs, value.astype(q.dtype))  # (B, T, K, G, H)
  return context.reshape(batch, length, num_heads, head_size)


def norm(cfg, rngs):
  if cfg.norm == "rmsnorm":
    return layers.rms_norm(cfg.hidden_size, cfg, rngs)
  return layers.layer_norm(cfg.hidden_size, cfg, rngs)


class CausalSelfAttention(nnx.Module):
  """Grouped-query self-attention (K key/value heads shared by N/K query heads each)."""

  def __init__(self, cfg, rngs):
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.kv_heads, cfg.head_size
    self.cfg = cfg
    self.query = layers.dense(d, n * h, "embed", "heads", cfg, rngs, use_bias=cfg.use_bias)
    self.key = layers.dense(d, k * h, "embed", "kv_heads", cfg, rngs, use_bias=cfg.use_bias)
    self.value = layers.dense(d, k * h, "embed", "kv_heads", cfg, rngs, use_bias=cfg.use_bias)
    self.out = layers.dense(n * h, d, "heads", "embed", cfg, rngs, use_bias=cfg.use_bias)

  def __call__(self, x, positions, mask, cache=None, layer=0):
    """x: (B, T, D); positions: (B, T); mask: (B, 1, T, S). Returns (B, T, D) and the cache."""
    cfg = self.cfg
    batch, length, _ = x.shape
    heads = lambda y, count: layers.constrain(
        y.reshape(batch, length, count, cfg.head_size), layers.BATCH, layers.LENGTH, layers.HEADS,
        None)
    q = heads(self.query(x), cfg.num_heads)  # (B, T, N, H)
    k = heads(self.key(x), cfg.kv_heads)  # (B, T, K, H)
    v = heads(self.value(x), cfg.kv_heads)  # (B, T, K, H)
    if cfg.positions == "rotary":
      q, k = apply_rotary(q, positions, cfg.rope_theta), apply_rotary(k, positions, cfg.rope_theta)
    if cache is None:
      context = jax.nn.dot_product_attention(
          q, k, v, mask=mask, implementation=cfg.attention_implementation)  # (B, T, N, H)
    else:
      layer_cache = write_kv(cache["layers"][layer], cache["length"], k, v)  # (B, K, S, H) each
      context = cached_attention(q, layer_cache["key"], layer_cache["value"], mask)
      cache = {
          **cache, "layers": [*cache["layers"][:layer], layer_cache, *cache["layers"][layer + 1:]]
      }
    return self.out(context.reshape(batch, length, -1)), cache  # (B, T, D)


class PreLNBlock(nnx.Module):
  """GPT-2's block: normalise each sublayer's input, leave the residual stream unnormalised."""

  def __init__(self, cfg, rngs):
    self.dropout_rate = cfg.dropout_rate
    self.attention_norm = norm(cfg, rngs)
    self.attention = CausalSelfAttention(cfg, rngs)
    self.mlp_norm = norm(cfg, rngs)
    if cfg.mlp == "swiglu":
      self.mlp = layers.SwiGLU(cfg, rngs, use_bias=cfg.use_bias)
    else:
      self.mlp = layers.MLP(cfg, rngs, use_bias=cfg.use_bias, tanh_gelu=cfg.mlp == "gelu_tanh")

  def __call__(self, x, positions, mask, cache=None, layer=0, dropout_rng=None):
    attention_rng, mlp_rng = layers.layer_rngs(dropout_rng, 2)
    attended, cache = self.attention(self.attention_norm(x), positions, mask, cache, layer)
    x = x + layers.dropout(attended, self.dropout_rate, attention_rng)
    x = x + layers.dropout(self.mlp(self.mlp_norm(x)), self.dropout_rate, mlp_rng)
    return x, cache  # (B, T, D)


class GPT(nnx.Module):

  def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.token_embed = layers.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", cfg, rngs)
    self.position_embed = (
        layers.embedding(cfg.max_position, cfg.hidden_size, None, cfg, rngs)
        if cfg.positions == "learned" else None)
    self.blocks = nnx.List([PreLNBlock(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = norm(cfg, rngs)
    self.lm_head = (None if cfg.tie_embeddings else layers.dense(
        cfg.hidden_size, cfg.vocab_size, "embed", "vocab", cfg, rngs, use_bias=False))

  def __call__(self, input_ids, positions, segment_ids=None, cache=None, dropout_rng=None):
    """input_ids, positions, segment_ids: (B, T) int.

    A token attends to itself and earlier tokens with the same segment id. Segment 0 is
    padding; None means all 1 (one unpadded document per row). Packed rows number their
    documents 1, 2, ... and restart ``positions`` at 0 in each. With a ``cache`` (see
    ``init_cache``) the T tokens go in the slots after ``cache['length']`` and also attend
    to the tokens already there.
    Returns logits (B, T, V) float32 and the updated cache (None when given None).
    """
    if segment_ids is None:
      segment_ids = jnp.ones_like(input_ids)
    embed_rng, *block_rngs = layers.layer_rngs(dropout_rng, 1 + len(self.blocks))
    x = self.token_embed(input_ids)  # (B, T, D)
    if self.position_embed is not None:
      x = x + self.position_embed(positions)
    x = layers.dropout(x, self.cfg.dropout_rate, embed_rng)
    x = layers.constrain(x, layers.BATCH, layers.LENGTH, layers.EMBED)  # (B, T, D)
    mask, cache = self.attention_mask(segment_ids, cache)
    if cache is None:
      call = lambda block, x, rng: block(x, positions, mask, dropout_rng=rng)[0]
      x = layers.run_blocks(self.blocks, x, block_rngs, self.cfg, call)[-1]
    else:  # decoding: each block writes its own layer of the cache
      for layer, (block, block_rng) in enumerate(zip(self.blocks, block_rngs)):
        x, cache = block(x, positions, mask, cache, layer, block_rng)
      cache = {**cache, "length": cache["length"] + input_ids.shape[1]}
    x = self.final_norm(x)
    logits = self.token_embed.attend(x) if self.lm_head is None else self.lm_head(x)
    return logits.astype(jnp.float32), cache  # (B, T, V)

  @staticmethod
  def attention_mask(segment_ids, cache):
    """The (B, 1, T, S) mask, and the cache with these tokens' segments recorded."""
    length = segment_ids.shape[1]
    if cache is None:
      slots = jnp.arange(length)
      return causal_mask(segment_ids, segment_ids, slots, slots), None
    key_segments = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids.astype(jnp.int32),
                                                (0, cache["length"]))  # (B, S)
    query_slots = cache["length"] + jnp.arange(length)  # (T,)
    mask = causal_mask(segment_ids, key_segments, query_slots, jnp.arange(key_segments.shape[1]))
    return mask, {**cache, "segment_ids": key_segments}
