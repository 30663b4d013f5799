"""Llama-architecture GGUF files (llama.cpp's format) into jaxssl's GPT (the one module that
imports ``gguf``).

Quantized tensors (Q4_1, Q8_0, K-quants…) are dequantized to float32 with the ``gguf``
package, so the jaxssl model computes with exactly the weights llama.cpp would. llama.cpp
stores the query and key projections with each head's rows interleaved for its rotary
kernel; they are put back in the Hugging Face "rotate_half" order jaxssl uses. The byte-level
BPE vocabulary and merges inside the file become a ``ByteLevelBPETokenizer``.

Every GPT parameter must come from exactly one tensor of the expected shape; anything else is
an error naming the tensor, so no weight is left at its random initialisation.
"""

import gguf
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.data import pretrained_tokenizers
from jaxssl.models import gpt

_CONTROL_TOKEN = 3  # llama.cpp's token type of special tokens (CONTROL)
_TOP_LEVEL = {
    ("token_embed", "embedding"): "token_embd.weight",
    ("final_norm", "scale"): "output_norm.weight",
    ("lm_head", "kernel"): "output.weight",
}
_BLOCK = {
    ("attention_norm", "scale"): "attn_norm.weight",
    ("attention", "query", "kernel"): "attn_q.weight",
    ("attention", "key", "kernel"): "attn_k.weight",
    ("attention", "value", "kernel"): "attn_v.weight",
    ("attention", "out", "kernel"): "attn_output.weight",
    ("mlp_norm", "scale"): "ffn_norm.weight",
    ("mlp", "gate", "kernel"): "ffn_gate.weight",
    ("mlp", "up", "kernel"): "ffn_up.weight",
    ("mlp", "down", "kernel"): "ffn_down.weight",
}


def _field(reader, key, path, default=None):
  field = reader.fields.get(key)
  if field is None:
    if default is None:
      raise ValueError(f"{path!r} has no metadata key {key!r}; is it a complete llama GGUF file?")
    return default
  return field.contents()


