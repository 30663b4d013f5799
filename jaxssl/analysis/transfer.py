"""Zero-shot cross-lingual transfer: fine-tune on English sentiment only, evaluate on Chinese.

    python -m jaxssl.analysis.transfer --workdir=/tmp/transfer \\
        --pretrained=/tmp/bilingual_bert/full,/tmp/bilingual_bert/quarter
    python -m jaxssl.analysis.transfer --workdir=/tmp/transfer_e5 --pretrained=e5,minilm \\
        --learning_rate=3e-5 --seeds=3 --en_examples=100,300,1000

Each ``--pretrained`` workdir is a jaxssl BERT pretraining run (e.g. configs/bert_pretrain.py
with ``corpus=bilingual``: one vocabulary over English and Chinese). From each, and (unless
``--noscratch``) from the first one's architecture and tokenizer with random weights
(``scratch:PATH``; ``--scratch_of=NAME``: another encoder's), two fine-tuning runs
(``jaxssl.core.finetune.run`` with configs/bert_finetune.py and ``BUDGET``) per seed go in
``WORKDIR/<name>/`` (``<run>`` for seed 0, ``<run>.seed<k>`` for ``--seeds=N``'s others:
``jaxssl.suite.run_dir``):

- ``sentiment_en``: English sentences (``--en_dataset``), evaluated on their own dev split and,
  zero-shot, on the Chinese dev split of ``jaxssl_sentiment_zh`` (``predict.Predictor.evaluate``:
  the labels are matched by name, negative/positive in both);
- ``sentiment_zh``: the Chinese training split itself, the upper bound for the zero-shot number.

``--en_examples``: the curve of zero-shot accuracy against the number of English training
examples, for the first ``--pretrained`` model: ``sentiment_en.n<count>`` runs on the first
``count`` English sentences, at most ``num_train_steps`` steps and at most ``CURVE_EPOCHS`` passes
over them; the full training split is the curve's last point.

Text-blind baselines on the Chinese dev split: the majority class of the English and of the
Chinese training split. Each pretrained model's MLM accuracy is also measured on the English and
the Chinese validation documents apart (batched and masked as its own evaluation is), which shows
what it learnt of each language. A finished run is read back, not run again, and an unfinished
one resumes. Writes ``WORKDIR/transfer.md`` (the tables, mean ± sd over the seeds),
``transfer.json`` (every seed's metrics), ``transfer.png`` (grouped bars) and, with
``--en_examples``, ``examples_curve.png``.
"""

import math
import os

import jax
import numpy as np
from absl import flags
from matplotlib import figure

from jaxssl import cli
from jaxssl import files
from jaxssl import metrics as metrics_lib
from jaxssl import predict
from jaxssl import pretrained as pretrained_lib
from jaxssl import suite
from jaxssl import workdir as workdir_lib
from jaxssl.core import finetune
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core import trained
from jaxssl.core.tasks import kinds
from jaxssl.data import corpora
from jaxssl.data import pretraining

ZH_DATASET = "jaxssl_sentiment_zh"
DEV_SPLIT = "validation"
# The fine-tuning budget of every run, a few minutes of a mini BERT on 2 CPU cores (as in
# jaxssl.suite): 200 steps of 16 sentences of at most 64 tokens, under half a pass over either
# training split (7,339 English, 13,891 Chinese sentences); whole dev splits (917 and 1,736).
# The same learning rate for pretrained and scratch encoders.
BUDGET = dict(
    train_split="train",
    eval_split=DEV_SPLIT,
    num_train_steps=200,
    batch_size=16,
    max_seq_length=64,
    learning_rate=2e-4,
    warmup_steps=20,
    log_every=20)
