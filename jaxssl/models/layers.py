"""Transformer building blocks shared by the BERT encoder and the GPT decoder.

Every parameter carries logical axis names (``embed``, ``mlp``, ``heads``, ``vocab``…) and the
main activations are constrained by logical names too (``constrain``: ``BATCH``, ``LENGTH``,
``EMBED``, ``HEADS``, ``MLP``); ``jaxssl.sharding`` maps both onto mesh axes. Model code never
names a mesh axis.
Shape letters: B batch, T query length, S key length, D hidden, N heads, H head dim.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen
from flax import nnx

# Logical names of activation axes (``constrain``), apart from the parameters' own names.
BATCH = "activation_batch"
LENGTH = "activation_length"
EMBED = "activation_embed"
HEADS = "activation_heads"
MLP_HIDDEN = "activation_mlp"


def config_from_dict(config_class, presets, fields):
  """A model config from the preset named ``fields['size']``, overridden by the other fields.

  Fields the config class does not have (a family's config holds both) and None values
  (config placeholders meaning "the preset's") are ignored.
  """
  fields = dict(fields)
  size = fields.pop("size", None)
  if size is not None and size not in presets:
    raise ValueError(f"model.size={size!r} is not a preset; use one of {sorted(presets)}.")
  known = {field.name for field in dataclasses.fields(config_class)}
  overrides = {k: v for k, v in fields.items() if k in known and v is not None}
  return config_class(**{**presets.get(size, {}), **overrides})


def axes(*names):
  """Parameter metadata naming its logical axes (sharded later, never at creation)."""
  return {"out_sharding": names, "eager_sharding": False}


def constrain(x, *names):
  """``x`` laid out as its logical axis ``names`` map onto the mesh, when a run sets logical
  rules under a mesh (``jaxssl.sharding.activation_rules``), so XLA keeps activations where the
  mesh asks (rows over data x fsdp, heads and MLP over tensor); unchanged otherwise (one device,
  generation, tests without a mesh)."""
  return linen.with_logical_constraint(x, names)


def dropout(x, rate, rng):
  """Inverted dropout; ``rng=None`` (evaluation) or ``rate=0`` returns ``x`` unchanged."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


# config.model.remat: what a block keeps from its forward pass for the backward pass; the rest
# is recomputed there ("none": keep everything, no recomputation). "full" keeps only each
# block's input; "dots_saveable" keeps every matmul output; "dots_with_no_batch_dims_saveable"
# keeps the weight matmuls' outputs but recomputes attention's (batched) ones.
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_CHOICES = ("none", *REMAT_POLICIES)


def check_remat(remat):
  if remat not in REMAT_CHOICES:
    raise ValueError(f"model.remat={remat!r} is unknown; use one of {REMAT_CHOICES}.")


# config.model.attention_implementation: the backend of jax.nn.dot_product_attention. "xla" runs
# anywhere; "cudnn" is cuDNN's fused flash attention (NVIDIA GPUs, bfloat16/float16 compute).
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")


def check_attention_implementation(implementation):
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"model.attention_implementation={implementation!r} is unknown; use one "
                     f"of {ATTENTION_IMPLEMENTATIONS}.")


def layer_rngs(rng, count):
  """``count`` independent dropout keys (or Nones when not training)."""
  if rng is None:
    return [None] * count
  return list(jax.random.split(rng, count))


def dense(in_features, out_features, in_axis, out_axis, cfg, rngs, init_std=0.02, use_bias=True):
  """A Linear layer with BERT's truncated-normal(0.02) initialisation and named axes."""
  return nnx.Linear(
      in_features,
      out_features,
      use_bias=use_bias,
      kernel_init=jax.nn.initializers.truncated_normal(init_std),
      kernel_metadata=axes(in_axis, out_axis),
      bias_metadata=axes(out_axis),
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      rngs=rngs)


def layer_norm(features, cfg, rngs):
  return nnx.LayerNorm(
      features,
      epsilon=cfg.layer_norm_eps,
      scale_metadata=axes("embed"),
      bias_metadata=axes("embed"),
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      rngs=rngs)


def rms_norm(features, cfg, rngs):
  """Llama's norm: scale only, no centring and no bias (statistics in float32)."""
  return nnx.RMSNorm(
      features,
      epsilon=cfg.layer_norm_eps,
      scale_metadata=axes("embed"),
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      rngs=rngs)


def embedding(num_embeddings, features, table_axis, cfg, rngs):
  return nnx.Embed(
      num_embeddings,
      features,
      embedding_init=jax.nn.initializers.truncated_normal(0.02),
      embedding_metadata=axes(table_axis, "embed"),
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      rngs=rngs)