def config_from_gguf(reader: gguf.GGUFReader, path: str, **overrides) -> gpt.GPTConfig:
  """The GPTConfig the file's ``llama.*`` metadata describes; ``overrides`` set other fields."""
  architecture = _field(reader, "general.architecture", path)
  if architecture != "llama":
    raise ValueError(f"{path!r} holds a {architecture!r} model; jaxssl reads llama-architecture "
                     "GGUF files (Llama, SmolLM2, TinyLlama…).")
  if "llama.rope.scaling.type" in reader.fields:
    raise ValueError(f"{path!r} uses rope scaling "
                     f"({_field(reader, 'llama.rope.scaling.type', path)!r}), which jaxssl's "
                     "rotary positions do not implement.")
  hidden = int(_field(reader, "llama.embedding_length", path))
  heads = int(_field(reader, "llama.attention.head_count", path))
  head_size = int(_field(reader, "llama.rope.dimension_count", path, hidden // heads))
  if head_size * heads != hidden:
    raise ValueError(f"{path!r} rotates {head_size} of each head's {hidden // heads} "
                     "dimensions; jaxssl's rotary positions rotate whole heads.")
  fields = dict(
      vocab_size=len(_field(reader, "tokenizer.ggml.tokens", path)),
      hidden_size=hidden,
      num_layers=int(_field(reader, "llama.block_count", path)),
      num_heads=heads,
      num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", path, heads)),
      mlp_dim=int(_field(reader, "llama.feed_forward_length", path)),
      max_position=int(_field(reader, "llama.context_length", path)),
      rope_theta=float(_field(reader, "llama.rope.freq_base", path, 10000.0)),
      layer_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", path)),
      tie_embeddings="output.weight" not in {tensor.name for tensor in reader.tensors},
      norm="rmsnorm",
      positions="rotary",
      mlp="swiglu",
      use_bias=False,
      dropout_rate=0.0)
  return gpt.GPTConfig(**{**fields, **overrides})


def dequantized_tensors(reader: gguf.GGUFReader, path: str) -> dict[str, np.ndarray]:
  """Every tensor as float32 in PyTorch's (out, in) layout, by GGUF name."""
  tensors = {}
  for tensor in reader.tensors:
    try:
      tensors[tensor.name] = np.asarray(
          gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
    except NotImplementedError:
      raise ValueError(f"{path!r}: tensor {tensor.name!r} is {tensor.tensor_type.name}, which the "
                       "gguf package cannot dequantize; use a file with another quantization.") \
          from None
  return tensors


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's query/key row order: within each head it interleaves the two rotated
  halves (rows 0, H/2, 1, H/2 + 1, …); Hugging Face and jaxssl keep them as two blocks."""
  rows = weight.shape[0]
  return weight.reshape(num_heads, rows // num_heads // 2, 2, -1).swapaxes(1,
                                                                           2).reshape(weight.shape)


def gguf_name(path: tuple) -> str:
  """The GGUF tensor name of a GPT parameter path, e.g. ('blocks', 3, 'mlp', 'up', 'kernel')."""
  if path[0] == "blocks":
    return f"blk.{path[1]}.{_BLOCK[tuple(path[2:])]}"
  return _TOP_LEVEL[tuple(path)]


def model_from_gguf(tensors: dict[str, np.ndarray], cfg: gpt.GPTConfig, path: str) -> gpt.GPT:
  """GPT(cfg) holding dequantized GGUF tensors (see ``dequantized_tensors``): the model is
  built abstractly (traced once: a 30-layer trace takes seconds) and its variables set."""
  model = nnx.eval_shape(lambda: gpt.GPT(cfg, nnx.Rngs(0)))
  state = nnx.state(model)  # the model's own variables
  used = set()
  for param_path, variable in nnx.to_flat_state(state):
    name = gguf_name(param_path)
    if name not in tensors:
      raise ValueError(f"{path!r} has no tensor {name!r} (for {'.'.join(map(str, param_path))}); "
                       "is it a llama model with the layers its metadata describes?")
    value = tensors[name]
    if name.endswith("attn_q.weight"):
      value = unpermute_rotary(value, cfg.num_heads)
    elif name.endswith("attn_k.weight"):
      value = unpermute_rotary(value, cfg.kv_heads)
    if param_path[-1] == "kernel":
      value = value.T
    expected = variable.get_value().shape
    if value.shape != expected:
      raise ValueError(f"{path!r}: tensor {name!r} has shape {value.shape[::-1]}, expected "
                       f"{expected[::-1]} from the file's metadata.")
    variable.set_value(jnp.asarray(value, cfg.param_dtype))
    used.add(name)
  unexpected = sorted(set(tensors) - used)
  if unexpected:
    raise ValueError(f"{path!r}: tensor {unexpected[0]!r} (one of {len(unexpected)} unexpected) "
                     "has no place in the llama model its metadata describes.")
  return model


def tokenizer_from_gguf(reader: gguf.GGUFReader,
                        path: str) -> pretrained_tokenizers.ByteLevelBPETokenizer:
  """The byte-level BPE tokenizer stored in the file (``tokenizer.ggml.model`` "gpt2")."""
  model = _field(reader, "tokenizer.ggml.model", path)
  if model != "gpt2":
    raise ValueError(f"{path!r} has a {model!r} tokenizer; jaxssl reads GGUF byte-level BPE "
                     "vocabularies (tokenizer.ggml.model 'gpt2').")
  tokens = _field(reader, "tokenizer.ggml.tokens", path)
  token_types = np.asarray(_field(reader, "tokenizer.ggml.token_type", path))
  eos_id = int(_field(reader, "tokenizer.ggml.eos_token_id", path))
  return pretrained_tokenizers.ByteLevelBPETokenizer.from_vocab(
      tokens,
      _field(reader, "tokenizer.ggml.merges", path),
      np.flatnonzero(token_types == _CONTROL_TOKEN).tolist(),
      sep_id=eos_id,
      pad_id=int(_field(reader, "tokenizer.ggml.padding_token_id", path, eos_id)),
      pre=_field(reader, "tokenizer.ggml.pre", path, "default"),
      source=path)


def load_gguf_llama(path: str, **overrides):
  """(GPT model, tokenizer) from a llama-architecture GGUF file.

  ``overrides`` set GPTConfig fields that do not change shapes (``dtype``, ``max_position``
  to allocate a shorter position range…). ``nnx.split(model)`` gives graphdef and parameters.
  """
  try:
    reader = gguf.GGUFReader(path)
  except (ValueError, IndexError) as error:  # bad magic, or tensors past the end of the file
    raise ValueError(f"{path!r} cannot be read as GGUF ({error}): it is truncated, damaged or not "
                     "a GGUF file; copy or download it again.") from None
  cfg = config_from_gguf(reader, path, **overrides)
  model = model_from_gguf(dequantized_tensors(reader, path), cfg, path)
  return model, tokenizer_from_gguf(reader, path)