METRICS = ("accuracy", "f1", "matthews_corrcoef")
# The corpora whose validation documents the pretrained models' MLM accuracy is measured on.
LANGUAGES = {"en": "jaxssl_corpus/en", "zh": "jaxssl_corpus/zh"}
# (fine-tuning run, evaluated on): the three bars of each model.
SETTINGS = (("sentiment_en", "en"), ("sentiment_en", "zh"), ("sentiment_zh", "zh"))
# A curve point's most passes over its English examples: 100 sentences get 63 steps of 16, not
# 200 (32 passes), so small points cost less; 3 passes (19 steps) left e5 at chance in English.
CURVE_EPOCHS = 10


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_list(
      "pretrained", None, "jaxssl BERT pretraining workdirs or published encoders (e5, minilm), "
      "compared side by side; scratch takes the first one's architecture.")
  flags.DEFINE_string("workdir", None, "Directory for the fine-tuning runs, tables and plot.")
  flags.DEFINE_string("en_dataset", "jaxssl_sentiment/movie_reviews",
                      "English sentiment dataset to fine-tune on (a jaxssl_sentiment domain).")
  flags.DEFINE_float("learning_rate", BUDGET["learning_rate"], "Peak learning rate of every run.")
  flags.DEFINE_integer("num_train_steps", BUDGET["num_train_steps"], "Steps of every run.")
  flags.DEFINE_integer("seeds", 1, "Runs per (model, setting), seeds 0..N-1: mean ± sd.")
  flags.DEFINE_bool(
      "scratch", True, "Also fine-tune the first model's architecture and tokenizer from random "
      "weights (as costly as the first model's own runs).")
  flags.DEFINE_string(
      "scratch_of", None, "The encoder (name or workdir) whose architecture and tokenizer the "
      "scratch runs take instead of the first --pretrained's, e.g. e5 beside --pretrained=minilm.")
  flags.DEFINE_list(
      "en_examples", [], "Numbers of English training sentences for the curve of zero-shot "
      "accuracy (first --pretrained model); empty: no curve.")
  flags.DEFINE_string("data_dir", None, "TFDS data dir (None: TFDS's default).")
  flags.mark_flags_as_required(["pretrained", "workdir"])


def check_pretrained(paths):
  """{run name: path} of BERT (or ELECTRA) pretraining workdirs with a checkpoint, or published
  encoders by name (``jaxssl.pretrained.ALIASES``: e5, minilm); anything else is an error."""
  names = {}
  for path in paths:
    if path in pretrained_lib.ALIASES:
      if pretrained_lib.objective_of(path) != "bert":
        raise ValueError(f"--pretrained={path} is a decoder; give an encoder (e5, minilm).")
      names[path] = path
      continue
    config = workdir_lib.read_config(path)
    if config.get("objective") not in finetune.ENCODER_OBJECTIVES:
      raise ValueError(f"workdir {path} holds a {config.get('objective')!r} run, not BERT "
                       "pretraining; pass workdirs of configs/bert_pretrain.py runs.")
    if not workdir_lib.has_checkpoint(path):
      raise ValueError(f"workdir {path} has no checkpoint yet; let its pretraining save one.")
    name = suite.run_name(path)
    if name in names or name == "scratch":
      raise ValueError(f"workdir {path} has the name {name!r} of another model here; give the "
                       "workdirs distinct last path components (not 'scratch').")
    names[name] = path
  return names


def finetuned(run_dir, task, init_from, en_dataset, data_dir, budget):
  """The final dev metrics of fine-tuning ``init_from`` on ``task``, run now if not finished."""
  dataset = en_dataset if task == "sentiment" else ""
  config = suite.task_config(task, init_from, **budget, dataset=dataset, data_dir=data_dir)
  metrics = suite.finished_metrics(run_dir, config)
  if metrics is None:  # not run yet, or interrupted: this starts or resumes it
    metrics = finetune.run(config, run_dir)
  return metrics


def majority_on(dataset, split, eval_split, data_dir):
  """Dev metrics on ``eval_split`` of ``ZH_DATASET`` of always predicting the most frequent
  label (by name) of ``dataset``'s ``split``."""
  labels = np.array(
      [example["label"] for example in corpora.load_examples(dataset, split, data_dir)])
  majority = corpora.label_names(dataset, data_dir)[np.bincount(labels).argmax()]
  dev = np.array([e["label"] for e in corpora.load_examples(ZH_DATASET, eval_split, data_dir)])
  predictions = np.full_like(dev, corpora.label_names(ZH_DATASET, data_dir).index(majority))
  scores = {name: float(kinds.METRICS[name](dev, predictions)) for name in METRICS}
  return {**scores, "examples": len(dev), "label": majority}


