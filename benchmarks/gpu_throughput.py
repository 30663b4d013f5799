"""Train-step throughput and model-FLOPs utilisation of BERT-base and GPT-2 small, bf16:
jaxssl beside transformers' PyTorch models on the same chip, shapes and batches, in one run.

    python benchmarks/gpu_throughput.py          # on a GPU: BERT-base seq 128/512, GPT-2 seq 1024
    python benchmarks/gpu_throughput.py --smoke  # the same code at tiny sizes (a CPU check, in CI)
    python benchmarks/gpu_throughput.py --json=throughput.json   # also the numbers as JSON
    python benchmarks/gpu_throughput.py --trace_dir=traces       # jax.profiler traces of jaxssl

MFU = model FLOPs per second / the dense bf16 matmul rate measured through XLA on the same
chip in the same run (not the datasheet peak), for both frameworks. Model FLOPs per trained
token are jaxssl.core.flops's, as training runs log them:
    6 * L * (4 d^2 + 2 d m)           the blocks' weight matrices
  + 12 * L * T * d                    attention scores and values (full T x T, as computed)
  + 6 * d * V  (GPT)  or  6 * (d^2 + d V) * P / T  (BERT: MLM head only at P masked positions)
(transformers' BertForPreTraining
projects every position onto the vocabulary, not only the P masked ones: work the formula does
not count, so its MFU is what it achieves on the same task.)

jaxssl: bf16 compute, fp32 parameters and optimizer state, dropout off (so
jax.nn.dot_product_attention is used), AdamW with clipping; each case once per attention
implementation (XLA's, and cuDNN's fused flash attention on a GPU). PyTorch: transformers'
BertForPreTraining / GPT2LMHeadModel with SDPA attention, fp32 parameters under bf16 autocast,
dropout off, fused AdamW with the same clipping and schedule, eager and ``torch.compile``d.
torch and transformers are pip-installed when absent; where that fails, their rows say why.
The PyTorch cases run first and free their memory before JAX allocates (JAX's preallocation
is off in this script, so the two share the GPU).
"""

import contextlib
import importlib
import gc
import os
import subprocess
import sys
import time
import types

# JAX would otherwise reserve most of the GPU's memory at its first use, leaving none to torch.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from flax import nnx

from jaxssl import files
from jaxssl.core import flops
from jaxssl.core import steps
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.core.objectives import gpt as gpt_objective
from jaxssl.data import tokenizer as tokenizer_lib
from jaxssl.models import bert
from jaxssl.models import gpt

import peers  # benchmarks/peers.py, beside this script

_SMOKE = flags.DEFINE_bool("smoke", False,
                           "Tiny models and shapes: the same code path, as a CPU check.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per case (the best one counts).")
_PEERS = flags.DEFINE_bool("peers", True, "Also time transformers' PyTorch models.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True,
                                   "Also time the PyTorch models under torch.compile.")
_BATCH_SCALE = flags.DEFINE_float("batch_scale", 1.0,
                                  "Multiplies every case's batch size (both frameworks).")
_TRACE_DIR = flags.DEFINE_string(
    "trace_dir", None, "Write a jax.profiler trace of each jaxssl case's timed steps here "
    "(view with TensorBoard's profile plugin or Perfetto).")
_ATTENTION = flags.DEFINE_list(
    "attention", None, "model.attention_implementation values to time each case with "
    "(default: xla and cudnn on a GPU, xla elsewhere).")
_JSON = flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")

# The synthetic batches number special tokens as a jaxssl tokenizer does (no tokenizer is trained
# here): by their position in SPECIAL_TOKENS, the regular tokens after them.
PAD = tokenizer_lib.PAD_ID
CLS = tokenizer_lib.CLS_ID
SEP = tokenizer_lib.SEP_ID
MASK = tokenizer_lib.MASK_ID
FIRST_REGULAR = tokenizer_lib.FIRST_REGULAR_ID
OPTIMIZER = types.SimpleNamespace(
    learning_rate=1e-4,
    warmup_steps=10,
    final_lr_fraction=0.0,
    num_train_steps=1000,
    max_grad_norm=1.0,
    adam_b1=0.9,
    adam_b2=0.999,
    adam_eps=1e-6,
    weight_decay=0.01)


