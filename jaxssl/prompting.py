"""Classification by prompting a language model, with no added layer.

    python -m jaxssl.prompting --workdir=/tmp/gpt --dataset=jaxssl_sentiment/movie_reviews
    python -m jaxssl.prompting --init_from=smollm2 --output_dir=/tmp/prompting_smollm2

A prompt holds an instruction, k labelled demonstrations and the query; the prediction is the
label word the model finds most likely next (Brown et al. 2020). A prompt biases the model
towards some label (the demonstrations' labels and order, the label words' own frequency), so
the calibrated prediction (Zhao et al. 2021, "Calibrate Before Use") divides each label's
probability by its probability after a content-free query ("N/A") in the same prompt.

Models plug in through a ``score_fn``: token sequences in, per-token log-probabilities out, so
any decoder (a jaxssl GPT through ``gpt_score_fn``, a Hugging Face model) is evaluated the same
way. Writes prompting.json and prompting.png (accuracy against k) into ``--output_dir``.
"""

import functools
import itertools
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
from jaxssl.core import trained
from jaxssl.data import corpora
from jaxssl.data.builders import shipped

INSTRUCTION = "Classify the sentiment of each sentence as positive or negative."
TEMPLATE = "Sentence: {text}\nSentiment: {label}\n\n"
CONTENT_FREE_QUERY = "N/A"
# Padded lengths are multiples of this, so scoring compiles once per bucket, not per length.
LENGTH_BUCKET = 32


def define_flags():
  """The command line's flags (defined only when run as a program, so importing the
  library functions next to another command's module never defines a flag twice)."""
  flags.DEFINE_string("workdir", None, "A GPT pretraining workdir (jaxssl.main).")
  flags.DEFINE_string(
      "init_from", None, "Instead of --workdir: a published decoder, e.g. "
      "smollm2 (see jaxssl.pretrained).")
  flags.DEFINE_string("dataset", "jaxssl_sentiment/movie_reviews",
                      "TFDS dataset with 'text' and a class 'label'.")
  flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the run's).")
  flags.DEFINE_list("shots", ["0", "1", "2", "4", "8"], "Demonstrations per prompt.")
  flags.DEFINE_integer("num_examples", 200, "Test examples (label-balanced).")
  flags.DEFINE_integer("batch_size", 16, "Sequences per forward pass.")
  flags.DEFINE_integer("seed", 0, "Seeds the test sample and the demonstrations.")
  flags.DEFINE_string("output_dir", None, "Where to write (default WORKDIR/prompting).")


def build_prompt(instruction, demonstrations, query, template=TEMPLATE):
  """The instruction, each (text, label word) demonstration in ``template``, then the query.

  The query's part of the template stops before its label (e.g. "...\\nSentiment:"), so the
  label word, after a space, is what the model predicts next.
  """
  if "{text}" not in template or "{label}" not in template.partition("{text}")[2]:
    raise ValueError(f"template={template!r} needs '{{text}}' and then '{{label}}'; "
                     f"e.g. {TEMPLATE!r}")
  header = f"{instruction}\n\n" if instruction else ""
  shown = "".join(template.format(text=text, label=label) for text, label in demonstrations)
  query_template = template.partition("{label}")[0].rstrip()
  return header + shown + query_template.format(text=query)


def label_token_ids(tokenizer, label_words):
  """Each label word's tokens as they follow the prompt, i.e. after a space."""
  return [tokenizer.encode(f" {word}") for word in label_words]


