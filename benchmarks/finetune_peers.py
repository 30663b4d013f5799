"""Fine-tuning MiniLM: jaxssl against transformers (PyTorch, its Trainer) on the same rows.

    python benchmarks/finetune_peers.py                       # sentiment, pos, qa; 3 seeds each
    python benchmarks/finetune_peers.py --tasks=sentiment --seeds=1 --num_train_steps=40 \
        --eval_split='validation[:200]' --json=peers.json     # a shorter run

For each task and seed both frameworks fine-tune all-MiniLM-L6-v2 (the ``minilm`` checkpoint)
with the task's full recipe (configs/bert_finetune.py ``RECIPES``: steps, batch, learning
rate, warm-up ratio, sequence length; AdamW with weight decay 0.01 and epsilon 1e-6, gradient
clipping at 1, dropout 0.1, linear decay, batches of similar length, float32):

  jaxssl        ``jaxssl.core.finetune.run`` with that config (dynamic padding to buckets).
  transformers  ``AutoModelFor{SequenceClassification, TokenClassification,
                QuestionAnswering}`` from the same checkpoint files, trained by ``Trainer``
                (``group_by_length``, a linear schedule, torch on one thread per core),
                each batch padded to its longest row.

Both read the same rows: the examples as jaxssl encodes them (its tokenizer of the same
vocabulary, the same windows and labels), so only the frameworks differ; and both are scored
by the same code, ``jaxssl.core.tasks.catalog.score``, on the whole dev split. The heads are
each library's own (transformers loads the checkpoint's pooler where jaxssl draws a new one).

Reported per task: the dev metric, mean ± sd over the seeds, and the training wall time per
epoch (jaxssl: the trainer's timed windows, without evaluation, checkpoints and the calls that
compiled the step, whose seconds per run are given apart; transformers: ``Trainer.train``'s
runtime, without saving or evaluation), with the ratios jaxssl / transformers of the epoch time
alone and of the whole run's training time with jaxssl's compilation added.
"""

import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import transformers
from absl import app
from absl import flags

from jaxssl import cli
from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl.core import finetune
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
from jaxssl.suite import mean_and_sd

flags.DEFINE_list("tasks", ["sentiment", "pos", "qa"], "Tasks (with a full recipe) to run.")
flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per task and framework.")
flags.DEFINE_integer("num_train_steps", None, "Steps of every run (default: the recipe's).")
flags.DEFINE_string("train_split", None, "Training split of every run (default: the recipe's).")
flags.DEFINE_string("eval_split", None, "Dev split of every run (default: the task's).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (None: TFDS's default).")
flags.DEFINE_bool("group_by_length", None,
                  "Batches of similar length in both frameworks (default: the recipe's, on).")
flags.DEFINE_string("json", None, "Also write the results here as JSON.")

HF_MODELS = {
    "classification": transformers.AutoModelForSequenceClassification,
    "regression": transformers.AutoModelForSequenceClassification,
    "token_classification": transformers.AutoModelForTokenClassification,
    "question_answering": transformers.AutoModelForQuestionAnswering,
}