def cases(smoke):
  """(name, family, model fields, batch, seq length, masked positions per row)."""
  if smoke:
    return [("bert-tiny seq 32", "bert", {
        "size": "tiny",
        "vocab_size": 512
    }, 4, 32, 5), ("gpt-tiny seq 32", "gpt", {
        "size": "tiny",
        "vocab_size": 512
    }, 4, 32, 0)]
  return [("BERT-base seq 128", "bert", {
      "size": "base",
      "vocab_size": 30522
  }, 256, 128, 20), ("BERT-base seq 512", "bert", {
      "size": "base",
      "vocab_size": 30522
  }, 64, 512, 76), ("GPT-2 124M seq 1024", "gpt", {
      "size": "gpt2",
      "vocab_size": 50257
  }, 32, 1024, 0)]


def matmul_rate(size):
  """Measured bf16 matmul FLOP/s through XLA (best of 10 after a warm-up)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.bfloat16)
  product = jax.jit(lambda a, b: a @ b)
  return 2 * size**3 / best_seconds(lambda: product(a, b), 10)


def best_seconds(function, repeats):
  jax.block_until_ready(function())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(function())
    times.append(time.perf_counter() - start)
  return min(times)


def flops_per_token(cfg, family, length, predictions):
  """Model FLOPs per trained token, as a jaxssl run logs them (``jaxssl.core.flops``)."""
  if family == "gpt":
    output = flops.output_flops_per_token(cfg.hidden_size, cfg.vocab_size, 1, transform=False)
  else:
    output = flops.output_flops_per_token(cfg.hidden_size, cfg.vocab_size, predictions / length)
  return flops.blocks_flops_per_token(cfg, length) + output


def bert_batch(rng, batch, length, vocab):
  ids = rng.integers(FIRST_REGULAR, vocab, (batch, length))
  ids[:, 0], ids[:, length // 2], ids[:, -1] = CLS, SEP, SEP
  segments = (np.arange(length) > length // 2).astype(np.int32)[None].repeat(batch, 0)
  return {
      "input_ids": ids.astype(np.int32),
      "segment_ids": segments,
      "next_sentence_labels": rng.integers(0, 2, batch).astype(np.int32),
      "example_weights": np.ones(batch, np.float32)
  }


def gpt_batch(rng, batch, length, vocab):
  ids = rng.integers(FIRST_REGULAR, vocab, (batch, length + 1)).astype(np.int32)
  return {
      "input_ids": ids[:, :-1],
      "target_ids": ids[:, 1:],
      "positions": np.arange(length, dtype=np.int32)[None].repeat(batch, 0),
      "segment_ids": np.ones((batch, length), np.int32),
      "target_weights": np.ones((batch, length), np.float32),
      "example_weights": np.ones(batch, np.float32)
  }


def time_case(family, fields, batch_size, length, predictions, num_steps, trace_dir=None):
  """(seconds per train step (best of ``num_steps``), compile seconds, the model config);
  the timed steps traced by jax.profiler into ``trace_dir`` if given."""
  fields = {
      **fields, "dtype": "bfloat16",
      "param_dtype": "float32",
      "dropout_rate": 0.0,
      "attention_dropout_rate": 0.0
  }
  optimizer, _ = steps.make_optimizer(OPTIMIZER)
  rng = np.random.default_rng(0)
  if family == "bert":
    cfg = bert.BertConfig.from_dict(fields)
    model = bert.BertForPretraining(cfg, nnx.Rngs(0))
    options = types.SimpleNamespace(max_predictions_per_seq=predictions, mask_prob=0.15, nsp=True)
    special = dict(
        special_ids=(PAD, CLS, SEP, MASK),
        vocab_size=cfg.vocab_size,
        first_regular_id=FIRST_REGULAR,
        mask_id=MASK,
        pad_id=PAD)
    batch = bert_batch(rng, batch_size, length, cfg.vocab_size)
  else:
    cfg = gpt.GPTConfig.from_dict(fields)
    model = gpt.GPT(cfg, nnx.Rngs(0))
    batch = gpt_batch(rng, batch_size, length, cfg.vocab_size)
  graphdef, params = nnx.split(model, nnx.Param)
  state = steps.fresh_state(params, optimizer)
  if family == "bert":
    train_step = bert_objective.make_train_step(graphdef, optimizer, options, special)
  else:
    train_step = gpt_objective.make_train_step(graphdef, optimizer)
  train_step = jax.jit(train_step, donate_argnums=0)
  batch = jax.device_put(batch)
  key = jax.random.key(0)
  start = time.perf_counter()
  state, _ = jax.block_until_ready(train_step(state, batch, key))
  compile_seconds = time.perf_counter() - start
  times = []
  with jax.profiler.trace(trace_dir) if trace_dir else contextlib.nullcontext():
    for _ in range(num_steps):
      start = time.perf_counter()
      state, _ = jax.block_until_ready(train_step(state, batch, key))
      times.append(time.perf_counter() - start)
  return min(times), compile_seconds, cfg


def torch_modules():
  """((torch, transformers), None), pip-installed first when absent; (None, why) when that
  fails."""
  try:
    return (importlib.import_module("torch"), importlib.import_module("transformers")), None
  except ImportError:
    print("torch or transformers is absent: pip install torch 'transformers<5' ...", flush=True)
  # Few retries: a machine without network should fail in seconds, not eat the GPU rental.
  subprocess.run([
      sys.executable, "-m", "pip", "install", "-q", "--retries=1", "--timeout=20", "torch",
      "transformers<5"
  ],
                 check=False)
  importlib.invalidate_caches()
  try:
    return (importlib.import_module("torch"), importlib.import_module("transformers")), None
  except ImportError as error:
    return None, f"{error}; install torch and transformers<5 to time the PyTorch peer"


def torch_model(transformers, family, cfg):
  """transformers' PyTorch model of the same shape as jaxssl's ``cfg``, dropout off, SDPA."""
  if family == "bert":
    return transformers.BertForPreTraining(
        peers.bert_config(
            transformers,
            cfg,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="sdpa"))
  return transformers.GPT2LMHeadModel(
      peers.gpt2_config(
          transformers,
          cfg,
          resid_pdrop=0.0,
          embd_pdrop=0.0,
          attn_pdrop=0.0,
          attn_implementation="sdpa"))


def torch_batch(family, batch_size, length, vocab, predictions):
  """The inputs transformers' model takes, int64: BERT's with ``predictions`` labelled (masked)
  positions per row and -100 elsewhere; GPT-2's with its inputs as labels (it shifts them)."""
  rng = np.random.default_rng(0)
  if family == "gpt":
    ids = gpt_batch(rng, batch_size, length, vocab)["input_ids"].astype(np.int64)
    return {"input_ids": ids, "labels": ids}
  batch = bert_batch(rng, batch_size, length, vocab)
  labels = np.full((batch_size, length), -100, np.int64)
  for row in range(batch_size):
    positions = rng.choice(np.arange(1, length - 1), predictions, replace=False)
    labels[row, positions] = batch["input_ids"][row, positions]
  return {
      "input_ids": batch["input_ids"].astype(np.int64),
      "token_type_ids": batch["segment_ids"].astype(np.int64),
      "attention_mask": np.ones((batch_size, length), np.int64),
      "labels": labels,
      "next_sentence_label": batch["next_sentence_labels"].astype(np.int64),
  }


