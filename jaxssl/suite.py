"""The fine-tuning suite: every offline task, from each of several encoders, in one GLUE-style
table, and the training-loss curves of pretrained vs scratch encoders in one PNG.

    python -m jaxssl.suite --workdir=/tmp/suite                  # minilm and scratch, all tasks
    python -m jaxssl.suite --workdir=/tmp/suite --tasks=sentiment --init_from=minilm,scratch

Each (encoder, task, seed) run is ``jaxssl.core.finetune.run`` with configs/bert_finetune.py and
the small CPU budget of ``BUDGETS`` in ``WORKDIR/<init_from name>/<task>`` (seed 0) or
``<task>.seed<k>`` (``--seeds=N`` runs seeds 0..N-1: the seed draws the head, a scratch
encoder, example order and dropout); a finished run (its final evaluation in metrics.jsonl) is
read back instead of run again, and an unfinished one resumes, so an interrupted suite picks up
where it stopped. Writes ``WORKDIR/suite.md`` (the table: every task metric, mean ± sd over
the seeds, with its text-blind baseline), ``WORKDIR/suite.json`` (every seed's metrics) and
``WORKDIR/loss_curves.png``.
"""

import os
import statistics

from absl import flags
from matplotlib import figure

from jaxssl import cli
from jaxssl import files
from jaxssl import metrics as metrics_lib
from jaxssl import workdir as workdir_lib
from jaxssl.core import finetune
from jaxssl.core.tasks import catalog

# Per task: the config fields that keep a run to a few minutes on 2 CPU cores. Slices are of
# the shipped splits; steps * batch_size is about one pass over the training slice or less,
# except for Chinese sentiment, where 120 steps left the scratch encoder at the majority class.
BUDGETS = {
    "sentiment":
        dict(train_split="train[:2048]", eval_split="validation[:512]"),
    "rating":
        dict(train_split="train[:2048]", eval_split="validation[:512]"),
    "paraphrase":
        dict(train_split="train[:2048]", eval_split="validation[:512]", max_seq_length=96),
    "pos":
        dict(train_split="train[:2048]", eval_split="validation[:256]"),
    "qa":
        dict(train_split="train[:2048]", eval_split="validation[:256]", max_seq_length=128),
    "sentiment_zh":
        dict(train_split="train[:2048]", eval_split="validation[:512]", num_train_steps=480),
}
SHARED = dict(
    num_train_steps=120,
    batch_size=16,
    max_seq_length=64,
    warmup_steps=12,
    log_every=10,
    # For both encoders, pretrained or scratch (5e-4 left scratch encoders predicting one class).
    learning_rate=1e-4)


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "Directory for the runs, the table and the plot.")
  flags.DEFINE_list("init_from", ["minilm", "scratch"],
                    "Encoders to fine-tune (configs/bert_finetune.py init_from values).")
  flags.DEFINE_list("tasks", list(catalog.OFFLINE_TASKS), "Tasks to run.")
  flags.DEFINE_enum(
      "recipe", "", ["", "full"], "'': the small CPU budgets of BUDGETS; 'full': each task's "
      "full recipe (configs/bert_finetune.py RECIPES), as in the README's results table.")
  flags.DEFINE_float("learning_rate", None,
                     "Peak learning rate of every run (default: the budget's or recipe's).")
  flags.DEFINE_integer("num_train_steps", None,
                       "Steps of every run (default: each task's budget in BUDGETS).")
  flags.DEFINE_string("data_dir", None, "TFDS data dir (None: TFDS's default).")
  flags.DEFINE_integer("seeds", 1, "Runs per (encoder, task), seeds 0..N-1: mean ± sd.")
  flags.mark_flags_as_required(["workdir"])


def task_config(task, init_from, recipe="", **fields):
  """configs/bert_finetune.py for ``task`` with the suite's budget (or the task's ``recipe``)
  and ``fields`` on top; one evaluation, at the end."""
  config = cli.load_config("bert_finetune",
                           f"task={task}" + (f",recipe={recipe}" if recipe else ""))
  budget = {} if recipe else {**SHARED, **BUDGETS.get(task, {})}
  config.update({**budget, "init_from": init_from, **fields})
  config.eval_every = config.num_train_steps
  return config


def run_name(init_from):
  """A directory name for an init_from value: a name, or the last part of a path;
  "scratch:PATH" (PATH's shape with random weights) is "scratch-" and PATH's."""
  prefix, _, shape = init_from.partition(":")
  if prefix == "scratch" and shape:
    return "scratch-" + run_name(shape)
  return os.path.basename(os.path.normpath(init_from))


def run_dir(workdir, init_from, task, seed):
  """Where one run of the suite lives: ``<init_from name>/<task>``, ``<task>.seed<k>`` for k>0."""
  return os.path.join(workdir, run_name(init_from), task + (f".seed{seed}" if seed else ""))


# What makes a finished run's metrics this config's: the fields a resume must keep plus those
# that change the result of an otherwise identical run.
RESULT_FIELDS = finetune.RUN_IDENTITY_FIELDS + ("num_train_steps", "learning_rate", "warmup_steps",
                                                "warmup_ratio", "layer_lr_decay")


