"""BERT on sequences that are not language (Kao & Lee, 2021, "Is BERT a cross-disciplinary
knowledge learner?"): DNA, protein and melody classification with an English BERT.

    python -m jaxssl.analysis.beyond_language --workdir=/tmp/beyond
    python -m jaxssl.analysis.beyond_language --workdir=/tmp/beyond --tasks=splice \\
        --sequence_words=words,random:0,chars --seeds=3

Each sequence's symbols become English words (``jaxssl.data.sequence_words``: DNA's A, T, C, G
as "we", "you", "he", "she" by default), and per task (``catalog.SEQUENCE_TASKS``) and mapping:

- MiniLM, pretrained on English, fine-tuned (``jaxssl.suite``'s runs, budget ``BUDGETS``);
- the same architecture and tokenizer from random weights (``scratch``), same budget;
- classical baselines on the raw symbols, trained on the same training split: logistic
  regression on k-mer counts (k = 1..``KMER[alphabet]``) and on one-hot symbols per position
  (sequences padded to the longest), both from scikit-learn;
- the majority class of the training split.

Runs go in ``WORKDIR/<mapping>/<minilm|scratch>/<task>[.seed<k>]``; a finished run is read
back, an unfinished one resumes. Writes ``WORKDIR/beyond_language.md`` (mean ± sd over seeds),
``beyond_language.json`` and ``beyond_language.png``.
"""

import os

import numpy as np
from absl import flags
from matplotlib import figure
from sklearn import feature_extraction
from sklearn import linear_model
from sklearn import pipeline
from sklearn import preprocessing

from jaxssl import cli
from jaxssl import files
from jaxssl import suite
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
from jaxssl.data import corpora
from jaxssl.data import sequence_words

# Per task, the fine-tuning fields on top of jaxssl.suite's SHARED (batches of 16, learning rate
# 1e-4 for both encoders, rows of 64 tokens: 60 bases and [CLS]/[SEP]); a few minutes per run of
# MiniLM on 2 CPU cores.
BUDGETS = {
    "splice": dict(num_train_steps=300, warmup_steps=30),  # 2.3 passes over 2,100 sequences
    "promoters": dict(num_train_steps=60, warmup_steps=6, log_every=5),  # 15 passes over 64
    "malonylation": dict(num_train_steps=300, warmup_steps=30),  # 0.63 pass over 7,636
    # About 3 passes over 1,600 tunes; rows of 128 tokens hold most tunes whole (longer ones are
    # windowed).
    "essen": dict(num_train_steps=300, warmup_steps=30, max_seq_length=128),
}
# Longest k of the k-mer baseline, per alphabet (for melodies: interval n-grams).
KMER = {"dna": 4, "protein": 2, "intervals": 3}
INITS = ("minilm", "scratch")


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "Directory for the runs, the table and the plot.")
  flags.DEFINE_list("tasks", list(catalog.SEQUENCE_TASKS), "Sequence tasks to run.")
  flags.DEFINE_list("sequence_words", ["words"],
                    "Mappings of symbols to words: words, chars, random:SEED.")
  flags.DEFINE_integer("seeds", 3, "Fine-tuning runs per (encoder, task, mapping): mean ± sd.")
  flags.DEFINE_string("data_dir", None, "TFDS data dir (None: TFDS's default).")
  flags.mark_flags_as_required(["workdir"])


def check(tasks, mappings, seeds):
  """Every value checked before any run starts."""
  for task in tasks:
    if task not in catalog.SEQUENCE_TASKS:
      raise ValueError(f"--tasks has {task!r}; use sequence tasks: "
                       f"{', '.join(catalog.SEQUENCE_TASKS)}.")
  for mapping in mappings:
    sequence_words.check_mapping(mapping)
  if seeds < 1:
    raise ValueError(f"seeds={seeds} is out of range; set it >= 1.")


def sequences_and_labels(task, split, data_dir):
  examples = corpora.load_examples(task.dataset, split, data_dir)
  return [e[task.text_keys[0]] for e in examples], np.array([e[task.label_key] for e in examples])


def one_hot_positions(sequences, alphabet, length):
  """(N, length * |alphabet|) one-hot symbols per position, zeros past a sequence's end."""
  index = {symbol: i for i, symbol in enumerate(alphabet)}
  features = np.zeros((len(sequences), length, len(alphabet)), np.float32)
  for row, sequence in enumerate(sequences):
    for position, symbol in enumerate(sequence[:length]):
      features[row, position, index[symbol]] = 1.0
  return features.reshape(len(sequences), -1)


def classical_baselines(task, data_dir):
  """{baseline name: dev metrics} of the logistic regressions and the majority class."""
  task_record = catalog.SEQUENCE_TASKS[task]
  train = sequences_and_labels(task_record, "train", data_dir)
  dev = sequences_and_labels(task_record, task_record.dev_split, data_dir)
  return baseline_scores(train, dev, task_record.alphabet, task_record.metrics)