def time_torch_case(modules, family, cfg, batch_size, length, predictions, num_steps, compiled):
  """(seconds per train step (best of ``num_steps``), seconds of the first step) of the
  transformers model matching ``cfg`` in a standard bf16-autocast PyTorch loop."""
  torch, transformers = modules
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  model = torch_model(transformers, family, cfg).to(device).train()
  parameters = list(model.parameters())
  optimizer, schedule = peers.adamw(torch, transformers, parameters, OPTIMIZER)
  forward = torch.compile(model) if compiled else model
  batch = {
      name: torch.from_numpy(value).to(device) for name, value in torch_batch(
          family, batch_size, length, cfg.vocab_size, predictions).items()
  }
  wait = torch.cuda.synchronize if device == "cuda" else lambda: None

  def step():
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
      loss = forward(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, OPTIMIZER.max_grad_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)

  start = time.perf_counter()
  step()
  wait()
  first_seconds = time.perf_counter() - start
  times = []
  for _ in range(num_steps):
    start = time.perf_counter()
    step()
    wait()
    times.append(time.perf_counter() - start)
  return min(times), first_seconds


def result_row(row, seconds, compile_seconds, cfg, family, predictions):
  """``row`` with the step time and what follows from it: tokens/s and model FLOP/s."""
  tokens_per_second = row["batch_size"] * row["length"] / seconds
  model_flops = tokens_per_second * flops_per_token(cfg, family, row["length"], predictions)
  return {
      **row,
      "step_seconds": seconds,
      "tokens_per_second": tokens_per_second,
      "model_flops_per_second": model_flops,
      "compile_seconds": compile_seconds,
  }


