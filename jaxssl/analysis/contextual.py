"""Contextual embeddings: one word's vectors across sentences that use it in different senses.

    python -m jaxssl.analysis.contextual --init_from=minilm --example=bank --output=/tmp/bank
    python -m jaxssl.analysis.contextual --init_from=WORKDIR --sentences=FILE.tsv --word=WORD

A static embedding gives "bank" one vector; an encoder gives it one per sentence. Here the
word's vector in each sentence is read at one layer (0: the embeddings' output, N: after block
N), and the cosine similarities between sentences show whether sentences of one sense (a river's
bank) sit closer together than sentences of different senses (a bank for money).

The word is found in each sentence's text (case-insensitively, its first occurrence); its vector
is the mean of the vectors of the tokens whose character span overlaps that occurrence: every
piece of a word the tokenizer splits, or the whole piece a character sits inside (SentencePiece
often joins 苹果 into one piece, so 果's vector is then that piece's).

Writes heatmap.png (the similarity matrix) and similarity.md (mean within-sense and cross-sense
similarity by layer, the sentences, the matrix) into ``--output``.
"""

import dataclasses
import functools
import importlib.resources
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx
from matplotlib import figure
from matplotlib import font_manager
from matplotlib import ft2font

from jaxssl import cli
from jaxssl import files
from jaxssl.core import finetune

# --example name -> (sentence file shipped in jaxssl/data/tasks, the word they share).
EXAMPLES = {
    "bank": ("contextual_bank.tsv", "bank"),
    "guo": ("contextual_guo.tsv", "果"),
    "ruguo": ("contextual_ruguo.tsv", "果"),  # 果 in 苹果 (apple) vs in 如果 (if)
}
LABEL_CHARACTERS = 48
# Batches are padded to a multiple of this, so sentence sets of similar lengths share a compile.
LENGTH_BUCKET = 32  # a sentence longer than this is cut in the heatmap's tick labels


@dataclasses.dataclass(frozen=True)
class Sentences:
  """Sentences that all use ``word``, each labelled with the sense it is used in."""
  word: str
  senses: tuple[str, ...]
  texts: tuple[str, ...]


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string(
      "init_from", None, "A BERT encoder: minilm (see jaxssl.pretrained), a Hugging Face "
      "BERT directory, or a jaxssl BERT pretraining workdir.")
  flags.DEFINE_string("example", None, f"A shipped sentence set: one of {sorted(EXAMPLES)}.")
  flags.DEFINE_string("sentences", None, "Instead of --example: a file of `sense<TAB>sentence` "
                      "lines (UTF-8).")
  flags.DEFINE_string("word", None, "With --sentences: the word (or character) to follow.")
  flags.DEFINE_integer("layer", None, "0: the embeddings' output; N: after block N "
                       "(default: the last block).")
  flags.DEFINE_string("output", None, "Directory to write heatmap.png and similarity.md into.")
  flags.mark_flags_as_required(["init_from", "output"])


def parse_sentences(lines, word, source):
  """``Sentences`` from ``sense<TAB>sentence`` lines (blank lines skipped), grouped by sense in
  the order senses first appear, so each sense is one block of the similarity matrix."""
  if not word:
    raise ValueError(f"{source}: the word to follow is empty; pass --word.")
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    sense, tab, text = line.rstrip("\n").partition("\t")
    if not tab or not sense.strip() or not text.strip():
      raise ValueError(f"{source} line {number} is not `sense<TAB>sentence`: {line.strip()!r}.")
    rows.append((sense.strip(), text.strip()))
  order = list(dict.fromkeys(sense for sense, _ in rows))
  counts = {sense: sum(s == sense for s, _ in rows) for sense in order}
  if len(order) < 2 or min(counts.values()) < 2:
    raise ValueError(f"{source} has {counts or 'no sentences'}; within- and cross-sense "
                     "similarities need at least two senses of at least two sentences each.")
  for _, text in rows:
    word_span(text, word)
  rows.sort(key=lambda row: order.index(row[0]))
  return Sentences(word, tuple(sense for sense, _ in rows), tuple(text for _, text in rows))