def baseline_scores(train, dev, alphabet, metrics):
  """{baseline name: {metric: value}} on ``dev`` of the baselines fitted on ``train`` (each a
  (sequences, labels (N,)) pair) over the alphabet named ``alphabet``."""
  (train_x, train_y), (dev_x, dev_y) = train, dev
  symbols = sequence_words.ALPHABETS[alphabet]
  kmers = pipeline.make_pipeline(
      feature_extraction.text.CountVectorizer(
          analyzer="char", ngram_range=(1, KMER[alphabet]), lowercase=False),
      preprocessing.StandardScaler(with_mean=False), linear_model.LogisticRegression(max_iter=5000))
  kmers.fit(train_x, train_y)
  length = max(len(s) for s in train_x)
  positions = linear_model.LogisticRegression(max_iter=5000)
  positions.fit(one_hot_positions(train_x, symbols, length), train_y)
  predictions = {
      "k-mer counts + logistic regression":
          kmers.predict(dev_x),
      "one-hot per position + logistic regression":
          positions.predict(one_hot_positions(dev_x, symbols, length)),
      "majority class":
          np.full_like(dev_y,
                       np.bincount(train_y).argmax()),
  }
  return {
      name: {
          metric: float(kinds.METRICS[metric](dev_y, predicted)) for metric in metrics
      } for name, predicted in predictions.items()
  }


def run(workdir, tasks, mappings, seeds, data_dir=None):
  """{"fine_tuned": {mapping: {init: {task: [metrics per seed]}}}, "classical": {task: ...}}."""
  check(tasks, mappings, seeds)
  fine_tuned = {}
  for mapping in mappings:
    for task in tasks:
      results = suite.run_suite(
          os.path.join(workdir, mapping.replace(":", "_")),
          INITS, [task],
          seeds=seeds,
          data_dir=data_dir,
          sequence_words=mapping,
          **BUDGETS[task])
      for init, by_task in results.items():
        fine_tuned.setdefault(mapping, {}).setdefault(init, {}).update(by_task)
  classical = {task: classical_baselines(task, data_dir) for task in tasks}
  return {"fine_tuned": fine_tuned, "classical": classical, "tasks": tasks, "seeds": seeds}


def table(results):
  """Markdown: a row per (task, metric), the classical baselines then each mapping's scratch and
  MiniLM columns (mean ± sd over the seeds)."""
  tasks = results["tasks"]
  classical_names = list(results["classical"][tasks[0]])
  columns = [(mapping, init) for mapping in results["fine_tuned"] for init in INITS]
  header = classical_names + [f"{init} ({mapping})" for mapping, init in columns]
  lines = [
      "| task | metric | " + " | ".join(header) + " |",
      "|---|---|" + "---|" * len(header),
  ]
  for task in tasks:
    for metric in catalog.SEQUENCE_TASKS[task].metrics:
      cells = [f"{results['classical'][task][name][metric]:.4f}" for name in classical_names]
      cells += [
          suite.mean_and_sd([run[metric]
                             for run in results["fine_tuned"][mapping][init][task]])
          for mapping, init in columns
      ]
      lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(results, path):
  """Dev accuracy per task: the classical baselines and each mapping's scratch and MiniLM runs
  as grouped bars (mean over the seeds, sd as error bars)."""
  tasks = results["tasks"]
  bars = [(name, [results["classical"][task][name]["accuracy"]
                  for task in tasks], None)
          for name in results["classical"][tasks[0]]]
  for mapping, by_init in results["fine_tuned"].items():
    for init in INITS:
      scores = [[run["accuracy"] for run in by_init[init][task]] for task in tasks]
      means, sds = zip(*map(suite.mean_sd, scores))
      bars.append((f"{init}, {mapping}", means, sds))
  fig = figure.Figure(figsize=(max(6.4, 2.2 + 2.4 * len(tasks)), 4.2), layout="constrained")
  axis = fig.subplots()
  width = 0.8 / len(bars)
  positions = np.arange(len(tasks))  # (T,)
  for index, (name, means, sds) in enumerate(bars):
    drawn = axis.bar(
        positions + (index - (len(bars) - 1) / 2) * width,
        means,
        width,
        yerr=sds,
        capsize=2,
        label=name)
    axis.bar_label(drawn, fmt="%.2f", fontsize=6)
  axis.set_xticks(positions, tasks)
  axis.set_ylabel("dev accuracy")
  axis.set_ylim(0.0, 1.05)
  axis.set_title("English BERT on non-language sequences:\npretrained vs scratch vs classical")
  axis.legend(fontsize=7, loc="lower right")
  files.save_figure(fig, path, dpi=110)


def main():
  workdir = flags.FLAGS.workdir
  results = run(workdir, flags.FLAGS.tasks, flags.FLAGS.sequence_words, flags.FLAGS.seeds,
                flags.FLAGS.data_dir)
  markdown = table(results)
  files.write_text(os.path.join(workdir, "beyond_language.md"), markdown + "\n")
  files.write_json(os.path.join(workdir, "beyond_language.json"), results)
  plot(results, os.path.join(workdir, "beyond_language.png"))
  print(markdown)
  print(f"Table: {workdir}/beyond_language.md; plot: {workdir}/beyond_language.png")


if __name__ == "__main__":
  cli.run(main, define_flags)