def run_transfer(workdir,
                 pretrained,
                 en_dataset,
                 data_dir=None,
                 budget=None,
                 languages=None,
                 seeds=1,
                 en_examples=(),
                 scratch=True,
                 scratch_of=None):
  """{"models": {name: {setting: [metrics of each seed]}}, "curve": ..., "baselines": ...,
  "pretraining": ...}.

  ``budget``: fields of ``BUDGET`` to change; ``languages``: {language: corpus} whose validation
  documents the pretrained models' MLM accuracy is measured on (``LANGUAGES`` by default);
  ``en_examples``: the English training-set sizes of the curve (none: no curve); ``scratch``:
  whether to run the first model's architecture (or ``scratch_of``'s, an encoder as in
  ``pretrained``) from random weights too.
  """
  budget = {**BUDGET, **(budget or {})}
  if seeds < 1:
    raise ValueError(f"seeds={seeds} is out of range; set it >= 1.")
  for count in en_examples:
    if count < 1:
      raise ValueError(f"en_examples has {count}; give numbers of English sentences >= 1.")
  names = check_pretrained(pretrained)
  if scratch_of is not None:
    check_pretrained([scratch_of])
  inits = {**names, **({"scratch": f"scratch:{scratch_of or pretrained[0]}"} if scratch else {})}
  first = next(iter(names))  # the curve first: its small runs are the cheapest
  curve = {}
  for count in en_examples:
    for seed in range(seeds):
      point = curve_budget(budget, count, seed)
      en_dir = suite.run_dir(workdir, first, f"sentiment_en.n{count}", seed)
      en = finetuned(en_dir, "sentiment", names[first], en_dataset, data_dir, point)
      curve.setdefault(count, []).append({
          "en": {
              metric: en[metric] for metric in METRICS
          },
          "zh": zero_shot(en_dir, budget, data_dir),
          "steps": point["num_train_steps"],
      })
  models = {}
  for name, init_from in inits.items():
    for seed in range(seeds):
      seeded = {**budget, "seed": seed}
      settings = models.setdefault(name, {setting: [] for setting in setting_names()})
      en_dir = suite.run_dir(workdir, name, "sentiment_en", seed)
      zh_dir = suite.run_dir(workdir, name, "sentiment_zh", seed)
      en = finetuned(en_dir, "sentiment", init_from, en_dataset, data_dir, seeded)
      zh = finetuned(zh_dir, "sentiment_zh", init_from, en_dataset, data_dir, seeded)
      settings["sentiment_en/en"].append({metric: en[metric] for metric in METRICS})
      settings["sentiment_en/zh"].append(zero_shot(en_dir, budget, data_dir))
      settings["sentiment_zh/zh"].append({metric: zh[metric] for metric in METRICS})
  baselines = {
      "majority class of the English training split":
          majority_on(en_dataset, budget["train_split"], budget["eval_split"], data_dir),
      "majority class of the Chinese training split":
          majority_on(ZH_DATASET, budget["train_split"], budget["eval_split"], data_dir),
  }
  languages = languages or LANGUAGES
  return {
      "models": models,
      "curve": {
          "model": first,
          "points": curve,
          "all": len(corpora.load_examples(en_dataset, budget["train_split"], data_dir)),
      },
      "baselines": baselines,
      "pretraining": {
          name: pretraining_summary(path, languages, data_dir)
          for name, path in names.items()
          if path not in pretrained_lib.ALIASES
      },
      "en_dataset": en_dataset,
      "eval_split": budget["eval_split"],
      "num_train_steps": budget["num_train_steps"],
  }


def setting_names():
  return [f"{run}/{language}" for run, language in SETTINGS]


def zero_shot(en_dir, budget, data_dir):
  """The English-trained run's metrics on the Chinese dev split."""
  return predict.Predictor(en_dir).evaluate(ZH_DATASET, budget["eval_split"], data_dir)