def load_sentences(example=None, path=None, word=None):
  """A shipped example by name, or ``path``'s sentences with ``word``: exactly one of the two."""
  if (example is None) == (path is None):
    raise ValueError("pass either --example (one of "
                     f"{sorted(EXAMPLES)}) or --sentences=FILE.tsv with --word.")
  if example is not None:
    if example not in EXAMPLES:
      raise ValueError(f"unknown example {example!r}; choose one of {sorted(EXAMPLES)}.")
    file_name, word = EXAMPLES[example]
    text = importlib.resources.files("jaxssl.data").joinpath("tasks", file_name).read_text("utf-8")
    return parse_sentences(text.splitlines(), word, file_name)
  if not os.path.exists(path):
    raise ValueError(f"--sentences={path!r} does not exist.")
  with open(path, encoding="utf-8") as f:
    return parse_sentences(f.readlines(), word or "", path)


def word_span(sentence, word):
  """(start, end) characters of ``word``'s first case-insensitive occurrence in ``sentence``."""
  # str.lower() keeps the length of most text but not all ("İ" becomes two characters), so the
  # search compares character by character instead of searching the lowered sentence.
  length = len(word)
  target = word.casefold()
  for start in range(len(sentence) - length + 1):
    if sentence[start:start + length].casefold() == target:
      return start, start + length
  raise ValueError(f"sentence {sentence!r} does not contain {word!r}; fix or remove it.")


def word_tokens(tokenizer, sentence, word):
  """(token ids, positions of the tokens whose characters overlap ``word``), positions counted
  from the first token after [CLS]."""
  start, end = word_span(sentence, word)
  ids, offsets = tokenizer.encode_with_offsets(sentence)
  # An empty span (SentencePiece's lone "▁") holds no character of the word.
  positions = [i for i, (s, e) in enumerate(offsets) if s < e and s < end and e > start]
  if not positions:
    raise ValueError(f"no token of sentence {sentence!r} covers {word!r}.")
  return ids, positions


@functools.partial(jax.jit, static_argnums=0)
def _all_hidden_states(graphdef, params, input_ids, attention_mask):
  """(L + 1, S, T, D) float32 hidden states of the encoder ``(graphdef, params)``."""
  model = nnx.merge(graphdef, params)
  _, intermediates = model(input_ids, jnp.zeros_like(input_ids), attention_mask)
  return jnp.stack(intermediates["hidden_states"]).astype(jnp.float32)