def label_log_probs(score_fn, prompts_ids, label_ids):
  """(N, C) summed log-probability of each label's tokens right after each prompt.

  ``score_fn(sequences)`` returns, per sequence, the log-probability of token i given the
  tokens before it, for every i. Identical sequences are scored once.
  """
  if any(not prompt for prompt in prompts_ids):
    raise ValueError("a prompt is empty; a label's first token needs at least one token before it.")
  if any(not label for label in label_ids):
    raise ValueError("a label has no tokens; use label words the tokenizer encodes.")
  sequences = [tuple(prompt) + tuple(label) for prompt in prompts_ids for label in label_ids]
  unique = list(dict.fromkeys(sequences))
  scores = dict(zip(unique, score_fn([list(sequence) for sequence in unique])))
  label_lengths = [len(label) for label in label_ids] * len(prompts_ids)
  sums = [
      np.sum(scores[sequence][len(sequence) - length:])
      for sequence, length in zip(sequences, label_lengths)
  ]
  return np.asarray(sums, np.float64).reshape(len(prompts_ids), len(label_ids))


def calibrate(log_probs, content_free_log_probs):
  """Divides label probabilities by the content-free ones: argmax of the result predicts."""
  return log_probs - content_free_log_probs


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _next_token_log_probs(graphdef, params, tokens, segment_ids):
  """(B, T - 1): log p(tokens[:, t + 1] | tokens[:, :t + 1]) from one uncached forward pass."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  logits, _ = nnx.merge(graphdef, params)(tokens, positions, segment_ids)  # (B, T, V)
  logits = logits[:, :-1]
  targets = jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, T - 1)
  # log_softmax at the targets only: no (B, T, V) array of log-probabilities is materialised.
  return targets - jax.nn.logsumexp(logits, axis=-1)


def right_pad(sequences, pad_id, num_rows, length):
  """(num_rows, length) tokens and segment_ids (1 on the sequences, 0 on padding and spare rows)."""
  tokens = np.full((num_rows, length), pad_id, np.int32)
  segment_ids = np.zeros((num_rows, length), np.int32)
  for row, sequence in enumerate(sequences):
    tokens[row, :len(sequence)] = sequence
    segment_ids[row, :len(sequence)] = 1
  return tokens, segment_ids


def gpt_score_fn(graphdef, params, pad_id, batch_size=16):
  """A ``score_fn`` for a jaxssl GPT.

  Entry 0 of each sequence's scores is NaN: jaxssl documents start without a start token, so
  the first token has nothing to be predicted from. Sequences are sorted by length and
  right-padded, in batches of ``batch_size`` rows, to a multiple of LENGTH_BUCKET tokens;
  segment 0 hides the padding, so a sequence scores the same alone or in any batch.
  """
  if not (isinstance(batch_size, int) and batch_size >= 1):
    raise ValueError(f"batch_size={batch_size!r} is invalid; use an int >= 1.")
  max_position = nnx.merge(graphdef, params).cfg.max_position

  def score_fn(sequences):
    for sequence in sequences:
      if not 0 < len(sequence) <= max_position:
        raise ValueError(f"a sequence has {len(sequence)} tokens; the model takes 1 to "
                         f"max_position={max_position}, so shorten the prompts.")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [None] * len(sequences)
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", unit="batch"):
      batch = order[start:start + batch_size]
      longest = len(sequences[batch[-1]])
      length = min(-(-longest // LENGTH_BUCKET) * LENGTH_BUCKET, max_position)
      tokens, segment_ids = right_pad([sequences[i] for i in batch], pad_id, batch_size, length)
      log_probs = np.asarray(_next_token_log_probs(graphdef, params, tokens, segment_ids))
      for row, i in enumerate(batch):
        scores[i] = np.concatenate([[np.nan], log_probs[row, :len(sequences[i]) - 1]])
    return scores

  return score_fn


def balanced_quotas(total, num_labels, rng):
  """How many of ``total`` items each label gets: equal shares, the remainder to random labels."""
  quotas = np.full(num_labels, total // num_labels)
  quotas[rng.choice(num_labels, total % num_labels, replace=False)] += 1
  return quotas


def indices_by_label(examples, num_labels):
  """For each label, the indices of ``examples`` that carry it."""
  labels = np.asarray([example["label"] for example in examples], np.int64)
  for label in labels:
    if not 0 <= label < num_labels:
      raise ValueError(f"an example has label {label} but there are {num_labels} label words; "
                       "pass one label word per class.")
  return [np.flatnonzero(labels == label) for label in range(num_labels)]


def sample_demonstrations(pool, by_label, query, k, rng):
  """k pool examples in random order, balanced over labels as far as k and the pool allow.

  Never the query itself: pool examples with its id or its text are skipped. ``by_label`` is
  ``indices_by_label(pool, ...)``, computed once for many queries.
  """
  is_query = lambda example: (
      example["text"] == query["text"] or ("id" in query and example.get("id") == query["id"]))

  def shuffled(candidates):  # lazily: a few copies of the query are skipped, not searched for
    return (i for i in rng.permutation(candidates) if not is_query(pool[i]))

  chosen = []
  for candidates, quota in zip(by_label, balanced_quotas(k, len(by_label), rng)):
    chosen += itertools.islice(shuffled(candidates), quota)
  if len(chosen) < k:  # a label ran out: fill up from the other labels
    taken = set(chosen)
    rest = (i for i in shuffled(np.arange(len(pool))) if i not in taken)
    chosen += itertools.islice(rest, k - len(chosen))
  if len(chosen) < k:
    raise ValueError(f"k={k} exceeds the pool of {len(chosen)} demonstrations that are not the "
                     "query; lower k or enlarge the pool.")
  return [pool[i] for i in rng.permutation(chosen)]


def fit_demonstrations(tokenizer, instruction, demonstrations, queries, template,
                       max_prompt_tokens):
  """The demonstrations, with texts cut to a common token count so that every query's prompt
  fits in ``max_prompt_tokens``; also whether any text was cut. Queries are never cut."""
  prompt_length = lambda shown: max(
      len(tokenizer.encode(build_prompt(instruction, shown, query, template))) for query in queries)
  if prompt_length(demonstrations) <= max_prompt_tokens:
    return demonstrations, False
  alone = prompt_length([])
  if alone > max_prompt_tokens:
    raise ValueError(f"a query alone makes a {alone}-token prompt, more than "
                     f"max_prompt_tokens={max_prompt_tokens}; shorten it or use a longer context.")
  text_ids = [tokenizer.encode(text) for text, _ in demonstrations]
  cut = lambda cap: [(text if len(ids) <= cap else tokenizer.decode(ids[:cap]), label)
                     for (text, label), ids in zip(demonstrations, text_ids)]
  if prompt_length(cut(0)) > max_prompt_tokens:
    raise ValueError(f"{len(demonstrations)} demonstrations do not fit in max_prompt_tokens="
                     f"{max_prompt_tokens} even with empty texts; lower k.")
  fits, too_long = 0, max(len(ids) for ids in text_ids)  # the largest cap that fits, by bisection
  while too_long - fits > 1:
    cap = (fits + too_long) // 2
    if prompt_length(cut(cap)) <= max_prompt_tokens:
      fits = cap
    else:
      too_long = cap
  return cut(fits), True


def check_shots(shots, pool_size):
  if not shots:
    raise ValueError("shots is empty; pass at least one number of demonstrations, e.g. (0, 4).")
  for k in shots:
    if not (isinstance(k, int) and k >= 0):
      raise ValueError(f"shots={list(shots)} holds {k!r}; use ints >= 0.")
    if k > pool_size:
      raise ValueError(f"k={k} exceeds the pool of {pool_size} demonstrations; lower k or "
                       "enlarge the pool.")


def evaluate_shots(score_fn,
                   tokenizer,
                   examples_pool,
                   test_examples,
                   shots=(0, 1, 2, 4, 8),
                   seed=0,
                   *,
                   max_prompt_tokens,
                   label_words=shipped.SENTIMENT_LABELS,
                   instruction=INSTRUCTION,
                   template=TEMPLATE):
  """Accuracy of k-shot prompting for each k in ``shots``, uncalibrated and calibrated.

  Examples are dicts with 'text' and an int 'label' indexing ``label_words`` (and an optional
  'id'). For each k and test example, k demonstrations are drawn from ``examples_pool``
  (seeded by ``seed`` and k, see ``sample_demonstrations``); the content-free prompt has the
  same demonstrations. ``max_prompt_tokens`` is the longest prompt the model takes with a
  label after it: longer prompts get their demonstrations' texts cut (``fit_demonstrations``).
  Returns one row per k: shots, accuracy, calibrated_accuracy, n, shortened_prompts.
  """
  check_shots(shots, len(examples_pool))
  by_label = indices_by_label(examples_pool, len(label_words))
  indices_by_label(test_examples, len(label_words))  # a test label without a word fails here
  label_ids = label_token_ids(tokenizer, label_words)
  prompts, content_free_prompts, shortened = [], [], []
  for k in shots:
    rng = np.random.default_rng([seed, k])
    shortened.append(0)
    for example in test_examples:
      drawn = sample_demonstrations(examples_pool, by_label, example, k, rng)
      shown, was_cut = fit_demonstrations(tokenizer, instruction,
                                          [(d["text"], label_words[d["label"]]) for d in drawn],
                                          (example["text"], CONTENT_FREE_QUERY), template,
                                          max_prompt_tokens)
      shortened[-1] += was_cut
      prompts.append(tokenizer.encode(build_prompt(instruction, shown, example["text"], template)))
      content_free_prompts.append(
          tokenizer.encode(build_prompt(instruction, shown, CONTENT_FREE_QUERY, template)))
  # One scoring call for every k: fewer, fuller batches of similar length.
  log_probs = label_log_probs(score_fn, prompts + content_free_prompts, label_ids)
  log_probs, content_free = np.split(log_probs, 2)
  labels = np.asarray([example["label"] for example in test_examples])
  rows = []
  for k, k_log_probs, k_content_free, k_shortened in zip(shots, np.split(log_probs, len(shots)),
                                                         np.split(content_free, len(shots)),
                                                         shortened):
    calibrated = calibrate(k_log_probs, k_content_free)
    rows.append({
        "shots": k,
        "accuracy": float(np.mean(k_log_probs.argmax(-1) == labels)),
        "calibrated_accuracy": float(np.mean(calibrated.argmax(-1) == labels)),
        "n": len(test_examples),
        "shortened_prompts": k_shortened
    })
  return rows


def balanced_sample(examples, num_examples, label_words, seed):
  """``num_examples`` examples, shuffled, with each label as equally often as possible."""
  by_label = indices_by_label(examples, len(label_words))
  rarest = int(np.argmin([len(indices) for indices in by_label]))
  most = len(by_label[rarest]) * len(label_words)
  if not 0 < num_examples <= most:
    raise ValueError(f"num_examples={num_examples} does not fit a label-balanced sample of these "
                     f"{len(examples)} examples ({len(by_label[rarest])} are "
                     f"{label_words[rarest]}); use 1 to {most}.")
  rng = np.random.default_rng(seed)
  chosen = np.concatenate([
      rng.choice(indices, quota, replace=False)
      for indices, quota in zip(by_label, balanced_quotas(num_examples, len(label_words), rng))
  ])
  return [examples[i] for i in rng.permutation(chosen)]


def evaluate_decoder(workdir=None,
                     init_from=None,
                     *,
                     dataset,
                     shots,
                     num_examples,
                     data_dir=None,
                     batch_size=16,
                     seed=0):
  """The report of k-shot prompting a decoder (see ``trained.load_decoder``) on ``dataset``'s test
  split, with the train split as the demonstration pool."""
  description, graphdef, params, tokenizer, run_data_dir = trained.load_decoder(workdir, init_from)
  data_dir = data_dir or run_data_dir
  label_words = corpora.label_names(dataset, data_dir)
  pool = corpora.load_examples(dataset, "train", data_dir)
  test = balanced_sample(
      corpora.load_examples(dataset, "test", data_dir), num_examples, label_words, seed)
  longest_label = max(len(ids) for ids in label_token_ids(tokenizer, label_words))
  max_prompt_tokens = nnx.merge(graphdef, params).cfg.max_position - longest_label
  score_fn = gpt_score_fn(graphdef, params, tokenizer.pad_id, batch_size)
  rows = evaluate_shots(
      score_fn,
      tokenizer,
      pool,
      test,
      shots,
      seed,
      max_prompt_tokens=max_prompt_tokens,
      label_words=label_words)
  majority = int(np.bincount([example["label"] for example in pool]).argmax())
  return {
      "model": description,
      "workdir": workdir and os.path.abspath(workdir),
      "init_from": init_from,
      "dataset": dataset,
      "demonstration_split": "train",
      "test_split": "test",
      "num_examples": len(test),
      "seed": seed,
      "label_words": list(label_words),
      "instruction": INSTRUCTION,
      "template": TEMPLATE,
      "content_free_query": CONTENT_FREE_QUERY,
      "max_prompt_tokens": max_prompt_tokens,
      "majority_class": label_words[majority],
      "majority_accuracy": float(np.mean([example["label"] == majority for example in test])),
      "rows": rows,
  }


def plot(report, path):
  """Accuracy against k, uncalibrated solid and calibrated dashed, over the majority baseline."""
  shots = [row["shots"] for row in report["rows"]]
  fig = figure.Figure(figsize=(6, 4), layout="constrained")
  axes = fig.add_subplot()
  axes.plot(shots, [row["accuracy"] for row in report["rows"]], "o-", label="uncalibrated")
  axes.plot(
      shots, [row["calibrated_accuracy"] for row in report["rows"]],
      "s--",
      label="calibrated (content-free 'N/A')")
  axes.axhline(
      report["majority_accuracy"],
      color="gray",
      linestyle=":",
      label=f"majority class ({report['majority_class']})")
  axes.set_xscale("symlog", base=2, linthresh=1)  # 0 shots on the same axis as 1, 2, 4, 8
  axes.set_xticks(shots, [str(k) for k in shots])
  axes.set_ylim(0, 1)
  axes.set_xlabel("demonstrations in the prompt (k)")
  axes.set_ylabel(f"accuracy ({report['num_examples']} test examples)")
  axes.set_title(f"{report['model']}\non {report['dataset']}", fontsize=9)
  axes.legend(fontsize=8)
  files.save_figure(fig, path, dpi=120)


def markdown_table(report):
  lines = [
      "| k | accuracy | calibrated accuracy | n | shortened prompts |", "|---|---|---|---|---|"
  ]
  lines += [
      f"| {row['shots']} | {row['accuracy']:.3f} | {row['calibrated_accuracy']:.3f} | "
      f"{row['n']} | {row['shortened_prompts']} |" for row in report["rows"]
  ]
  lines.append(f"\nMajority class ({report['majority_class']}): "
               f"{report['majority_accuracy']:.3f}")
  return "\n".join(lines)


def parse_shots(values):
  try:
    return [int(value) for value in values]
  except ValueError:
    raise ValueError(f"--shots={','.join(values)} is invalid; use comma-separated ints "
                     "such as 0,1,2,4,8.") from None


def main():
  output_dir = flags.FLAGS.output_dir
  if output_dir is None:
    if flags.FLAGS.workdir is None:
      raise ValueError("--output_dir is required with --init_from (there is no workdir to "
                       "write into).")
    output_dir = os.path.join(flags.FLAGS.workdir, "prompting")
  report = evaluate_decoder(
      flags.FLAGS.workdir,
      flags.FLAGS.init_from,
      dataset=flags.FLAGS.dataset,
      shots=parse_shots(flags.FLAGS.shots),
      num_examples=flags.FLAGS.num_examples,
      data_dir=flags.FLAGS.data_dir,
      batch_size=flags.FLAGS.batch_size,
      seed=flags.FLAGS.seed)
  files.write_json(os.path.join(output_dir, "prompting.json"), report)
  plot(report, os.path.join(output_dir, "prompting.png"))
  print(markdown_table(report))
  print(f"\nWrote {output_dir}/prompting.json and prompting.png")


if __name__ == "__main__":
  cli.run(main, define_flags)