def measure(smoke,
            num_steps,
            attention=None,
            peers=True,
            torch_compile=True,
            batch_scale=1.0,
            trace_dir=None):
  """The measured matmul rate, one row per case and implementation (PyTorch's first), and per
  case jaxssl's tokens/s over PyTorch's (each side's fastest implementation), as a dict.

  ``attention``: jaxssl's model.attention_implementation values (default: xla and cudnn on a
  GPU, xla elsewhere). A case that fails (e.g. a shape cuDNN lacks, no torch) gets a row with
  its ``error``.
  """
  device = jax.devices()[0]
  rate = matmul_rate(1024 if smoke else 8192)
  implementations = attention or (["xla", "cudnn"] if device.platform == "gpu" else ["xla"])
  modules, why_not = torch_modules() if peers else (None, None)
  rows = []
  for name, family, fields, batch_size, length, predictions in cases(smoke):
    batch_size = max(1, round(batch_size * batch_scale))
    row = {"model": name, "batch_size": batch_size, "length": length}
    cfg = (bert.BertConfig if family == "bert" else gpt.GPTConfig).from_dict(fields)
    for compiled in ([False, True] if torch_compile else [False]) if peers else []:
      peer = {
          **row, "framework": "PyTorch" + (" compiled" if compiled else ""),
          "attention": "sdpa"
      }
      if modules is None:
        rows.append({**peer, "error": why_not})
        continue
      try:
        seconds, first_seconds = time_torch_case(modules, family, cfg, batch_size, length,
                                                 predictions, num_steps, compiled)
      except Exception as error:  # pylint: disable=broad-except  # e.g. out of memory
        rows.append({**peer, "error": str(error).splitlines()[0][:200]})
        continue
      finally:  # the model and its optimizer state leave the GPU before JAX's cases run
        gc.collect()
        if modules[0].cuda.is_available():
          modules[0].cuda.empty_cache()
      rows.append(result_row(peer, seconds, first_seconds, cfg, family, predictions))
    for implementation in implementations:
      ours = {**row, "framework": "jaxssl", "attention": implementation}
      trace = trace_dir and os.path.join(trace_dir, f"{name} {implementation}".replace(" ", "_"))
      try:
        seconds, compile_seconds, cfg = time_case(family, {
            **fields, "attention_implementation": implementation
        }, batch_size, length, predictions, num_steps, trace)
      except Exception as error:  # pylint: disable=broad-except  # e.g. a shape cuDNN lacks
        rows.append({**ours, "error": str(error).splitlines()[0][:200]})
        continue
      rows.append(result_row(ours, seconds, compile_seconds, cfg, family, predictions))
  for row in rows:
    if "error" not in row:
      row["mfu"] = row["model_flops_per_second"] / rate
  return {
      "device": {
          "platform": device.platform,
          "kind": device.device_kind
      },
      "matmul_flops_per_second": rate,
      "rows": rows,
      "ratios": ratios(rows),
  }


def ratios(rows):
  """Per case, jaxssl's best tokens/s over PyTorch's best (None if either side failed)."""
  best = {}
  for row in rows:
    side = "jaxssl" if row["framework"] == "jaxssl" else "PyTorch"
    best.setdefault(row["model"], {}).setdefault(side, None)
    if "error" not in row:
      best[row["model"]][side] = max(best[row["model"]][side] or 0, row["tokens_per_second"])
  return {
      model:
          sides["jaxssl"] /
          sides["PyTorch"] if sides.get("jaxssl") and sides.get("PyTorch") else None
      for model, sides in best.items()
  }


def to_markdown(result):
  """``measure``'s dict as the printed report: the matmul rate, a Markdown table, the ratios."""
  device = result["device"]
  lines = [
      f"{device['platform']} {device['kind']}: measured bf16 matmul "
      f"{result['matmul_flops_per_second'] / 1e12:.1f} TFLOP/s",
      "| model | framework, attention | batch x seq | step ms | tokens/s | model TFLOP/s | MFU "
      "| first step s |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for row in result["rows"]:
    case = (f"| {row['model']} | {row['framework']}, {row['attention']} "
            f"| {row['batch_size']} x {row['length']}")
    if "error" in row:
      lines.append(f"{case} | failed: {row['error']} |")
      continue
    lines.append(f"{case} | {row['step_seconds'] * 1e3:.1f} | {row['tokens_per_second']:,.0f} "
                 f"| {row['model_flops_per_second'] / 1e12:.1f} | {row['mfu']:.1%} "
                 f"| {row['compile_seconds']:.1f} |")
  for model, ratio in result["ratios"].items():
    if ratio is not None:
      lines.append(f"{model}: jaxssl {ratio:.2f}x PyTorch's tokens/s (best of each)")
  return "\n".join(lines)


def main(argv):
  del argv
  result = measure(_SMOKE.value, _STEPS.value, _ATTENTION.value, _PEERS.value, _TORCH_COMPILE.value,
                   _BATCH_SCALE.value, _TRACE_DIR.value)
  print(to_markdown(result))
  if _JSON.value:
    files.write_json(_JSON.value, result)


if __name__ == "__main__":
  app.run(main)