def hidden_states(model, tokenizer, sentences):
  """Every layer's token vectors for ``sentences``, one padded batch with [CLS] and [SEP]:
  (L + 1, S, T, D) float32, layer 0 being the embeddings' output."""
  encoded = [tokenizer.encode(sentence) for sentence in sentences]
  longest = max(len(ids) for ids in encoded) + 2
  if longest > model.cfg.max_position:
    sentence = sentences[max(range(len(encoded)), key=lambda i: len(encoded[i]))]
    raise ValueError(f"sentence {sentence!r} is longer than the encoder's "
                     f"{model.cfg.max_position} positions; shorten it.")
  length = min(-(-longest // LENGTH_BUCKET) * LENGTH_BUCKET, model.cfg.max_position)
  input_ids = np.full((len(sentences), length), tokenizer.pad_id, np.int32)  # (S, T)
  for row, ids in enumerate(encoded):
    input_ids[row, :len(ids) + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
  attention_mask = input_ids != tokenizer.pad_id  # (S, T)
  graphdef, params = nnx.split(model)
  return np.asarray(_all_hidden_states(graphdef, params, input_ids, attention_mask))


def word_vectors_by_layer(model, tokenizer, sentences, word):
  """(L + 1, S, D): at every layer, the mean of the vectors of each sentence's tokens that
  overlap ``word``."""
  positions = [word_tokens(tokenizer, sentence, word)[1] for sentence in sentences]
  states = hidden_states(model, tokenizer, sentences)  # (L + 1, S, T, D)
  # +1: position 0 of each row is [CLS].
  return np.stack(
      [states[:, row, np.asarray(picked) + 1].mean(axis=1) for row, picked in enumerate(positions)],
      axis=1)


def check_layer(model, layer):
  """``layer`` if the encoder has it (None: the last block), else a ValueError."""
  num_layers = model.cfg.num_layers
  if layer is None:
    return num_layers
  if not 0 <= layer <= num_layers:
    raise ValueError(f"layer={layer} is out of range: this encoder has layers 0 (embeddings) "
                     f"to {num_layers} (its last block).")
  return layer


def word_vectors(model, tokenizer, sentences, word, layer=None):
  """(S, D): ``word``'s vector in each sentence at ``layer`` (0: embeddings; default last)."""
  layer = check_layer(model, layer)
  return word_vectors_by_layer(model, tokenizer, sentences, word)[layer]


def similarity_matrix(vectors):
  """(S, S) cosine similarities between the rows of ``vectors`` (S, D), in float64."""
  vectors = np.asarray(vectors, np.float64)
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  return unit @ unit.T


def sense_summary(matrix, senses):
  """Mean similarity over off-diagonal pairs of one sense ("within", and per sense in
  "by_sense") and over pairs of different senses ("cross"); "nearest_same_sense": how many
  sentences have, as their most similar other sentence, one of their own sense (a mean can hide
  a sentence that sits with the other sense)."""
  senses = np.asarray(senses)
  same = senses[:, None] == senses[None, :]  # (S, S)
  off_diagonal = ~np.eye(len(senses), dtype=bool)
  by_sense = {
      str(sense): float(matrix[same & off_diagonal & (senses[:, None] == sense)].mean())
      for sense in dict.fromkeys(senses.tolist())
  }
  nearest = np.where(off_diagonal, matrix, -np.inf).argmax(axis=1)  # (S,)
  return {
      "within": float(matrix[same & off_diagonal].mean()),
      "cross": float(matrix[~same].mean()),
      "by_sense": by_sense,
      "nearest_same_sense": int((senses[nearest] == senses).sum()),
  }


def load_encoder(init_from):
  """(BertEncoder without dropout, tokenizer) of the encoder ``init_from`` names."""
  settings = ml_collections.ConfigDict(
      dict(
          init_from=init_from,
          dropout_rate=0.0,
          attention_dropout_rate=0.0,
          max_seq_length=0,  # lengths are checked per sentence set in hidden_states
          seed=0))
  graphdef, params, tokenizer = finetune.load_encoder(settings)
  return nnx.merge(graphdef, params), tokenizer


def label_font(texts):
  """The path of an installed font that has a glyph for every character of ``texts``
  (matplotlib's default first), or None if there is none."""
  characters = {c for text in texts for c in text if not c.isspace()}
  default = font_manager.findfont(font_manager.FontProperties())
  candidates = sorted({font.fname for font in font_manager.fontManager.ttflist}
                      | set(font_manager.findSystemFonts()))
  for path in [default, *candidates]:
    try:
      font = ft2font.FT2Font(path)
    except (OSError, RuntimeError, ValueError):
      continue
    # Last Resort maps every character to a placeholder box: it "has" every glyph.
    if (not font.family_name.startswith("Last Resort") and
        all(font.get_char_index(ord(c)) for c in characters)):
      return path
  return None


def short(text):
  return text if len(text) <= LABEL_CHARACTERS else text[:LABEL_CHARACTERS - 1] + "…"


def plot_heatmap(matrix, sentences, title, font_path):
  """The similarity matrix with one tick label per sentence: ``sense: sentence``, or
  ``number. sense`` when ``font_path`` is None (no installed font can draw the sentences)."""
  if font_path is None:
    labels = [f"{i}. {sense}" for i, sense in enumerate(sentences.senses, 1)]
    font = font_manager.FontProperties()
  else:
    labels = [f"{sense}: {short(text)}" for sense, text in zip(sentences.senses, sentences.texts)]
    font = font_manager.FontProperties(fname=font_path)
  size = len(labels)
  fig = figure.Figure(figsize=(4 + 0.45 * size, 2.5 + 0.4 * size), layout="constrained")
  ax = fig.subplots()
  image = ax.imshow(matrix, cmap="viridis")
  fig.colorbar(image, ax=ax, shrink=0.8, label="cosine similarity")
  for row in range(size):
    for column in range(size):
      value = matrix[row, column]
      ax.text(
          column,
          row,
          f"{value:.2f}",
          ha="center",
          va="center",
          fontsize=6,
          color="black" if value > (matrix.min() + matrix.max()) / 2 else "white")
  # Lines between the senses' blocks.
  boundaries = [i for i in range(1, size) if sentences.senses[i] != sentences.senses[i - 1]]
  for boundary in boundaries:
    ax.axhline(boundary - 0.5, color="white", linewidth=2)
    ax.axvline(boundary - 0.5, color="white", linewidth=2)
  ax.set_xticks(range(size), [str(i) for i in range(1, size + 1)], fontsize=7)
  ax.set_yticks(range(size), labels, fontproperties=font, fontsize=7)
  ax.set_title(title, fontproperties=font, fontsize=9)
  return fig


def markdown_report(sentences, matrix, by_layer, layer, description, tokens):
  """similarity.md: the summary by layer, the sentences (with the tokens that formed the word's
  vector) and the similarity matrix at ``layer``."""
  senses = list(dict.fromkeys(sentences.senses))
  lines = [
      f"# Contextual vectors of “{sentences.word}” ({description})", "",
      "Mean cosine similarity between the word's vectors in different sentences (pairs of a "
      "sentence with itself left out). Layer 0 is the embeddings' output.", "",
      "| layer | within sense | cross sense | within − cross | nearest is same sense | " +
      " | ".join(f"within {sense}" for sense in senses) + " |",
      "|---|---|---|---|---|" + "---|" * len(senses)
  ]
  size = len(sentences.texts)
  for index, summary in enumerate(by_layer):
    marker = " (heatmap)" if index == layer else ""
    lines.append(f"| {index}{marker} | {summary['within']:.3f} | {summary['cross']:.3f} | "
                 f"{summary['within'] - summary['cross']:+.3f} | "
                 f"{summary['nearest_same_sense']}/{size} | " +
                 " | ".join(f"{summary['by_sense'][sense]:.3f}" for sense in senses) + " |")
  lines += [
      "", "## Sentences", "", "| # | sense | sentence | tokens of the word |", "|---|---|---|---|"
  ]
  for number, (sense, text, pieces) in enumerate(zip(sentences.senses, sentences.texts, tokens), 1):
    lines.append(f"| {number} | {sense} | {text} | {' '.join(pieces)} |")
  lines += [
      "", f"## Similarity matrix at layer {layer}", "",
      "| # | " + " | ".join(str(i) for i in range(1, size + 1)) + " |", "|---|" + "---|" * size
  ]
  for number, row in enumerate(matrix, 1):
    lines.append(f"| {number} | " + " | ".join(f"{value:.2f}" for value in row) + " |")
  return "\n".join(lines) + "\n"


def analyse(model, tokenizer, name, sentences, layer, output):
  """Runs the analysis of ``model`` (called ``name`` in titles) and writes ``output``/heatmap.png
  and similarity.md; returns (summary at ``layer``, notes to print). Nothing is written if a
  check fails."""
  layer = check_layer(model, layer)
  tokens, unknown = [], 0
  for sentence in sentences.texts:
    ids, positions = word_tokens(tokenizer, sentence, sentences.word)
    tokens.append([tokenizer.id_to_piece(ids[i]) for i in positions])
    unknown += all(ids[i] == tokenizer.unk_id for i in positions)
  vectors = word_vectors_by_layer(model, tokenizer, sentences.texts, sentences.word)
  by_layer = [sense_summary(similarity_matrix(v), sentences.senses) for v in vectors]
  matrix = similarity_matrix(vectors[layer])
  description = f"{name}, layer {layer} of {len(vectors) - 1}"
  notes = []
  if unknown:
    notes.append(f"{sentences.word!r} is an unknown token ([UNK]) in {unknown} of "
                 f"{len(sentences.texts)} sentences: its vector there comes from its context only.")
  font_path = label_font([sentences.word, *sentences.texts])
  if font_path is None:
    notes.append("no installed font draws these sentences: the heatmap numbers them, and "
                 "similarity.md lists each number's sentence.")
  summary = by_layer[layer]
  # Without a font for the sentences, the title leaves the word out too.
  title = (f"{'' if font_path is None else f'“{sentences.word}”: '}{description}\n"
           f"within sense {summary['within']:.3f}, cross sense {summary['cross']:.3f}")
  fig = plot_heatmap(matrix, sentences, title, font_path)
  report = markdown_report(sentences, matrix, by_layer, layer, description, tokens)
  files.save_figure(fig, os.path.join(output, "heatmap.png"), dpi=150)
  files.write_text(os.path.join(output, "similarity.md"), report)
  return summary, notes


def main():
  FLAGS = flags.FLAGS
  sentences = load_sentences(FLAGS.example, FLAGS.sentences, FLAGS.word)
  model, tokenizer = load_encoder(FLAGS.init_from)
  summary, notes = analyse(model, tokenizer, FLAGS.init_from, sentences, FLAGS.layer, FLAGS.output)
  for note in notes:
    print(f"note: {note}")
  print(f"{sentences.word!r}: mean similarity within sense {summary['within']:.3f}, "
        f"cross sense {summary['cross']:.3f} "
        f"({', '.join(f'{s} {v:.3f}' for s, v in summary['by_sense'].items())}); "
        f"{summary['nearest_same_sense']} of {len(sentences.texts)} sentences have their "
        f"nearest neighbour in their own sense. "
        f"Wrote {FLAGS.output}/heatmap.png and similarity.md")


if __name__ == "__main__":
  cli.run(main, define_flags)
