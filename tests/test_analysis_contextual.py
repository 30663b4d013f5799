"""Contextual-embedding analysis: word vectors from the encoder's hidden states, the similarity
summary by hand, and the command on a tiny jaxssl encoder."""

import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from jaxssl.analysis import contextual

SPLIT_WORD_SENTENCE = "The harpooneers stood by the boats."


def hand_states(model, tokenizer, sentence):
  """(ids, offsets, every layer's (T, D) hidden states) of one unpadded forward pass."""
  ids, offsets = tokenizer.encode_with_offsets(sentence)
  input_ids = jnp.asarray([[tokenizer.cls_id, *ids, tokenizer.sep_id]])
  _, intermediates = model(input_ids, jnp.zeros_like(input_ids), jnp.ones_like(input_ids, bool))
  return ids, offsets, [np.asarray(h[0]) for h in intermediates["hidden_states"]]


def test_identical_contexts_give_similarity_one(random_minilm_encoder):
  model, tokenizer = random_minilm_encoder
  sentences = ["The whale swam away.", "The whale swam away.", "A white whale was seen at sea."]
  matrix = contextual.similarity_matrix(
      contextual.word_vectors(model, tokenizer, sentences, "whale"))
  np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
  assert matrix[0, 1] == pytest.approx(1.0, abs=1e-6)
  assert matrix[0, 2] < 0.999  # a different context moves the vector
  np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)


def test_a_split_word_or_a_character_inside_a_piece_is_the_mean_of_its_pieces(
    random_minilm_encoder):
  model, tokenizer = random_minilm_encoder
  ids, offsets, states = hand_states(model, tokenizer, SPLIT_WORD_SENTENCE)
  pieces = [tokenizer.id_to_piece(ids[i]) for i in range(1, 4)]
  assert pieces == ["harp", "##oon", "##eers"] and offsets[1:4] == [(4, 8), (8, 11), (11, 15)]
  # A longer second sentence pads the first: padding must not change its vectors.
  sentences = [SPLIT_WORD_SENTENCE, "Call me Ishmael, and the harpooneers were asleep below."]
  vectors = contextual.word_vectors(model, tokenizer, sentences, "Harpooneers", layer=2)
  # Token i is row i + 1 of the states ([CLS] comes first).
  np.testing.assert_allclose(vectors[0], states[2][2:5].mean(axis=0), atol=1e-5)
  # "poo" (characters 7-10) touches "harp" and "##oon" only.
  inner = contextual.word_vectors_by_layer(model, tokenizer, sentences, "poo")
  for layer in (0, 1, 2):
    np.testing.assert_allclose(inner[layer, 0], states[layer][2:4].mean(axis=0), atol=1e-5)


def test_sense_summary_by_hand():
  senses = ["a", "b", "a", "b", "b"]
  matrix = np.array([
      [1.0, 0.1, 0.9, 0.2, 0.3],
      [0.1, 1.0, 0.4, 0.8, 0.7],
      [0.9, 0.4, 1.0, 0.5, 0.6],
      [0.2, 0.8, 0.5, 1.0, 0.6],
      [0.3, 0.7, 0.6, 0.6, 1.0],
  ])
  summary = contextual.sense_summary(matrix, senses)
  # Within a: (0,2) twice; within b: (1,3), (1,4), (3,4), each twice. Cross: the other 12 cells.
  assert summary["by_sense"] == pytest.approx({"a": 0.9, "b": (0.8 + 0.7 + 0.6) / 3})
  assert summary["within"] == pytest.approx((2 * 0.9 + 2 * (0.8 + 0.7 + 0.6)) / 8)
  assert summary["cross"] == pytest.approx(2 * (0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.6) / 12)
  # Nearest others: 0 -> 2 (a), 1 -> 3 (b), 2 -> 0 (a), 3 -> 1 (b), 4 -> 1 (b); then sentence 4
  # moves next to sentence 2 (sense a).
  assert summary["nearest_same_sense"] == 5
  matrix[4, 2] = 0.95
  assert contextual.sense_summary(matrix, senses)["nearest_same_sense"] == 4


def test_similarity_matrix_is_the_cosine():
  vectors = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  expected = np.array([[1, 0, 0.5**0.5], [0, 1, 0.5**0.5], [0.5**0.5, 0.5**0.5, 1]])
  np.testing.assert_allclose(contextual.similarity_matrix(vectors), expected, atol=1e-12)


