"""Train-step throughput and model-FLOPs utilisation of BERT-base and GPT-2 small, bf16.

    python benchmarks/gpu_throughput.py          # on a GPU: BERT-base seq 128/512, GPT-2 seq 1024
    python benchmarks/gpu_throughput.py --tiny   # a CPU check of the same code at tiny sizes
    python benchmarks/gpu_throughput.py --json=throughput.json   # also the numbers as JSON

MFU = model FLOPs per second / the dense bf16 matmul rate measured through XLA on the same
chip in the same run (not the datasheet peak). Model FLOPs per trained token, counting a
train step as 3 forward passes (forward + backward) and every multiply-add as 2 FLOPs:
    6 * L * (4 d^2 + 2 d m)           the blocks' weight matrices
  + 12 * L * T * d                    attention scores and values (full T x T, as computed)
  + 6 * d * V  (GPT)  or  6 * (d^2 + d V) * P / T  (BERT: MLM head only at P masked positions)
Embedding lookups, norms, biases and the pooler are left out. bf16 compute, fp32 parameters
and optimizer state, dropout off (so jax.nn.dot_product_attention is used), AdamW; each case
once per attention implementation (XLA's, and cuDNN's fused flash attention on a GPU).
"""

import itertools
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from flax import nnx

from jaxssl import files
from jaxssl.core import steps
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.core.objectives import gpt as gpt_objective
from jaxssl.data import tokenizer as tokenizer_lib
from jaxssl.models import bert
from jaxssl.models import gpt

_TINY = flags.DEFINE_bool("tiny", False, "Tiny models and shapes (a CPU correctness check).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per case.")
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


def cases(tiny):
  """(name, family, model fields, batch, seq length, masked positions per row)."""
  if tiny:
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
  d, m, layers, vocab = cfg.hidden_size, cfg.mlp_dim, cfg.num_layers, cfg.vocab_size
  flops = 6 * layers * (4 * d * d + 2 * d * m) + 12 * layers * length * d
  if family == "gpt":
    return flops + 6 * d * vocab
  return flops + 6 * (d * d + d * vocab) * predictions / length


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


def time_case(family, fields, batch_size, length, predictions, num_steps):
  """(seconds per train step (best of ``num_steps``), compile seconds, the model config)."""
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
  for _ in range(num_steps):
    start = time.perf_counter()
    state, _ = jax.block_until_ready(train_step(state, batch, key))
    times.append(time.perf_counter() - start)
  return min(times), compile_seconds, cfg


def measure(tiny, num_steps, attention=None):
  """The measured matmul rate and one row per case and attention implementation, as a dict.

  ``attention``: model.attention_implementation values (default: xla and cudnn on a GPU, xla
  elsewhere). A case that fails (e.g. a shape cuDNN lacks) gets a row with its ``error``.
  """
  device = jax.devices()[0]
  rate = matmul_rate(1024 if tiny else 8192)
  rows = []
  implementations = attention or (["xla", "cudnn"] if device.platform == "gpu" else ["xla"])
  for (name, family, fields, batch_size, length,
       predictions), implementation in itertools.product(cases(tiny), implementations):
    row = {
        "model": name,
        "attention": implementation,
        "batch_size": batch_size,
        "length": length,
    }
    fields = {**fields, "attention_implementation": implementation}
    try:
      seconds, compile_seconds, cfg = time_case(family, fields, batch_size, length, predictions,
                                                num_steps)
    except Exception as error:  # pylint: disable=broad-except  # e.g. a shape cuDNN lacks
      rows.append({**row, "error": str(error).splitlines()[0][:200]})
      continue
    tokens_per_second = batch_size * length / seconds
    model_flops = tokens_per_second * flops_per_token(cfg, family, length, predictions)
    rows.append({
        **row,
        "step_seconds": seconds,
        "tokens_per_second": tokens_per_second,
        "model_flops_per_second": model_flops,
        "mfu": model_flops / rate,
        "compile_seconds": compile_seconds,
    })
  return {
      "device": {
          "platform": device.platform,
          "kind": device.device_kind
      },
      "matmul_flops_per_second": rate,
      "rows": rows,
  }


def to_markdown(result):
  """``measure``'s dict as the printed report: the matmul rate, then a Markdown table."""
  device = result["device"]
  lines = [
      f"{device['platform']} {device['kind']}: measured bf16 matmul "
      f"{result['matmul_flops_per_second'] / 1e12:.1f} TFLOP/s",
      "| model | batch x seq | step ms | tokens/s | model TFLOP/s | MFU | compile s |",
      "|---|---|---|---|---|---|---|",
  ]
  for row in result["rows"]:
    case = f"| {row['model']}, {row['attention']} attention | {row['batch_size']} x {row['length']}"
    if "error" in row:
      lines.append(f"{case} | failed: {row['error']} |")
      continue
    lines.append(f"{case} | {row['step_seconds'] * 1e3:.1f} | {row['tokens_per_second']:,.0f} "
                 f"| {row['model_flops_per_second'] / 1e12:.1f} | {row['mfu']:.1%} "
                 f"| {row['compile_seconds']:.1f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  result = measure(_TINY.value, _STEPS.value, _ATTENTION.value)
  print(to_markdown(result))
  if _JSON.value:
    files.write_json(_JSON.value, result)


if __name__ == "__main__":
  app.run(main)
