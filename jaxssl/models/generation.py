"""Autoregressive sampling from a ``GPT``: one prefill writes the KV cache, then one token a step.

Ragged prompts are left-padded to one length so that every row writes the same cache slot at
each step; per-row ``positions`` (counting real tokens only) and segment 0 on the padding make
the padding invisible, so a prompt yields the same tokens alone or in any batch.
The sampling settings are static arguments of the jitted loop: each new (batch, prompt
length, max_new_tokens, temperature, top_k, top_p, number of stop tokens) compiles once.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.models import gpt


def check_sampling(temperature, top_k, top_p, vocab_size):
  if not (math.isfinite(temperature) and temperature >= 0):
    raise ValueError(f"temperature={temperature} is invalid; use 0 (greedy) or a positive number.")
  if not (isinstance(top_k, int) and 0 <= top_k <= vocab_size):
    raise ValueError(f"top_k={top_k!r} is invalid; use an int from 0 (off) to {vocab_size}.")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p={top_p} is invalid; use a number in (0, 1] (1 is off).")


def sample_logits(rng, logits, temperature=0.0, top_k=0, top_p=1.0):
  """Draws one token per row of ``logits`` (B, V); returns (B,) int32.

  temperature 0 is greedy argmax. Otherwise logits are divided by the temperature, then
  top_k > 0 keeps the k largest and top_p < 1 keeps the smallest set of tokens whose
  probability (after top-k) sums to at least top_p; the top token always survives.
  """
  check_sampling(temperature, top_k, top_p, logits.shape[-1])
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1)
    logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
  if top_p < 1:
    descending = -jnp.sort(-logits, axis=-1)  # (B, V)
    probs = jax.nn.softmax(descending, axis=-1)
    # A token is in the nucleus while the mass strictly before it is still short of top_p.
    in_nucleus = jnp.cumsum(probs, axis=-1) - probs < top_p  # (B, V), a prefix, never empty
    smallest_kept = jnp.min(jnp.where(in_nucleus, descending, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < smallest_kept, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def check_request(cfg, prompts, max_new_tokens, temperature, top_k, top_p):
  """One-line ValueErrors for everything a caller can get wrong before anything compiles."""
  if not prompts:
    raise ValueError("prompts=[] is empty; pass at least one prompt (a list of token ids).")
  for row, prompt in enumerate(prompts):
    if not prompt:
      raise ValueError(f"prompts[{row}] is empty; every prompt needs at least one token "
                       "(start it with BOS).")
    if min(prompt) < 0 or max(prompt) >= cfg.vocab_size:
      raise ValueError(f"prompts[{row}] has token ids outside [0, {cfg.vocab_size}); "
                       "tokenize with the model's tokenizer.")
  if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
    raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid; use an int >= 1.")
  longest = max(len(prompt) for prompt in prompts)
  if longest > cfg.max_position:
    raise ValueError(f"the longest prompt has {longest} tokens, more than the model's "
                     f"max_position={cfg.max_position}; shorten it.")
  if longest + max_new_tokens > cfg.max_position:
    raise ValueError(f"the longest prompt ({longest} tokens) + max_new_tokens={max_new_tokens} "
                     f"exceeds max_position={cfg.max_position}; lower max_new_tokens to "
                     f"{cfg.max_position - longest} or shorten the prompt.")
  check_sampling(temperature, top_k, top_p, cfg.vocab_size)


def left_pad(prompts, pad_id, extra=0):
  """Right-aligns prompts at column P (the longest) of a (B, P + extra) buffer.

  Returns numpy tokens, segment_ids (1 on prompt and on the ``extra`` columns, 0 on padding)
  and positions (each row counts its own tokens from 0; padding gets 0, which is never seen).
  """
  prompt_length = max(len(prompt) for prompt in prompts)
  shape = (len(prompts), prompt_length + extra)
  tokens = np.full(shape, pad_id, np.int32)
  segment_ids = np.zeros(shape, np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, prompt_length - len(prompt):prompt_length] = prompt
    segment_ids[row, prompt_length - len(prompt):] = 1
  positions = np.maximum(np.cumsum(segment_ids, axis=1) - 1, 0).astype(np.int32)
  return tokens, segment_ids, positions


def until_stop(generated, stop_tokens):
  """Each row of (B, N) ids as a list, cut just before its first stop token."""
  rows = []
  for row in np.asarray(generated).tolist():
    stops = [i for i, token in enumerate(row) if token in stop_tokens]
    rows.append(row[:stops[0]] if stops else row)
  return rows


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "max_new_tokens", "temperature", "top_k", "top_p", "cache_dtype"))
def _generate_ids(graphdef, params, tokens, segment_ids, positions, rng, stop_tokens, pad_id, *,
                  max_new_tokens, temperature, top_k, top_p, cache_dtype):
  """Prefill, then a while_loop of single-token decode steps; returns (B, max_new_tokens) ids.

  The loop ends when every row has produced a stop token; finished rows emit ``pad_id``.
  """
  model = nnx.merge(graphdef, params)
  batch, prompt_length = tokens.shape
  sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)
  is_stop = lambda token: jnp.isin(token, stop_tokens)
  cache = gpt.init_cache(model.cfg, batch, prompt_length + max_new_tokens, cache_dtype)
  logits, cache = model(tokens, positions, segment_ids, cache)  # (B, P, V)
  # Left padding puts every row's last prompt token in the last column.
  token = sample(jax.random.fold_in(rng, 0), logits[:, -1])  # (B,)
  generated = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)

  def unfinished(state):
    step, _, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def decode_step(state):
    step, cache, token, position, done, generated = state
    logits, cache = model(token[:, None], position[:, None], jnp.ones_like(token)[:, None], cache)
    token = jnp.where(done, pad_id, sample(jax.random.fold_in(rng, step), logits[:, 0]))
    generated = generated.at[:, step].set(token)
    return step + 1, cache, token, position + 1, done | is_stop(token), generated

  state = (jnp.int32(1), cache, token, positions[:, -1] + 1, is_stop(token), generated)
  return jax.lax.while_loop(unfinished, decode_step, state)[-1]


def generate(model_graphdef,
             params,
             prompts,
             *,
             max_new_tokens,
             temperature=0.0,
             top_k=0,
             top_p=1.0,
             stop_tokens=(),
             pad_id,
             rng,
             cache_dtype=None):
  """Samples a continuation of each prompt (a list of token ids) with a KV cache.

  Returns one list per prompt: at most ``max_new_tokens`` new ids, ending just before the
  row's first stop token (the stop token itself is not included; a row that never stops has
  exactly ``max_new_tokens``). ``pad_id`` fills the left padding and is never attended to.
  ``rng`` is folded with the step number, so a draw does not depend on the batch's other
  rows finishing. ``cache_dtype`` (default: the model's compute dtype) stores keys/values.
  """
  cfg = nnx.merge(model_graphdef, params).cfg
  check_request(cfg, prompts, max_new_tokens, temperature, top_k, top_p)
  tokens, segment_ids, positions = left_pad(prompts, pad_id)
  generated = _generate_ids(
      model_graphdef,
      params,
      tokens,
      segment_ids,
      positions,
      rng,
      np.asarray(stop_tokens, np.int32),
      np.int32(pad_id),
      max_new_tokens=max_new_tokens,
      temperature=float(temperature),
      top_k=top_k,
      top_p=float(top_p),
      cache_dtype=None if cache_dtype is None else jnp.dtype(cache_dtype))
  return until_stop(generated, stop_tokens)