def test_sentences_are_grouped_by_sense_and_checked():
  lines = [
      "sea\tThe whale dived.", "", "land\tA whale of a time.", "sea\tA WHALE spouted.",
      "land\tWhale-sized lunch."
  ]
  sentences = contextual.parse_sentences(lines, "whale", "f.tsv")
  assert sentences.senses == ("sea", "sea", "land", "land")
  assert sentences.texts == ("The whale dived.", "A WHALE spouted.", "A whale of a time.",
                             "Whale-sized lunch.")
  assert contextual.word_span("A WHALE spouted.", "whale") == (2, 7)
  with pytest.raises(ValueError, match=r"f.tsv has \{'sea': 2, 'land': 1\}"):
    contextual.parse_sentences(lines[:4], "whale", "f.tsv")
  with pytest.raises(ValueError, match="f.tsv line 2 is not `sense<TAB>sentence`"):
    contextual.parse_sentences(["sea\tThe whale dived.", "no tab here"], "whale", "f.tsv")


def test_shipped_examples_load():
  for name, (_, word) in contextual.EXAMPLES.items():
    sentences = contextual.load_sentences(example=name)
    assert sentences.word == word and len(set(sentences.senses)) == 2
    assert len(sentences.texts) == 12
    assert all(text.lower().count(word) == 1 for text in sentences.texts)  # as PROVENANCE.md says


def run_command(*args):
  return subprocess.run([sys.executable, "-m", "jaxssl.analysis.contextual", *args],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        check=False)


def whale_file(tmp_path, extra=""):
  path = tmp_path / "whale.tsv"
  path.write_text(
      "sea\tThe whale dived deep into the sea.\n"
      "sea\tA great whale spouted near the ship.\n"
      "land\tWe had a whale of a time at the fair.\n"
      "land\tThe whale of a party went on all night.\n" + extra,
      encoding="utf-8")
  return str(path)


def test_command_writes_the_heatmap_and_table_for_a_jaxssl_workdir(tiny_encoder, tmp_path):
  output = tmp_path / "out"
  result = run_command(f"--init_from={tiny_encoder}", f"--sentences={whale_file(tmp_path)}",
                       "--word=whale", "--layer=1", f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert (output / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  report = (output / "similarity.md").read_text(encoding="utf-8")
  sentences = contextual.load_sentences(path=whale_file(tmp_path), word="whale")
  model, tokenizer = contextual.load_encoder(tiny_encoder)
  summary = contextual.sense_summary(
      contextual.similarity_matrix(
          contextual.word_vectors(model, tokenizer, sentences.texts, "whale", 1)), sentences.senses)
  row = re.search(r"^\| 1 \(heatmap\) \| ([\d.]+) \| ([\d.]+) \|", report, re.MULTILINE)
  assert (float(row[1]), float(row[2])) == (round(summary["within"], 3), round(summary["cross"], 3))
  assert f"within sense {summary['within']:.3f}, cross sense {summary['cross']:.3f}" in result.stdout
  # The tiny SentencePiece vocabulary has the word as one piece.
  assert "| 3 | land | We had a whale of a time at the fair. | ▁whale |" in report


def test_command_error_is_one_line_and_writes_nothing(tmp_path):
  output = tmp_path / "out"
  result = run_command("--init_from=minilm", "--example=banks", f"--output={output}")
  assert result.returncode == 2
  assert [line for line in result.stderr.splitlines() if line.startswith("error")
         ] == ["error: unknown example 'banks'; choose one of ['bank', 'guo', 'ruguo']."]
  assert not output.exists()


def test_a_sentence_without_the_word_or_a_bad_layer_is_refused_before_writing(
    random_minilm_encoder, tmp_path):
  with pytest.raises(ValueError) as error:
    contextual.load_sentences(path=whale_file(tmp_path, "land\tThe sea was calm.\n"), word="whale")
  assert str(
      error.value) == "sentence 'The sea was calm.' does not contain 'whale'; fix or remove it."
  output = tmp_path / "out"
  model, tokenizer = random_minilm_encoder
  with pytest.raises(ValueError) as error:
    contextual.analyse(model, tokenizer, "tiny", contextual.load_sentences(example="bank"), 3,
                       str(output))
  assert str(error.value) == ("layer=3 is out of range: this encoder has layers 0 (embeddings) to "
                              "2 (its last block).")
  assert not output.exists()