def finished_metrics(workdir, config):
  """The final dev metrics of the run of ``config`` in ``workdir``, or None if it has not
  finished; a workdir holding another config's run is an error, not a stale result."""
  if not workdir_lib.has_metrics(workdir):
    return None
  workdir_lib.check_compatible(workdir, config, RESULT_FIELDS)
  evaluations = [r for r in metrics_lib.read_metrics(workdir) if r["split"] == "eval"]
  if not evaluations or evaluations[-1]["step"] != config.num_train_steps:
    return None
  return {k: v for k, v in evaluations[-1].items() if k not in ("step", "split")}


def run_suite(workdir, inits, tasks, seeds=1, **fields):
  """{init name: {task: [final dev metrics of each seed]}}, running whatever has not finished
  yet."""
  if seeds < 1:
    raise ValueError(f"seeds={seeds} is out of range; set it >= 1.")
  for task in tasks:
    catalog.get_task(task)  # an unknown name fails before hours of work
  names = [run_name(init_from) for init_from in inits]
  for init_from, name in zip(inits, names):
    if names.count(name) > 1:
      raise ValueError(f"init_from {init_from!r} would share the run directory {name!r} with "
                       "another encoder; give their paths distinct last components.")
  results = {}
  for init_from in inits:
    for task in tasks:
      for seed in range(seeds):
        directory = run_dir(workdir, init_from, task, seed)
        config = task_config(task, init_from, seed=seed, **fields)
        metrics = finished_metrics(directory, config)
        if metrics is None:  # not run yet, or interrupted: this starts or resumes it
          metrics = finetune.run(config, directory)
        results.setdefault(run_name(init_from), {}).setdefault(task, []).append(metrics)
  return results


def mean_sd(values):
  """(mean, sample standard deviation) of ``values``; the sd of one value is 0."""
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_and_sd(values):
  """"0.8500" for one value, "0.8500 ± 0.0100" (sample standard deviation) for several."""
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return "{:.4f} ± {:.4f}".format(*mean_sd(values))


def table(results, tasks):
  """A Markdown table: a row per task metric, its text-blind baseline, a column per encoder
  (mean ± sd over the seeds when there are several)."""
  names = list(results)
  lines = [
      "| task | metric | baseline | " + " | ".join(names) + " |",
      "|---|---|---|" + "---|" * len(names),
  ]
  for task in tasks:
    any_run = results[names[0]][task][0]  # baselines depend on the data, not the seed
    for metric in catalog.TASKS[task].metrics:
      baseline_name, baseline = next(
          ((name, value)
           for name, value in any_run.items()
           if name.endswith(f"_{metric}") and name.startswith(("majority_", "majority_answer_"))),
          ("mean prediction", None))
      baseline_text = (f"{baseline:.4f} ({baseline_name.rsplit('_' + metric, 1)[0]})"
                       if baseline is not None else "—")
      scores = " | ".join(
          mean_and_sd([run[metric] for run in results[name][task]]) for name in names)
      lines.append(f"| {task} | {metric} | {baseline_text} | {scores} |")
  return "\n".join(lines)


def plot_losses(workdir, results, tasks, path):
  """Training loss per task (seed 0), one panel each: scratch solid, every other encoder
  dashed; the legend gives the final dev score on the task's first metric (mean over seeds)."""
  columns = min(3, len(tasks))
  rows = -(-len(tasks) // columns)
  fig = figure.Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
  axes = fig.subplots(rows, columns, squeeze=False)
  for axis, task in zip(axes.flat, tasks):
    metric = catalog.TASKS[task].metrics[0]
    for name in results:
      records = [
          r for r in metrics_lib.read_metrics(run_dir(workdir, name, task, 0))
          if r["split"] == "train"
      ]
      score = statistics.mean(run[metric] for run in results[name][task])
      axis.plot([r["step"] for r in records], [r["loss"] for r in records],
                "-" if name == "scratch" else "--",
                label=f"{name} (dev {metric} {score:.3f})")
    axis.set_title(task)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.legend()
  for axis in list(axes.flat)[len(tasks):]:
    axis.remove()
  files.save_figure(fig, path, dpi=110)


def main():
  workdir, tasks = flags.FLAGS.workdir, flags.FLAGS.tasks
  fields = {
      name: getattr(flags.FLAGS, name)
      for name in ("num_train_steps", "learning_rate")
      if getattr(flags.FLAGS, name) is not None
  }
  results = run_suite(
      workdir,
      flags.FLAGS.init_from,
      tasks,
      seeds=flags.FLAGS.seeds,
      recipe=flags.FLAGS.recipe,
      data_dir=flags.FLAGS.data_dir,
      **fields)
  markdown = table(results, tasks)
  files.write_text(os.path.join(workdir, "suite.md"), markdown + "\n")
  files.write_json(os.path.join(workdir, "suite.json"), results)
  plot_losses(workdir, results, tasks, os.path.join(workdir, "loss_curves.png"))
  print(markdown)
  print(f"Table: {workdir}/suite.md; loss curves: {workdir}/loss_curves.png")


if __name__ == "__main__":
  cli.run(main, define_flags)