def recipe_config(task, seed, **fields):
  config = cli.load_config("bert_finetune", f"task={task},recipe=full")
  config.update({name: value for name, value in fields.items() if value is not None})
  config.seed = seed
  config.eval_every = config.checkpoint_every = config.num_train_steps
  config.log_every = max(1, config.num_train_steps // 10)
  return config


def jaxssl_run(config, workdir):
  """(dev metrics, training seconds, compiling seconds) of ``finetune.run``."""
  metrics = finetune.run(config, workdir)
  records = [r for r in metrics_lib.read_metrics(workdir) if r["split"] == "train"]
  steps = np.diff([0] + [r["step"] for r in records])
  seconds = sum(n * config.batch_size / r["rows_per_second"] for n, r in zip(steps, records))
  return metrics, seconds, sum(r.get("compile_seconds", 0.0) for r in records)


class Rows(torch.utils.data.Dataset):
  """``catalog.Rows`` as transformers features, each cut to its real tokens."""

  def __init__(self, rows):
    self.arrays = rows.arrays
    self.lengths = finetune.row_lengths(rows.arrays)

  def __len__(self):
    return len(self.lengths)

  def __getitem__(self, index):
    n = self.lengths[index]
    feature = {
        "input_ids": self.arrays["input_ids"][index, :n],
        "token_type_ids": self.arrays["segment_ids"][index, :n],
        "attention_mask": self.arrays["attention_mask"][index, :n],
    }
    for key in ("labels", "start_positions", "end_positions"):
      if key in self.arrays:
        value = self.arrays[key][index]
        feature[key] = value[:n] if np.ndim(value) else value
    return feature


def collate(features):
  """Pads every sequence in the batch to its longest row (labels with -100)."""
  longest = max(len(f["input_ids"]) for f in features)
  batch = {}
  for key in features[0]:
    values = [f[key] for f in features]
    if np.ndim(values[0]):
      fill = -100 if key == "labels" else 0
      values = [np.pad(v, (0, longest - len(v)), constant_values=fill) for v in values]
    values = np.stack(values)
    batch[key] = torch.as_tensor(values.astype(np.int64) if values.dtype.kind == "i" else values)
  return batch


def torch_outputs(model, rows, batch_size, kind):
  """The model's outputs on every row as jaxssl's ``run_model`` gives them: (R, ...) numpy
  arrays, a token axis padded back to max_seq_length, QA a (start, end) pair."""
  model.eval()
  dataset = Rows(rows)
  max_length = rows.arrays["input_ids"].shape[1]
  parts = []
  with torch.no_grad():
    for start in range(0, len(dataset), batch_size):
      batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
      out = model(**{k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
      logits = [out.start_logits, out.end_logits] if kind.num_outputs == 2 else [out.logits]
      logits = [x.numpy() for x in logits]
      if kind.token_outputs:
        logits = [finetune.padded_tokens(x, max_length) for x in logits]
      if kind.num_outputs == 1:  # regression: (B, 1) -> (B,)
        logits = [x[:, 0] for x in logits]
      parts.append(logits)
  outputs = [np.concatenate(column) for column in zip(*parts)]
  return tuple(outputs) if len(outputs) == 2 else outputs[0]


def torch_run(config, task, train_rows, dev_rows, num_labels, workdir):
  """(dev metrics, training seconds, 0 compiling seconds) of transformers' Trainer on the same
  rows."""
  kind = task.kind
  transformers.set_seed(config.seed)
  model = HF_MODELS[kind].from_pretrained(
      pretrained.resolve(config.init_from),
      hidden_dropout_prob=config.dropout_rate,
      attention_probs_dropout_prob=config.attention_dropout_rate,
      classifier_dropout=config.dropout_rate,
      num_labels=kinds.get(kind).num_outputs or num_labels)  # QA's 2: its start and end
  args = transformers.TrainingArguments(
      output_dir=workdir,
      per_device_train_batch_size=config.batch_size,
      learning_rate=config.learning_rate,
      weight_decay=config.weight_decay,
      adam_beta1=config.adam_b1,
      adam_beta2=config.adam_b2,
      adam_epsilon=config.adam_eps,
      max_grad_norm=config.max_grad_norm,
      max_steps=config.num_train_steps,
      warmup_ratio=config.warmup_ratio,
      lr_scheduler_type="linear",
      group_by_length=config.group_by_length,
      save_strategy="no",
      eval_strategy="no",
      logging_steps=config.log_every,
      report_to=[],
      seed=config.seed,
      use_cpu=True,
      dataloader_num_workers=0,
      disable_tqdm=True)
  trainer = transformers.Trainer(
      model=model, args=args, train_dataset=Rows(train_rows), data_collator=collate)
  result = trainer.train()
  outputs = torch_outputs(model, dev_rows, config.batch_size, kinds.get(kind))
  return catalog.score(task, dev_rows, outputs, config.n_best,
                       config.max_answer_length), result.metrics["train_runtime"], 0.0


def measure(tasks, seeds, workdir, **fields):
  """{task: {framework: {"metric", "epochs", "scores", "epoch_seconds", "compile_seconds"}}}
  over ``seeds`` seeds."""
  torch.set_num_threads(os.cpu_count())
  results = {}
  for name in tasks:
    task = catalog.get_task(name)
    metric = task.metrics[0]
    config = recipe_config(name, 0, **fields)
    _, _, tokenizer = finetune.load_encoder(config)
    label_names = (None if kinds.get(task.kind).num_outputs else finetune.corpora.label_names(
        task.dataset, config.data_dir, task.label_key))
    num_labels = len(label_names) if label_names else None
    train_rows, _ = finetune.encode_split(config, task, tokenizer, config.train_split, num_labels)
    dev_rows, _ = finetune.encode_split(config, task, tokenizer, config.eval_split or
                                        task.dev_split, num_labels)
    epochs = config.num_train_steps * config.batch_size / len(train_rows.example_of_row)
    runs = {"jaxssl": [], "transformers": []}
    for seed in range(seeds):
      config = recipe_config(name, seed, **fields)
      runs["jaxssl"].append(jaxssl_run(config, os.path.join(workdir, f"jaxssl_{name}_{seed}")))
      runs["transformers"].append(
          torch_run(config, task, train_rows, dev_rows, num_labels,
                    os.path.join(workdir, f"torch_{name}_{seed}")))
    results[name] = {
        framework: {
            "metric": metric,
            "epochs": epochs,
            "scores": [scores[metric] for scores, _, _ in framework_runs],
            "epoch_seconds": [seconds / epochs for _, seconds, _ in framework_runs],
            "compile_seconds": [compiling for _, _, compiling in framework_runs],
        } for framework, framework_runs in runs.items()
    }
  return results


def table(results):
  lines = [
      "| task | metric | jaxssl | transformers | jaxssl - transformers (in sd) | "
      "jaxssl s/epoch | jaxssl compile s | transformers s/epoch | time ratio | "
      "with compile |", "|---|---|---|---|---|---|---|---|---|---|"
  ]
  for name, runs in results.items():
    ours, theirs = runs["jaxssl"], runs["transformers"]
    gap = statistics.mean(ours["scores"]) - statistics.mean(theirs["scores"])
    sd = statistics.stdev(theirs["scores"]) if len(theirs["scores"]) > 1 else 0.0
    in_sd = f"{gap / sd:+.1f} sd" if sd > 0 else "sd 0"
    time_ours = statistics.mean(ours["epoch_seconds"])
    time_theirs = statistics.mean(theirs["epoch_seconds"])
    compiling = statistics.mean(ours["compile_seconds"])
    lines.append(f"| {name} | {ours['metric']} | {mean_and_sd(ours['scores'])} | "
                 f"{mean_and_sd(theirs['scores'])} | {gap:+.4f} ({in_sd}) | "
                 f"{time_ours:.0f} | {compiling:.0f} | {time_theirs:.0f} | "
                 f"{time_ours / time_theirs:.2f}x | "
                 f"{(time_ours + compiling / ours['epochs']) / time_theirs:.2f}x |")
  return "\n".join(lines)


def main(argv):
  del argv
  started = time.strftime("%Y-%m-%d %H:%M")
  with tempfile.TemporaryDirectory() as workdir:
    results = measure(
        flags.FLAGS.tasks,
        flags.FLAGS.seeds,
        workdir,
        num_train_steps=flags.FLAGS.num_train_steps,
        train_split=flags.FLAGS.train_split,
        eval_split=flags.FLAGS.eval_split,
        data_dir=flags.FLAGS.data_dir,
        group_by_length=flags.FLAGS.group_by_length)
  print(f"{started}; jaxssl vs transformers {transformers.__version__} (torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads)")
  print(table(results))
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
