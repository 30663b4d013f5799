"""Hugging Face GPT-2 and Llama checkpoints load into jaxssl's GPT, and jaxssl GPTs export to them.

Small random models in float32, so nothing is downloaded. Needs torch and transformers (the
test extra); skipped without them.
"""

import os
import re
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # Before transformers is imported: it reads this once.

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax
import jax.numpy as jnp
from flax import nnx

from conftest import ROOT, small_gpt_config
from jaxssl.convert import hf_files
from jaxssl.convert import hf_gpt
from jaxssl.models import bert
from jaxssl.models import gpt
from jaxssl.core import pretrain
from jaxssl.core import trained

TOLERANCE = 1e-4
VOCAB = 100
LENGTHS = [12, 5, 9]  # real tokens per row; the rest of each row is padding
LLAMA = dict(
    num_hidden_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=96,
    vocab_size=VOCAB,
    max_position_embeddings=64,
    rope_theta=10000.0)
# Random transformers models: model_type and config options.
HF_MODELS = {
    "gpt2": ("gpt2", dict(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64)),
    "llama-tied": ("llama", dict(LLAMA, tie_word_embeddings=True)),
    "llama-untied": ("llama", dict(LLAMA, tie_word_embeddings=False)),
    "llama-head_dim=24": ("llama", dict(LLAMA, tie_word_embeddings=False, head_dim=24)),
}
# jaxssl GPTs (GPTConfig fields) that transformers has counterparts of.
GPT_MODELS = {
    "tiny-gelu_tanh": dict(size="tiny", mlp="gelu_tanh"),
    "tiny-gelu-untied": dict(size="tiny", mlp="gelu", tie_embeddings=False),
    "llama-tiny": dict(size="llama-tiny"),
    "llama-tiny-tied": dict(size="llama-tiny", tie_embeddings=True),
}


@pytest.fixture(scope="module")
def batch():
  """(B, T) ids and a (B, T) bool mask of real tokens, right-padded."""
  length = max(LENGTHS)
  input_ids = np.random.default_rng(0).integers(0, VOCAB, (len(LENGTHS), length)).astype(np.int32)
  attention_mask = np.arange(length)[None] < np.array(LENGTHS)[:, None]
  input_ids[~attention_mask] = 0
  return input_ids, attention_mask


def jax_logits(model, input_ids, attention_mask):
  """(B, T, V) logits of a jaxssl GPT; padding is segment 0."""
  positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
  logits, _ = model(*map(jnp.asarray, (input_ids, positions, attention_mask.astype(np.int32))))
  return np.asarray(logits)


def hf_logits(model, input_ids, attention_mask):
  """(B, T, V) logits of a transformers causal LM."""
  with torch.no_grad():
    return model(
        input_ids=torch.from_numpy(input_ids).long(),
        attention_mask=torch.from_numpy(attention_mask).long()).logits.numpy()


def max_difference(ours, theirs, attention_mask):
  return np.abs(ours - theirs)[attention_mask].max()  # real tokens only


def make_hf_model(name, directory):
  """A random transformers model ``HF_MODELS[name]``, saved to ``directory``."""
  model_type, options = HF_MODELS[name]
  torch.manual_seed(0)
  config = transformers.AutoConfig.for_model(model_type, **options)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():  # norms at 1 and biases at 0 would hide a swapped or untransposed tensor
    for parameter in model.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  model.save_pretrained(directory, safe_serialization=True)
  return model


def make_gpt(fields, seed=0):
  """A jaxssl GPT with every parameter random (norms and biases too)."""
  cfg = gpt.GPTConfig.from_dict({**fields, "vocab_size": VOCAB, "max_position": 64})
  model = gpt.GPT(cfg, nnx.Rngs(seed))
  leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(seed)
  noisy = [leaf + 0.05 * rng.standard_normal(leaf.shape, np.float32) for leaf in leaves]
  nnx.update(model, jax.tree.unflatten(treedef, noisy))
  return model