def curve_budget(budget, count, seed):
  """The budget of the curve's point of ``count`` English sentences: the first ``count`` of the
  training split, for at most ``CURVE_EPOCHS`` passes (and at most the budget's steps), warm-up
  a tenth of that."""
  split = budget["train_split"].partition("[")[0]
  steps = min(budget["num_train_steps"], math.ceil(CURVE_EPOCHS * count / budget["batch_size"]))
  return {
      **budget,
      "seed": seed,
      "train_split": f"{split}[:{count}]",
      "num_train_steps": steps,
      "warmup_steps": max(1, steps // 10),
      "log_every": min(budget["log_every"], steps),
  }


def pretraining_summary(path, languages, data_dir):
  """What a pretraining workdir trained on, its last evaluation, and its MLM accuracy on each
  language's validation documents."""
  config = workdir_lib.read_config(path)
  evaluations = [r for r in metrics_lib.read_metrics(path) if r["split"] == "eval"]
  last = evaluations[-1] if evaluations else {}
  return {
      "dataset": config.dataset,
      "train_split": config.train_split,
      "steps": last.get("step"),
      "mlm_accuracy": last.get("mlm_accuracy"),
      "unigram_mlm_accuracy": last.get("unigram_mlm_accuracy"),
      "nsp_accuracy": last.get("nsp_accuracy"),
      "mlm_accuracy_by_language": mlm_accuracies(path, languages, data_dir),
  }


def mlm_accuracies(path, languages, data_dir):
  """{language: MLM accuracy} of the BERT pretrained in ``path`` on the validation documents of
  each corpus in ``languages``, paired, masked and batched as its own evaluation is."""
  config, objective, tokenizer, graphdef, params = trained.load_trained(path)
  _, eval_step = objective.steps(graphdef, steps.make_optimizer(config)[0], tokenizer)
  eval_step = jax.jit(eval_step)
  rng = rng_lib.run_key(config.seed, "eval")  # pretraining's evaluation key
  accuracies = {}
  for language, dataset in languages.items():
    documents = pretraining.tokenize_documents(
        tokenizer, corpora.load_texts(dataset, config.eval_split, data_dir, config.text_key))
    _, batches = objective.batches(tokenizer, documents, documents,
                                   dict(process_index=0, process_count=1))
    sums = [
        eval_step(params, batch, jax.random.fold_in(rng, index))
        for index, batch in enumerate(batches)
    ]
    accuracies[language] = objective.summarize(jax.tree.map(lambda *parts: sum(parts),
                                                            *sums))["mlm_accuracy"]
  return accuracies


def tables(results):
  """The Markdown tables: transfer results (mean ± sd over the seeds), the examples curve, then
  the pretraining runs."""
  en_name, split = results["en_dataset"], results["eval_split"]
  evaluated_on = {"en": f"{en_name} {split}", "zh": f"{ZH_DATASET} {split}"}
  trained_on = {"sentiment_en": f"{en_name} (English)", "sentiment_zh": f"{ZH_DATASET} (Chinese)"}
  lines = [
      "| model | fine-tuned on | evaluated on | accuracy | F1 | Matthews |",
      "|---|---|---|---|---|---|",
  ]
  for name, settings in results["models"].items():
    for run, language in SETTINGS:
      scores = settings[f"{run}/{language}"]
      note = " (zero-shot)" if (run, language) == ("sentiment_en", "zh") else ""
      lines.append(f"| {name} | {trained_on[run]} | {evaluated_on[language]}{note} | " + " | ".join(
          suite.mean_and_sd([seed[metric] for seed in scores]) for metric in METRICS) + " |")
  for name, scores in results["baselines"].items():
    lines.append(f"| {name} (always {scores['label']}) | — | {evaluated_on['zh']} | " +
                 " | ".join(f"{scores[metric]:.4f}" for metric in METRICS) + " |")
  curve = results["curve"]
  if curve["points"]:
    lines += [
        "",
        f"| {curve['model']}: English training sentences | steps | {evaluated_on['en']} accuracy "
        f"| {evaluated_on['zh']} accuracy (zero-shot) |",
        "|---|---|---|---|",
    ]
    for count, seeds, num_steps in curve_rows(results):
      lines.append(f"| {count} | {num_steps} | " + " | ".join(
          suite.mean_and_sd([seed[language]["accuracy"]
                             for seed in seeds])
          for language in ("en", "zh")) + " |")
  runs = results["pretraining"]
  if not runs:  # published encoders only
    return "\n".join(lines)
  languages = list(next(iter(runs.values()))["mlm_accuracy_by_language"])
  lines += [
      "",
      "| pretrained model | dataset | train split | steps | eval MLM accuracy | unigram baseline "
      "| eval NSP accuracy | " +
      " | ".join(f"MLM accuracy, {language} only" for language in languages) + " |",
      "|---|---|---|---|" + "---|" * (3 + len(languages)),
  ]
  for name, run in runs.items():
    scores = [run[key] for key in ("mlm_accuracy", "unigram_mlm_accuracy", "nsp_accuracy")]
    scores += [run["mlm_accuracy_by_language"][language] for language in languages]
    lines.append(f"| {name} | {run['dataset']} | {run['train_split']} | {run['steps']} | " +
                 " | ".join(map(_percent, scores)) + " |")
  return "\n".join(lines)


def curve_rows(results):
  """[(number of English sentences, [each seed's {"en": metrics, "zh": metrics}], steps)] by
  size, the full training split (the models table's runs) last."""
  curve = results["curve"]
  points = sorted((int(count), seeds) for count, seeds in curve["points"].items())
  models = results["models"][curve["model"]]
  full = [{
      "en": en,
      "zh": zh
  } for en, zh in zip(models["sentiment_en/en"], models["sentiment_en/zh"])]
  return ([(count, seeds, seeds[0]["steps"]) for count, seeds in points] +
          [(curve["all"], full, results["num_train_steps"])])


def _percent(value):
  return "—" if value is None else f"{100 * value:.2f}%"


def plot(results, path):
  """Accuracy as grouped bars: a group per model, a bar per (fine-tuned on, evaluated on), the
  mean over the seeds with their sd as error bars; the text-blind baselines on the Chinese dev
  split as horizontal lines."""
  models = list(results["models"])
  labels = {
      ("sentiment_en", "en"): "fine-tuned en, eval en",
      ("sentiment_en", "zh"): "fine-tuned en, eval zh (zero-shot)",
      ("sentiment_zh", "zh"): "fine-tuned zh, eval zh",
  }
  fig = figure.Figure(figsize=(7.5, 4.2), layout="constrained")
  axis = fig.subplots()
  width = 0.8 / len(SETTINGS)
  positions = np.arange(len(models))  # (M,)
  for index, (run, language) in enumerate(SETTINGS):
    means, sds = zip(
        *(suite.mean_sd([seed["accuracy"]
                         for seed in results["models"][name][f"{run}/{language}"]])
          for name in models))
    bars = axis.bar(
        positions + (index - 1) * width,
        means,
        width,
        yerr=sds,
        capsize=3,
        label=labels[run, language])
    axis.bar_label(bars, fmt="%.3f", fontsize=7)
  for (name, scores), style in zip(results["baselines"].items(), (":", "--")):
    axis.axhline(
        scores["accuracy"],
        color="gray",
        linestyle=style,
        label=f"{name} on zh ({scores['accuracy']:.3f})")
  axis.set_xticks(positions, models)
  axis.set_ylabel("dev accuracy")
  axis.set_ylim(0.0, 1.0)
  axis.set_title("Sentiment: English fine-tuning evaluated on Chinese")
  axis.legend(fontsize=7, loc="upper right")
  files.save_figure(fig, path, dpi=110)


def plot_curve(results, path):
  """Zero-shot Chinese and in-language English dev accuracy against the number of English
  training sentences (log scale), mean ± sd over the seeds; the Chinese-trained upper bound and
  the Chinese majority class as horizontal lines."""
  rows = curve_rows(results)
  counts = [count for count, _, _ in rows]
  fig = figure.Figure(figsize=(6.4, 4.0), layout="constrained")
  axis = fig.subplots()
  for language, label in (("en", "English dev (in-language)"), ("zh", "Chinese dev (zero-shot)")):
    means, sds = zip(
        *(suite.mean_sd([seed[language]["accuracy"] for seed in seeds]) for _, seeds, _ in rows))
    axis.errorbar(counts, means, yerr=sds, marker="o", capsize=3, label=label)
  name = results["curve"]["model"]
  upper, _ = suite.mean_sd(
      [seed["accuracy"] for seed in results["models"][name]["sentiment_zh/zh"]])
  axis.axhline(upper, color="gray", linestyle="--", label=f"trained on Chinese ({upper:.3f})")
  majority = results["baselines"]["majority class of the Chinese training split"]["accuracy"]
  axis.axhline(majority, color="gray", linestyle=":", label=f"Chinese majority ({majority:.3f})")
  axis.set_xscale("log")
  axis.set_xlabel("English training sentences")
  axis.set_ylabel("dev accuracy")
  axis.set_title(f"{name}: zero-shot Chinese sentiment vs English data")
  axis.legend(fontsize=7, loc="lower right")
  files.save_figure(fig, path, dpi=110)


def main():
  workdir = flags.FLAGS.workdir
  budget = dict(
      learning_rate=flags.FLAGS.learning_rate, num_train_steps=flags.FLAGS.num_train_steps)
  en_examples = [_count(value) for value in flags.FLAGS.en_examples]
  results = run_transfer(
      workdir,
      flags.FLAGS.pretrained,
      flags.FLAGS.en_dataset,
      flags.FLAGS.data_dir,
      budget,
      seeds=flags.FLAGS.seeds,
      en_examples=en_examples,
      scratch=flags.FLAGS.scratch,
      scratch_of=flags.FLAGS.scratch_of)
  markdown = tables(results)
  files.write_text(os.path.join(workdir, "transfer.md"), markdown + "\n")
  files.write_json(os.path.join(workdir, "transfer.json"), results)
  plot(results, os.path.join(workdir, "transfer.png"))
  plots = f"{workdir}/transfer.png"
  if en_examples:
    plot_curve(results, os.path.join(workdir, "examples_curve.png"))
    plots += f", {workdir}/examples_curve.png"
  print(markdown)
  print(f"Tables: {workdir}/transfer.md; plots: {plots}")


def _count(value):
  if not value.isdigit():
    raise ValueError(f"--en_examples={value!r}: give numbers of English sentences >= 1, "
                     "e.g. --en_examples=100,300,1000.")
  return int(value)


if __name__ == "__main__":
  cli.run(main, define_flags)
