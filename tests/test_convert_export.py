"""jaxssl BERTs exported with ``save_hf_bert`` compute in transformers what they do in jaxssl.

Needs torch and transformers (the test extra); skipped without them. Nothing is downloaded.
"""

import json
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # Before transformers is imported: it reads this once.

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp
from flax import nnx

from conftest import ROOT, small_gpt_config
from jaxssl.convert import hf_files
from jaxssl.convert import hf_bert
from jaxssl.models import bert
from jaxssl.core import pretrain
from jaxssl.core import trained

TOLERANCE = 1e-5
LENGTHS = [12, 5, 9]  # real tokens per row; the rest of each row is padding


@pytest.fixture(scope="module")
def model():
  cfg = bert.BertConfig.from_dict({
      "size": "tiny",
      "vocab_size": 300,
      "dropout_rate": 0.0,
      "attention_dropout_rate": 0.0
  })
  return bert.BertForPretraining(cfg, nnx.Rngs(0))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("export") / "hf")
  hf_bert.save_hf_bert(model, directory)
  return directory


@pytest.fixture(scope="module")
def batch():
  """(B, T) ids and segment ids, a (B, T) bool mask with right padding, (B, P) positions."""
  rng = np.random.default_rng(0)
  length = max(LENGTHS)
  input_ids = rng.integers(1, 300, (len(LENGTHS), length)).astype(np.int32)
  attention_mask = np.arange(length)[None] < np.array(LENGTHS)[:, None]
  input_ids[~attention_mask] = 0
  segment_ids = (np.arange(length)[None] >= 3).astype(np.int32) * attention_mask
  masked_positions = np.array([[0, 4, 11], [1, 2, 3], [8, 0, 5]], np.int32)
  return input_ids, segment_ids, attention_mask, masked_positions


def test_transformers_computes_what_jaxssl_does(model, exported, batch):
  input_ids, segment_ids, attention_mask, masked_positions = batch
  ours = model(*map(jnp.asarray, batch))
  theirs_model = transformers.BertForPreTraining.from_pretrained(
      exported, dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = theirs_model(
        input_ids=torch.from_numpy(input_ids).long(),
        token_type_ids=torch.from_numpy(segment_ids).long(),
        attention_mask=torch.from_numpy(attention_mask).long(),
        output_hidden_states=True)
  assert len(ours["hidden_states"]) == len(theirs.hidden_states) == 3  # embeddings + 2 blocks
  for layer, (mine, expected) in enumerate(zip(ours["hidden_states"], theirs.hidden_states)):
    difference = np.abs(np.asarray(mine) - expected.numpy())[attention_mask]  # real tokens only
    assert difference.max() <= TOLERANCE, f"hidden state {layer}: max |diff| {difference.max()}"
  expected_mlm = np.take_along_axis(
      theirs.prediction_logits.numpy(), masked_positions[..., None], axis=1)  # (B, P, V)
  assert np.abs(np.asarray(ours["mlm_logits"]) - expected_mlm).max() <= TOLERANCE
  expected_nsp = theirs.seq_relationship_logits.numpy()  # (B, 2)
  assert np.abs(np.asarray(ours["nsp_logits"]) - expected_nsp).max() <= TOLERANCE


def test_import_of_the_export_gives_back_the_encoder(model, exported):
  loaded = hf_bert.load_hf_bert(exported)
  expected = nnx.to_flat_state(nnx.state(model.encoder, nnx.Param))
  got = dict(nnx.to_flat_state(nnx.state(loaded, nnx.Param)))
  assert len(expected) == len(got)
  for path, variable in expected:
    np.testing.assert_array_equal(got[path].get_value(), variable.get_value(), err_msg=str(path))


def test_a_plain_encoder_exports_as_a_bert_model(model, tmp_path):
  hf_bert.save_hf_bert(model.encoder, str(tmp_path))  # an existing empty directory is fine
  with open(tmp_path / "config.json") as config_file:
    assert json.load(config_file)["architectures"] == ["BertModel"]
  tensors = hf_files.read_tensors(str(tmp_path))
  assert not any(name.startswith(("bert.", "cls.", "pooler.")) for name in tensors)
  np.testing.assert_array_equal(tensors["encoder.layer.1.output.dense.weight"],
                                model.encoder.blocks[1].mlp.down.kernel[...].T)


def test_a_failed_export_leaves_nothing(model, tmp_path):
  with pytest.raises(FileNotFoundError):
    hf_bert.save_hf_bert(model, str(tmp_path / "hf"), extra_files=[str(tmp_path / "missing")])
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="is not empty"):
    hf_bert.save_hf_bert(model, str(ROOT / "jaxssl"))


def run_convert(*flags):
  return subprocess.run([sys.executable, "-m", "jaxssl.convert", *flags],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        timeout=300)


def test_command_line_exports_a_bert_workdir(tiny_config, tmp_path):
  tiny_config.num_train_steps = tiny_config.eval_every = tiny_config.checkpoint_every = 2
  workdir, output = str(tmp_path / "workdir"), str(tmp_path / "hf")
  pretrain.run(tiny_config, workdir)
  process = run_convert(f"--workdir={workdir}", f"--output={output}")
  assert process.returncode == 0, process.stderr
  assert sorted(os.listdir(output)) == ["config.json", "model.safetensors", "tokenizer.model"]
  hf_model = transformers.AutoModel.from_pretrained(output)
  assert hf_model.config.vocab_size == tiny_config.vocab_size
  _, _, _, graphdef, params = trained.load_trained(workdir)
  np.testing.assert_array_equal(hf_model.embeddings.word_embeddings.weight.detach().numpy(),
                                nnx.merge(graphdef, params).encoder.token_embed.embedding[...])


def test_command_line_rejects_a_workdir_without_a_checkpoint(tfds_dir, tokenizer_path, tmp_path):
  gpt_workdir = tmp_path / "gpt"
  gpt_workdir.mkdir()
  (gpt_workdir / "config.json").write_text(small_gpt_config(tfds_dir, tokenizer_path).to_json())
  for workdir, message in [(gpt_workdir, "has no checkpoint yet"),
                           (tmp_path / "none", "holds no run")]:
    process = run_convert(f"--workdir={workdir}", f"--output={tmp_path / 'hf'}")
    assert process.returncode == 2
    assert message in process.stderr.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "hf")
