"""Pretraining on corpora 10x and 100x the shipped English one: host memory stays flat.

    python benchmarks/corpus_scaling.py [--scales=10,100] [--num_train_steps=40] [--json=FILE]

For each scale: writes a JSONL corpus of the shipped English training documents repeated
``scale`` times (each copy's documents start with a line naming the copy, so no two are
identical), prepares it with ``python -m jaxssl.prepare`` (which prints its tokens/s, all cores),
then pretrains ``configs/bert_pretrain.py`` on it for ``num_train_steps`` in a fresh process
(``python -m jaxssl.main``) and records that process's peak resident memory (``os.wait4``'s
ru_maxrss). The training process reads no text: it streams the prepared shards one window of
documents at a time (``jaxssl.data.batching.StreamBatches``).

Then the input pipeline alone: pretraining's batches over the largest prepared corpus, through
``--pipeline_windows`` windows (their pairing included), in examples/s beside the examples/s
the train step consumed. ``--smoke``: tiny scales, model and step count, for CI.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

from jaxssl.cli import load_config
from jaxssl.core import objectives
from jaxssl.core import pretrain
from jaxssl.data import corpora
from jaxssl.data import pretraining
from jaxssl.data import tokenizer as tokenizer_lib

_SCALES = flags.DEFINE_list("scales", ["10", "100"], "Corpus sizes, in shipped English corpora.")
_STEPS = flags.DEFINE_integer("num_train_steps", 40, "Train steps per scale.")
_WINDOWS = flags.DEFINE_integer("pipeline_windows", 2, "Windows the pipeline is timed over.")
_DIR = flags.DEFINE_string("dir", None, "Where corpora, shards and runs go (default: a temp dir).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir of the shipped corpus.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny scales, model and steps (CI).")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")

# --smoke's config overrides: windows of a few documents, a small vocabulary and batch.
SMOKE = {"window_documents": 8, "batch_size": 8, "eval_batches": 1, "vocab_size": 1000}


def write_corpus(path, texts, scale):
  """``texts`` ``scale`` times over as JSONL; returns the bytes of text written."""
  written = 0
  with open(path, "w", encoding="utf-8") as f:
    for copy in range(scale):
      for index, text in enumerate(texts):
        text = f"Copy {copy}, document {index}.\n{text}"
        written += len(text.encode("utf-8"))
        f.write(json.dumps({"text": text}) + "\n")
  return written


def config_flags(corpus, tokenizer, prepared_dir, steps, smoke):
  """The pretraining run's --config overrides."""
  values = {
      "dataset": corpus,
      "tokenizer": tokenizer,
      "prepared_dir": prepared_dir,
      "train_split": "train[5%:]",
      "eval_split": "train[:5%]",
      "num_train_steps": steps,
      "eval_every": steps,
      "checkpoint_every": steps,
      "log_every": max(1, steps // 4),
      "probe_tasks": "",
  }
  if smoke:
    values.update(SMOKE)
  return [f"--config.{key}={value}" for key, value in values.items()]


def run_child(command, compilation_cache):
  """Runs ``command`` with its own empty XLA compilation cache, so every run compiles alike;
  (its stdout, peak resident MiB, seconds). A failure raises."""
  start = time.perf_counter()
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": compilation_cache}
  with tempfile.TemporaryFile("w+") as out:
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    output = out.read()
  if process.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
  return output, usage.ru_maxrss / 1024, time.perf_counter() - start


def pipeline_rate(config, corpus, tokenizer, windows):
  """Examples/s and real tokens per row of pretraining's batches over ``windows`` windows."""
  objective = objectives.get(config)
  start = time.perf_counter()
  evaluation = [corpus[index] for index in range(4)]  # unused here; batches() makes both
  batches, _ = objective.batches(tokenizer, corpus, evaluation,
                                 dict(process_index=0, process_count=1))
  rows = tokens = 0
  while batches.state()["window"] < windows and batches.state()["epoch"] == 0:
    batch = next(batches)
    rows += len(batch["input_ids"])
    tokens += int(np.sum(batch["input_ids"] != tokenizer.pad_id))
  return rows / (time.perf_counter() - start), tokens / rows


def main(argv):
  del argv
  smoke = _SMOKE.value
  scales = [1, 2] if smoke else [int(scale) for scale in _SCALES.value]
  steps = 3 if smoke else _STEPS.value
  root = _DIR.value or tempfile.mkdtemp(prefix="jaxssl_corpus_scaling_")
  os.makedirs(root, exist_ok=True)
  config_arg = "size=tiny" if smoke else None
  config = load_config("bert_pretrain", config_arg)
  if smoke:
    config.update(SMOKE)
  texts = corpora.load_texts("jaxssl_corpus/en", "train", _DATA_DIR.value)
  if smoke:
    texts = [text[:4000] for text in texts[:20]]
  tokenizer_path = os.path.join(root, "tokenizer.model")
  if not os.path.exists(tokenizer_path):
    sentences = (s for text in texts for s in pretraining.split_sentences(text))
    tokenizer_lib.train_tokenizer(sentences, config.vocab_size, tokenizer_path)
  tokenizer = tokenizer_lib.Tokenizer.load(tokenizer_path)
  config_file = f"configs/bert_pretrain.py{':' + config_arg if config_arg else ''}"
  results = {"scales": []}
  for scale in scales:
    corpus = os.path.join(root, f"corpus_x{scale}.jsonl")
    text_bytes = write_corpus(corpus, texts, scale)
    overrides = config_flags(corpus, tokenizer_path, os.path.join(root, "prepared"), steps, smoke)
    output, prepare_rss, prepare_seconds = run_child(
        [sys.executable, "-m", "jaxssl.prepare", f"--config={config_file}", *overrides],
        os.path.join(root, f"xla_prepare_x{scale}"))
    [train_line] = [line for line in output.splitlines() if "train[5%:]: prepared" in line]
    prepare_rate = float(train_line.rsplit("(", 1)[1].split()[0].replace(",", ""))
    workdir = os.path.join(root, f"run_x{scale}")
    _, train_rss, train_seconds = run_child([
        sys.executable, "-m", "jaxssl.main", f"--config={config_file}", f"--workdir={workdir}",
        *overrides
    ], os.path.join(root, f"xla_train_x{scale}"))
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      records = [json.loads(line) for line in f]
    train_tokens_per_second = [
        r["tokens_per_second"]
        for r in records
        if r["split"] == "train" and "tokens_per_second" in r and "compile_seconds" not in r
    ]
    results["scales"].append({
        "scale": scale,
        "text_megabytes": text_bytes / 1e6,
        "prepare_tokens_per_second": prepare_rate,
        "prepare_seconds": prepare_seconds,
        "prepare_peak_rss_mib": prepare_rss,
        "train_peak_rss_mib": train_rss,
        "train_seconds": train_seconds,
        "train_tokens_per_second": float(np.median(train_tokens_per_second)),
    })
    print(json.dumps(results["scales"][-1]), flush=True)

  # The pipeline alone, over the largest prepared training split (reused, not prepared again).
  config.update(
      dataset=corpus,
      tokenizer=tokenizer_path,
      prepared_dir=os.path.join(root, "prepared"),
      train_split="train[5%:]",
      **(SMOKE if smoke else {}))

  def unread():
    raise RuntimeError("the corpus was prepared above")

  train_corpus = pretrain.prepared_documents(config, config.train_split, tokenizer, unread)
  examples_per_second, tokens_per_row = pipeline_rate(config, train_corpus, tokenizer,
                                                      _WINDOWS.value)
  consumed = results["scales"][-1]["train_tokens_per_second"] / tokens_per_row
  results["pipeline"] = {
      "examples_per_second": examples_per_second,
      "consumed_examples_per_second": consumed,
      "ratio": examples_per_second / consumed,
  }
  first, last = results["scales"][0], results["scales"][-1]
  results["rss_growth"] = last["train_peak_rss_mib"] / first["train_peak_rss_mib"] - 1
  print(report(results))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


def report(results):
  lines = [
      "| corpus | text | prepare | prepare peak RSS | train peak RSS | train tokens/s |",
      "|---|---|---|---|---|---|",
  ]
  for row in results["scales"]:
    lines.append(f"| {row['scale']}x English | {row['text_megabytes']:,.0f} MB | "
                 f"{row['prepare_tokens_per_second']:,.0f} tokens/s | "
                 f"{row['prepare_peak_rss_mib']:,.0f} MiB | {row['train_peak_rss_mib']:,.0f} MiB | "
                 f"{row['train_tokens_per_second']:,.0f} |")
  first, last = results["scales"][0], results["scales"][-1]
  lines.append(f"train peak RSS {first['scale']}x -> {last['scale']}x: "
               f"{100 * results['rss_growth']:+.1f}%")
  pipeline = results["pipeline"]
  lines.append(f"input pipeline: {pipeline['examples_per_second']:,.0f} examples/s, "
               f"{pipeline['ratio']:.1f}x the {pipeline['consumed_examples_per_second']:,.1f} "
               "examples/s the train step consumes")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
