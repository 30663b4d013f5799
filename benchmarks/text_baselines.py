"""Text-aware baselines for the fine-tuning results table: simple models that read the text.

    python benchmarks/text_baselines.py                 # every offline task but QA, dev splits
    python benchmarks/text_baselines.py --json=baselines.json

Each is trained on the task's whole ``train`` split and scored on its whole ``validation``
split with the task's metrics (``jaxssl.core.tasks.kinds.METRICS``):

  sentiment, sentiment_zh  TF-IDF of word 1-2-grams (Chinese: character 1-3-grams) and
                           scikit-learn's LogisticRegression;
  rating                   the same features and Ridge regression;
  paraphrase               one threshold on the Dice overlap of the two verses' lower-cased word
                           sets, the threshold that is best on train;
  pos                      each word's most frequent training tag (NOUN for unseen words).

QA's overlap heuristic (the candidate name or number whose neighbouring words overlap the
question most, 0.748 exact match on validation) is measured by the dataset's builder, in
jaxssl/data/tasks/PROVENANCE.md, not here.
"""

import collections
import json

import numpy as np
from absl import app
from absl import flags
from sklearn import feature_extraction
from sklearn import linear_model

from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
from jaxssl.data import corpora

flags.DEFINE_list("tasks", ["sentiment", "rating", "sentiment_zh", "paraphrase", "pos"],
                  "Tasks to measure.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (None: TFDS's default).")
flags.DEFINE_string("json", None, "Also write the results here as JSON.")


def splits(name, data_dir):
  task = catalog.get_task(name)
  return task, *(
      corpora.load_examples(task.dataset, split, data_dir) for split in ("train", "validation"))


def scores(task, labels, predictions):
  return {metric: float(kinds.METRICS[metric](labels, predictions)) for metric in task.metrics}


def bag_of_ngrams(task, train, dev, chinese=False):
  """TF-IDF n-grams into logistic regression (classes) or ridge regression (values)."""
  vectorizer = feature_extraction.text.TfidfVectorizer(
      analyzer="char" if chinese else "word",
      ngram_range=(1, 3) if chinese else (1, 2),
      sublinear_tf=True)
  text = task.text_keys[0]
  features = vectorizer.fit_transform([example[text] for example in train])
  model = (
      linear_model.Ridge() if task.kind == "regression" else linear_model.LogisticRegression(
          max_iter=2000))
  model.fit(features, [example[task.label_key] for example in train])
  predictions = model.predict(vectorizer.transform([example[text] for example in dev]))
  return scores(task, [example[task.label_key] for example in dev], predictions)


def dice_overlap(example, task):
  a, b = (set(example[key].lower().split()) for key in task.text_keys)
  return 2 * len(a & b) / max(len(a) + len(b), 1)


def overlap_threshold(task, train, dev):
  """Paraphrase if the Dice overlap of the word sets reaches the threshold best on train."""
  train_overlap = np.array([dice_overlap(example, task) for example in train])
  train_labels = np.array([example[task.label_key] for example in train])
  candidates = np.unique(train_overlap)
  accuracy = [np.mean((train_overlap >= c) == train_labels) for c in candidates]
  threshold = candidates[int(np.argmax(accuracy))]
  dev_overlap = np.array([dice_overlap(example, task) for example in dev])
  return scores(task, [example[task.label_key] for example in dev], (dev_overlap
                                                                     >= threshold).astype(int))


def most_frequent_tag(task, train, dev):
  """Each word's most frequent training tag; unseen words get NOUN's."""
  counts = collections.defaultdict(collections.Counter)
  for example in train:
    for word, tag in zip(example[task.text_keys[0]], example[task.label_key]):
      counts[word][tag] += 1
  names = corpora.label_names(task.dataset, flags.FLAGS.data_dir, task.label_key)
  noun = names.index("NOUN")
  tags, predictions = [], []
  for example in dev:
    for word, tag in zip(example[task.text_keys[0]], example[task.label_key]):
      tags.append(tag)
      predictions.append(counts[word].most_common(1)[0][0] if word in counts else noun)
  return scores(task, tags, predictions)


BASELINES = {
    "sentiment": ("TF-IDF word 1-2-grams + logistic regression", bag_of_ngrams),
    "rating": ("TF-IDF word 1-2-grams + ridge regression", bag_of_ngrams),
    "sentiment_zh": ("TF-IDF character 1-3-grams + logistic regression",
                     lambda task, train, dev: bag_of_ngrams(task, train, dev, chinese=True)),
    "paraphrase": ("word-overlap (Dice) threshold", overlap_threshold),
    "pos": ("most frequent tag per word", most_frequent_tag),
}


def measure(tasks, data_dir):
  """{task: {"baseline": description, **metrics}}."""
  results = {}
  for name in tasks:
    description, baseline = BASELINES[name]
    task, train, dev = splits(name, data_dir)
    results[name] = {"baseline": description, **baseline(task, train, dev)}
  return results


def main(argv):
  del argv
  results = measure(flags.FLAGS.tasks, flags.FLAGS.data_dir)
  print("| task | baseline | dev metrics |\n|---|---|---|")
  for name, result in results.items():
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "baseline")
    print(f"| {name} | {result['baseline']} | {metrics} |")
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