class SelfAttention(nnx.Module):
  """Multi-head self-attention through ``jax.nn.dot_product_attention`` (cuDNN on GPU)."""

  def __init__(self, cfg, rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.head_dim = d // cfg.num_heads
    self.attention_dropout_rate = cfg.attention_dropout_rate
    self.implementation = cfg.attention_implementation
    self.query = dense(d, d, "embed", "heads", cfg, rngs)
    self.key = dense(d, d, "embed", "heads", cfg, rngs)
    self.value = dense(d, d, "embed", "heads", cfg, rngs)
    self.out = dense(d, d, "heads", "embed", cfg, rngs)

  def __call__(self, x, mask, dropout_rng=None):
    # x: (B, T, D); mask: (B, 1, T, S) bool, True where attention is allowed.
    batch, length, _ = x.shape
    split = lambda y: y.reshape(batch, length, self.num_heads, self.head_dim)
    q, k, v = (constrain(split(projection(x)), BATCH, LENGTH, HEADS, None)
               for projection in (self.query, self.key, self.value))  # (B, T, N, H)
    if dropout_rng is None or self.attention_dropout_rate == 0.0:
      if self.implementation == "cudnn":  # cuDNN takes the mask as a bias of full (T, S) size.
        mask = jnp.broadcast_to(mask, (batch, 1, length, mask.shape[-1]))  # (B, 1, T, S)
      context = jax.nn.dot_product_attention(
          q, k, v, mask=mask, implementation=self.implementation)  # (B, T, N, H)
    else:  # the fused kernel has no dropout: spell it out only when training with it.
      context = spelled_out_attention(q, k, v, mask, self.attention_dropout_rate, dropout_rng)
    return self.out(context.reshape(batch, length, -1))  # (B, T, D)


def spelled_out_attention(q, k, v, mask, dropout_rate, dropout_rng):
  """Attention with dropout on its probabilities, which ``jax.nn.dot_product_attention`` lacks.

  q, k, v: (B, T, N, H), (B, S, N, H), (B, S, N, H); mask: (B, 1, T, S). Returns (B, T, N, H).
  """
  scores = jnp.einsum("btnh,bsnh->bnts", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)  # (B, N, T, S)
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
  probs = dropout(probs, dropout_rate, dropout_rng)
  return jnp.einsum("bnts,bsnh->btnh", probs, v)


class MLP(nnx.Module):
  """up, GELU, down. ``tanh_gelu``: GELU's tanh approximation (GPT-2's), else the exact one."""

  def __init__(self, cfg, rngs, use_bias=True, tanh_gelu=False):
    self.tanh_gelu = tanh_gelu
    self.up = dense(cfg.hidden_size, cfg.mlp_dim, "embed", "mlp", cfg, rngs, use_bias=use_bias)
    self.down = dense(cfg.mlp_dim, cfg.hidden_size, "mlp", "embed", cfg, rngs, use_bias=use_bias)

  def __call__(self, x):  # (B, T, D) -> (B, T, D)
    hidden = constrain(self.up(x), BATCH, LENGTH, MLP_HIDDEN)  # (B, T, M)
    return self.down(jax.nn.gelu(hidden, approximate=self.tanh_gelu))


class SwiGLU(nnx.Module):
  """Llama's gated MLP (Shazeer 2020): down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg, rngs, use_bias=True):
    d, m = cfg.hidden_size, cfg.mlp_dim
    self.gate = dense(d, m, "embed", "mlp", cfg, rngs, use_bias=use_bias)
    self.up = dense(d, m, "embed", "mlp", cfg, rngs, use_bias=use_bias)
    self.down = dense(m, d, "mlp", "embed", cfg, rngs, use_bias=use_bias)

  def __call__(self, x):  # (B, T, D) -> (B, T, D)
    hidden = jax.nn.silu(self.gate(x)) * self.up(x)  # (B, T, M)
    return self.down(constrain(hidden, BATCH, LENGTH, MLP_HIDDEN))


class PostLNBlock(nnx.Module):
  """BERT's block: LayerNorm after each residual sum (Vaswani et al.; Devlin et al.)."""

  def __init__(self, cfg, rngs):
    self.dropout_rate = cfg.dropout_rate
    self.attention = SelfAttention(cfg, rngs)
    self.attention_norm = layer_norm(cfg.hidden_size, cfg, rngs)
    self.mlp = MLP(cfg, rngs)
    self.mlp_norm = layer_norm(cfg.hidden_size, cfg, rngs)

  def __call__(self, x, mask, dropout_rng=None):  # (B, T, D) -> (B, T, D)
    attention_rng, residual_rng, mlp_rng = layer_rngs(dropout_rng, 3)
    x = self.attention_norm(
        x + dropout(self.attention(x, mask, attention_rng), self.dropout_rate, residual_rng))
    return self.mlp_norm(x + dropout(self.mlp(x), self.dropout_rate, mlp_rng))


def run_blocks(blocks, x, rngs, cfg, call):
  """Runs ``x`` through ``blocks`` in order, ``x = call(block, x, rng)`` with one of ``rngs`` each.

  ``cfg.remat`` names the policy (REMAT_POLICIES) by which each block recomputes activations
  in the backward pass. ``cfg.scan_layers`` runs the blocks as one ``jax.lax.scan`` over
  their parameters stacked on a leading layer axis, so XLA compiles one block instead of
  ``num_layers``. The stack is built inside the step: the parameters themselves stay per layer,
  the layout checkpoints, converters and the KV-cache decoder read.
  Returns the list of the blocks' outputs, each like ``x``.
  """
  graphdef = nnx.graphdef(blocks[0])
  layer_states = [nnx.state(block) for block in blocks]

  def apply(x, state, rng):
    x = call(nnx.merge(graphdef, state), x, rng)
    return constrain(x, BATCH, LENGTH, EMBED)  # (B, T, D)

  if cfg.remat != "none":
    apply = jax.checkpoint(apply, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if not cfg.scan_layers:
    outputs = []
    for state, rng in zip(layer_states, rngs):
      x = apply(x, state, rng)
      outputs.append(x)
    return outputs

  def step(x, layer):
    x = apply(x, *layer)
    return x, x

  stacked = jax.tree.map(lambda *layer: jnp.stack(layer), *layer_states)  # leading axis L
  stacked_rngs = None if rngs[0] is None else jnp.stack(rngs)  # (L,) keys
  _, outputs = jax.lax.scan(step, x, (stacked, stacked_rngs))  # (L, *x.shape)
  return list(outputs)