def flat_params(model):
  return {path: v.get_value() for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("name", HF_MODELS)
def test_transformers_checkpoints_compute_the_same_logits(name, tmp_path, batch):
  theirs = make_hf_model(name, tmp_path)
  ours = hf_gpt.load_hf_gpt(str(tmp_path))
  difference = max_difference(jax_logits(ours, *batch), hf_logits(theirs, *batch), batch[1])
  assert difference <= TOLERANCE, f"max |diff| {difference}"


def test_pytorch_bin_with_base_model_names_and_buffers_loads_the_same(tmp_path):
  """GPT2Model's names (no ``transformer.``), old checkpoints' mask buffers, a tied lm_head."""
  make_hf_model("gpt2", tmp_path / "safetensors")
  expected = hf_gpt.load_hf_gpt(str(tmp_path / "safetensors"))
  tensors = hf_files.read_tensors(str(tmp_path / "safetensors"))
  state_dict = {
      name.removeprefix("transformer."): torch.from_numpy(v) for name, v in tensors.items()
  }
  for layer in range(2):
    state_dict[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
    state_dict[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
  state_dict["lm_head.weight"] = state_dict["wte.weight"]
  (tmp_path / "bin").mkdir()
  torch.save(state_dict, tmp_path / "bin" / "pytorch_model.bin")
  (tmp_path / "bin" / "config.json").write_text(
      (tmp_path / "safetensors" / "config.json").read_text())
  loaded = flat_params(hf_gpt.load_hf_gpt(str(tmp_path / "bin")))
  for path, value in flat_params(expected).items():
    np.testing.assert_array_equal(loaded[path], value, err_msg=str(path))


@pytest.fixture(scope="module", params=GPT_MODELS)
def exported(request, tmp_path_factory):
  """A random jaxssl GPT of each kind in GPT_MODELS and the directory it was exported to."""
  model = make_gpt(GPT_MODELS[request.param])
  directory = str(tmp_path_factory.mktemp("export") / "hf")
  hf_gpt.save_hf_gpt(model, directory)
  return model, directory


def test_transformers_computes_what_jaxssl_does(exported, batch):
  model, directory = exported
  assert sorted(os.listdir(directory)) == ["config.json", "model.safetensors"]
  theirs = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
  expected_class = "LlamaForCausalLM" if model.cfg.positions == "rotary" else "GPT2LMHeadModel"
  assert type(theirs).__name__ == expected_class
  difference = max_difference(jax_logits(model, *batch), hf_logits(theirs, *batch), batch[1])
  assert difference <= TOLERANCE, f"max |diff| {difference}"


def test_import_of_the_export_gives_back_the_model(exported):
  model, directory = exported
  loaded = hf_gpt.load_hf_gpt(directory)
  assert loaded.cfg == model.cfg
  expected, got = flat_params(model), flat_params(loaded)
  assert expected.keys() == got.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(got[path], value, err_msg=str(path))


def _drop(name):
  return lambda tensors: tensors.pop(name)


def _copy(target, source):
  return lambda tensors: tensors.update({target: tensors[source]})


@pytest.mark.parametrize(
    "size, change, message",
    [("tiny", _drop("transformer.h.1.mlp.c_fc.bias"),
      "checkpoint has no tensor 'transformer.h.1.mlp.c_fc.bias'"),
     ("llama-tiny", _copy("model.layers.2.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"),
      "checkpoint tensor 'model.layers.2.mlp.up_proj.weight' (one of 1 unexpected)"),
     ("tiny", _copy("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight"),
      "'transformer.h.0.attn.c_attn.weight' has shape (128, 512), expected (128, 384)"),
     ("llama-tiny",
      _copy("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
      "'model.layers.0.self_attn.k_proj.weight' has shape (128, 128), expected (64, 128)"),
     ("tiny",
      lambda tensors: tensors.update({"lm_head.weight": tensors["transformer.wte.weight"] + 1}),
      "'lm_head.weight' differs from 'transformer.wte.weight'"),
     ("tiny", _copy("h.0.ln_1.weight", "transformer.h.0.ln_1.weight"),
      "holds tensor 'transformer.h.0.ln_1.weight' twice")],
    ids=["missing", "unexpected", "fused-shape", "kv-shape", "tied", "twice"])
def test_weights_that_do_not_fit_are_named(size, change, message):
  model = make_gpt({"size": size})
  tensors = hf_gpt.hf_tensors(model)
  change(tensors)
  with pytest.raises(ValueError, match=re.escape(message)):
    hf_gpt.model_from_hf(tensors, model.cfg)


MISSING = object()  # a config.json key taken out


@pytest.mark.parametrize("size, key, value, message", [
    ("tiny", "model_type", "bert", "model_type='bert'"),
    ("tiny", "activation_function", "relu", "activation_function='relu'"),
    ("tiny", "scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=True"),
    ("tiny", "n_embd", MISSING, "config.json has no 'n_embd'"),
    ("llama-tiny", "rope_scaling", {
        "rope_type": "linear",
        "factor": 2.0
    }, "rope_scaling={'rope_type': 'linear', 'factor': 2.0}"),
    ("llama-tiny", "hidden_act", "gelu", "hidden_act='gelu'"),
    ("llama-tiny", "attention_bias", True, "attention_bias=True"),
    ("llama-tiny", "mlp_bias", True, "mlp_bias=True"),
])
def test_unsupported_configs_are_named(size, key, value, message):
  config = hf_gpt.hf_config(gpt.GPTConfig.from_dict({"size": size}))
  if value is MISSING:
    del config[key]
  else:
    config[key] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    hf_gpt.config_from_hf(config)


@pytest.mark.parametrize("fields, message", [
    (dict(size="llama-tiny", norm="layernorm"),
     "norm='layernorm' has no transformers counterpart with positions='rotary'"),
    (dict(size="llama-tiny", use_bias=True), "use_bias=True has no transformers counterpart"),
    (dict(size="llama-tiny", mlp="gelu"), "mlp='gelu' has no transformers counterpart"),
    (dict(size="tiny", norm="rmsnorm"),
     "norm='rmsnorm' has no transformers counterpart with positions='learned'"),
    (dict(size="tiny", mlp="swiglu"), "mlp='swiglu' has no transformers counterpart"),
    (dict(size="tiny", num_kv_heads=1), "num_kv_heads=1 has no transformers counterpart"),
    (dict(size="tiny", head_dim=32), "head_dim=32 has no transformers counterpart"),
])
def test_architectures_transformers_lacks_are_not_exported(fields, message, tmp_path):
  model = nnx.eval_shape(lambda: gpt.GPT(gpt.GPTConfig.from_dict(fields), nnx.Rngs(0)))
  with pytest.raises(ValueError, match=re.escape(message)):
    hf_gpt.save_hf_gpt(model, str(tmp_path / "hf"))
  assert os.listdir(tmp_path) == []


def test_a_failed_export_leaves_nothing(tmp_path):
  model = make_gpt({"size": "tiny"})
  with pytest.raises(FileNotFoundError):
    hf_gpt.save_hf_gpt(model, str(tmp_path / "hf"), extra_files=[str(tmp_path / "missing")])
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="is not empty"):
    hf_gpt.save_hf_gpt(model, str(ROOT / "jaxssl"))
  encoder = nnx.eval_shape(lambda: bert.BertEncoder(bert.BertConfig(), nnx.Rngs(0)))
  with pytest.raises(ValueError, match="cannot export a BertEncoder"):
    hf_gpt.save_hf_gpt(encoder, str(tmp_path / "hf"))


def run_convert(*flags):
  return subprocess.run([sys.executable, "-m", "jaxssl.convert", *flags],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        timeout=300)


@pytest.mark.slow
def test_command_line_exports_a_gpt_workdir(tfds_dir, tokenizer_path, tmp_path):
  config = small_gpt_config(tfds_dir, tokenizer_path)
  config.num_train_steps = config.eval_every = config.checkpoint_every = 2
  workdir, output = str(tmp_path / "workdir"), str(tmp_path / "hf")
  pretrain.run(config, workdir)
  process = run_convert(f"--workdir={workdir}", f"--output={output}")
  assert process.returncode == 0, process.stderr
  assert sorted(os.listdir(output)) == ["config.json", "model.safetensors", "tokenizer.model"]
  theirs = transformers.AutoModelForCausalLM.from_pretrained(output).eval()
  assert type(theirs).__name__ == "GPT2LMHeadModel"
  _, _, tokenizer, graphdef, params = trained.load_trained(workdir)
  rows = tokenizer.encode_batch(["Call me Ishmael.", "The whale, the whale!"])
  input_ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
  attention_mask = np.arange(input_ids.shape[1])[None] < np.array(list(map(len, rows)))[:, None]
  input_ids[attention_mask] = np.concatenate(rows)
  ours = jax_logits(nnx.merge(graphdef, params), input_ids, attention_mask)
  difference = max_difference(ours, hf_logits(theirs, input_ids, attention_mask), attention_mask)
  assert difference <= TOLERANCE, f"max |diff| {difference}"


def test_command_line_refuses_a_gpt_transformers_lacks(tfds_dir, tokenizer_path, tmp_path):
  # Checked before any checkpoint is read, so a run's config.json will do.
  config = small_gpt_config(tfds_dir, tokenizer_path)
  config.model.positions = "rotary"  # with the tiny preset's LayerNorm
  workdir = tmp_path / "gpt"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json())
  process = run_convert(f"--workdir={workdir}", f"--output={tmp_path / 'hf'}")
  assert process.returncode == 2
  assert "norm='layernorm' has no transformers counterpart" in process.stderr.strip().splitlines(
  )[-1]
  assert not os.path.exists(tmp_path / "hf")
