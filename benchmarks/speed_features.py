"""Before/after of each speed feature on a BERT and a GPT train step, at fixed shapes.

    python benchmarks/speed_features.py          # BERT and GPT mini: batch 32, seq 128
    python benchmarks/speed_features.py --tiny   # a quick correctness run of the same code
    python benchmarks/speed_features.py --json=features.json   # also the numbers as JSON

Runs on whatever device JAX finds (CPU or GPU); the packing corpus is read from the package's
Moby Dick file and tokenized with a SentencePiece model trained on it, so TFDS is not needed.

Each row changes one thing against its model's baseline (float32 compute, no remat, blocks
unrolled, one batch per update, no dropout so attention is the fused
``jax.nn.dot_product_attention``, MLM logits only at the masked positions):
  compute dtype   model.dtype=bfloat16 (parameters and optimizer state stay float32)
  grad accum      grad_accumulation_steps=4 at the same global batch
  remat           model.remat, each policy of jaxssl.models.layers.REMAT_POLICIES
  scan layers     model.scan_layers, at the baseline depth and at 3x its layers, where it is
                  compared with that depth unrolled, with and without model.remat=full
  attention       attention dropout > 0 takes the spelled-out einsum path instead of the fused
                  one (dropout's random bits included); "attention op" rows time the two paths
                  alone, forward + backward, without dropout
  MLM logits      logits at all T positions (max_predictions_per_seq = T) instead of P
  packing         GPT rows packed across documents (jaxssl.data.packing) against one document
                  per row (cut into rows, the last padded), for chapter and paragraph documents
Compile s: lowering + XLA compilation. Step ms: best of --repeats after a warm-up. Temp MiB:
XLA's scratch memory for the step (``compiled.memory_analysis()``), the memory remat and
accumulation trade for time. Useful tokens: the share of targets that count in the loss.
"""

import dataclasses
import functools
import importlib.resources
import json
import lzma
import sys
import tempfile
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
from jaxssl.data import packing
from jaxssl.data import pretraining
from jaxssl.data import tokenizer as tokenizer_lib
from jaxssl.models import bert
from jaxssl.models import gpt
from jaxssl.models import layers

_TINY = flags.DEFINE_bool("tiny", False, "Tiny models and shapes (a quick correctness run).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per row; the best is reported.")
_JSON = flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")

# The synthetic batches number special tokens as a jaxssl tokenizer does (no tokenizer is trained
# for them): by their position in SPECIAL_TOKENS, the regular tokens after them.
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


@dataclasses.dataclass(frozen=True)
class Shapes:
  size: str  # model preset of both families
  vocab_size: int
  batch_size: int
  length: int  # tokens per row
  predictions: int  # BERT's masked positions per row
  deep_layers: int  # depth of the scan-layers comparison


TINY = Shapes("tiny", 512, 8, 32, 5, 3)
FULL = Shapes("mini", 8000, 32, 128, 20, 12)


def best_seconds(function, repeats):
  jax.block_until_ready(function())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(function())
    times.append(time.perf_counter() - start)
  return min(times)


def time_compiled(function, args, repeats):
  """(compile seconds, best step seconds, temp bytes or None) of ``function(*args)``."""
  start = time.perf_counter()
  compiled = jax.jit(function).lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  temp_bytes = getattr(memory, "temp_size_in_bytes", None)
  return compile_seconds, best_seconds(lambda: compiled(*args), repeats), temp_bytes


def bert_batch(rng, shapes):
  ids = rng.integers(FIRST_REGULAR, shapes.vocab_size, (shapes.batch_size, shapes.length))
  half = shapes.length // 2
  ids[:, 0], ids[:, half], ids[:, -1] = CLS, SEP, SEP
  return {
      "input_ids":
          ids.astype(np.int32),
      "segment_ids": (np.arange(shapes.length) > half).astype(np.int32)
                     [None].repeat(shapes.batch_size, 0),
      "next_sentence_labels":
          rng.integers(0, 2, shapes.batch_size).astype(np.int32),
      "example_weights":
          np.ones(shapes.batch_size, np.float32)
  }


def gpt_batch(rng, shapes):
  ids = rng.integers(FIRST_REGULAR, shapes.vocab_size, (shapes.batch_size, shapes.length + 1))
  ids = ids.astype(np.int32)
  return {
      "input_ids": ids[:, :-1],
      "target_ids": ids[:, 1:],
      "positions": np.arange(shapes.length, dtype=np.int32)[None].repeat(shapes.batch_size, 0),
      "segment_ids": np.ones((shapes.batch_size, shapes.length), np.int32),
      "target_weights": np.ones((shapes.batch_size, shapes.length), np.float32),
      "example_weights": np.ones(shapes.batch_size, np.float32)
  }


def train_step_case(family, shapes, fields=None, accumulation_steps=1, predictions=None):
  """(train step, its arguments) of ``family`` at ``shapes`` with model ``fields`` changed."""
  fields = {
      "size": shapes.size,
      "vocab_size": shapes.vocab_size,
      "dropout_rate": 0.0,
      "attention_dropout_rate": 0.0,
      **(fields or {})
  }
  optimizer, _ = steps.make_optimizer(OPTIMIZER)
  rng = np.random.default_rng(0)
  if family == "bert":
    model = bert.BertForPretraining(bert.BertConfig.from_dict(fields), nnx.Rngs(0))
    options = types.SimpleNamespace(
        max_predictions_per_seq=predictions or shapes.predictions, mask_prob=0.15, nsp=True)
    special = dict(
        special_ids=(PAD, CLS, SEP, MASK),
        vocab_size=shapes.vocab_size,
        first_regular_id=FIRST_REGULAR,
        mask_id=MASK,
        pad_id=PAD)
    graphdef, params = nnx.split(model, nnx.Param)
    step = bert_objective.make_train_step(graphdef, optimizer, options, special, accumulation_steps)
    batch = bert_batch(rng, shapes)
  else:
    model = gpt.GPT(gpt.GPTConfig.from_dict(fields), nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    step = gpt_objective.make_train_step(graphdef, optimizer, accumulation_steps)
    batch = gpt_batch(rng, shapes)
  state = steps.fresh_state(params, optimizer)
  return step, (state, jax.device_put(batch), jax.random.key(0))


def attention_case(shapes, fused):
  """Forward + backward of one attention of the BERT model's shape, fused or spelled out."""
  cfg = bert.BertConfig.from_dict({"size": shapes.size})
  shape = (shapes.batch_size, shapes.length, cfg.num_heads, cfg.hidden_size // cfg.num_heads)
  q, k, v = jax.random.normal(jax.random.key(0), (3, *shape))  # (B, T, N, H) each
  mask = jnp.ones((shapes.batch_size, 1, 1, shapes.length), bool)  # (B, 1, 1, S)

  def attention(q, k, v):
    if fused:
      return jax.nn.dot_product_attention(q, k, v, mask=mask)
    return layers.spelled_out_attention(q, k, v, mask, 0.0, None)

  return jax.grad(lambda *qkv: jnp.sum(attention(*qkv)**2), argnums=(0, 1, 2)), (q, k, v)


def padded_rows(documents, max_seq_length, separator_id, pad_id):
  """One document per row, as without packing: each document and its separator cut into rows
  of ``max_seq_length + 1`` tokens, the last one padded. Arrays as ``packing.pack_documents``."""
  rows, lengths = [], []
  for document in documents:
    stream = np.append(np.asarray(document, np.int32), np.int32(separator_id))
    for start in range(0, len(stream) - 1, max_seq_length):
      piece = stream[start:start + max_seq_length + 1]  # inputs, and targets shifted by one
      rows.append(np.pad(piece, (0, max_seq_length + 1 - len(piece)), constant_values=pad_id))
      lengths.append(len(piece) - 1)
  tokens = np.stack(rows)  # (N, L + 1)
  real = np.arange(max_seq_length)[None] < np.asarray(lengths)[:, None]  # (N, L)
  return {
      "input_ids": tokens[:, :-1],
      "target_ids": tokens[:, 1:],
      "segment_ids": real.astype(np.int32),
      "positions": np.arange(max_seq_length, dtype=np.int32)[None].repeat(len(rows), 0),
      "target_weights": real.astype(np.float32)
  }


def corpus_texts():
  """Moby Dick's chapters, read from the file shipped in the package (TFDS not needed)."""
  path = importlib.resources.files("jaxssl.data") / "corpora" / "moby_dick.jsonl.xz"
  with lzma.open(path, "rt", encoding="utf-8") as lines:
    return [json.loads(line)["text"] for line in lines]


def packing_rows(shapes, repeats):
  """Measured rows of GPT steps on packed and on one-document-per-row batches of a real corpus,
  its documents taken whole (chapters) or split into paragraphs."""
  texts = corpus_texts()
  with tempfile.TemporaryDirectory() as scratch:
    sentences = (s for text in texts for s in pretraining.split_sentences(text))
    tokenizer = tokenizer_lib.train_tokenizer(sentences, shapes.vocab_size,
                                              f"{scratch}/tokenizer.model")
  paragraphs = [p for text in texts for p in text.split("\n\n") if p.strip()]
  step, (state, _, key) = train_step_case("gpt", shapes)
  compiled = None
  for unit, unit_texts in (("chapter", texts), ("paragraph", paragraphs)):
    documents = packing.flatten_documents(pretraining.tokenize_documents(tokenizer, unit_texts))
    padded = padded_rows(documents, shapes.length, tokenizer.sep_id, tokenizer.pad_id)
    packed = packing.pack_documents(documents, np.random.default_rng(0), shapes.length,
                                    tokenizer.sep_id)
    for setting, examples in ((f"one {unit} per row, padded", padded), (f"{unit}s packed", packed)):
      batch = {name: rows[:shapes.batch_size] for name, rows in examples.items()}
      batch = jax.device_put({**batch, "example_weights": np.ones(shapes.batch_size, np.float32)})
      compiled = compiled or jax.jit(step).lower(state, batch, key).compile()
      seconds = best_seconds(lambda: compiled(state, batch, key), repeats)
      useful = float(examples["target_weights"].mean())
      yield "gpt", "packing", setting, None, seconds, None, useful


def cases(shapes):
  """(model, feature, setting, thunk returning (function, args)); each model's first row is
  its baseline."""
  rows = []
  for family in ("bert", "gpt"):

    def case(fields=None, **options):
      return functools.partial(train_step_case, family, shapes, fields, **options)

    deep_model, deep = f"{family} {shapes.deep_layers} layers", {"num_layers": shapes.deep_layers}
    rows += [
        (family, "baseline", "float32, unrolled, no remat", case()),
        (family, "compute dtype", "model.dtype=bfloat16", case({"dtype": "bfloat16"})),
        (family, "grad accum", "grad_accumulation_steps=4", case(accumulation_steps=4)),
        *[(family, "remat", f"model.remat={policy}", case({"remat": policy}))
          for policy in layers.REMAT_POLICIES],
        (family, "scan layers", "model.scan_layers=True", case({"scan_layers": True})),
        (deep_model, "baseline", "unrolled", case(deep)),
        (deep_model, "scan layers", "model.scan_layers=True", case({
            **deep, "scan_layers": True
        })),
        (deep_model, "remat", "model.remat=full", case({
            **deep, "remat": "full"
        })),
        (deep_model, "scan layers", "model.scan_layers=True, model.remat=full",
         case({
             **deep, "scan_layers": True,
             "remat": "full"
         })),
    ]
    if family == "bert":
      rows += [
          (family, "attention", "attention_dropout_rate=0.1 (einsum path)",
           case({"attention_dropout_rate": 0.1})),
          (family, "MLM logits", f"at all {shapes.length} positions, not {shapes.predictions}",
           case(predictions=shapes.length)),
          ("attention op", "baseline", "jax.nn.dot_product_attention",
           functools.partial(attention_case, shapes, True)),
          ("attention op", "attention", "spelled out (einsum, softmax, einsum)",
           functools.partial(attention_case, shapes, False)),
      ]
  return rows


def measured_rows(shapes, repeats):
  """(model, feature, setting, compile s, step s, temp bytes, useful share) of every case."""
  for model, feature, setting, build in cases(shapes):
    print(f"  {model} {feature}: {setting}", file=sys.stderr, flush=True)
    compile_seconds, seconds, temp_bytes = time_compiled(*build(), repeats)
    yield model, feature, setting, compile_seconds, seconds, temp_bytes, 1.0
  print("  gpt packing", file=sys.stderr, flush=True)
  yield from packing_rows(shapes, repeats)


def measure(tiny, repeats):
  """The shapes and one row per case (``measured_rows``), with its speed-up against its model's
  baseline row and its useful tokens per second, as a dict."""
  shapes = TINY if tiny else FULL
  device = jax.devices()[0]
  tokens = shapes.batch_size * shapes.length
  rows, baselines = [], {}
  for model, feature, setting, compile_seconds, seconds, temp_bytes, useful in measured_rows(
      shapes, repeats):
    baseline = baselines.setdefault(model, seconds)
    rows.append({
        "model": model,
        "feature": feature,
        "setting": setting,
        "compile_seconds": compile_seconds,  # None where not measured (packing rows)
        "step_seconds": seconds,
        "speed_up": baseline / seconds,
        "temp_bytes": temp_bytes,  # None where XLA does not say
        "useful_tokens": useful,  # the share of targets that count in the loss
        "useful_tokens_per_second": useful * tokens / seconds,
    })
  return {
      "device": {
          "platform": device.platform,
          "kind": device.device_kind
      },
      "jax": jax.__version__,
      "shapes": dataclasses.asdict(shapes),
      "repeats": repeats,
      "rows": rows,
  }


def to_markdown(result):
  """``measure``'s dict as the printed report: the setting, then a Markdown table."""
  device, shapes = result["device"], result["shapes"]
  lines = [
      f"{device['platform']} {device['kind']}, jax {result['jax']}: {shapes['size']} models, "
      f"vocab {shapes['vocab_size']}, batch {shapes['batch_size']} x seq {shapes['length']}, "
      f"best of {result['repeats']}; speed-up against the model's baseline row",
      "| model | feature | setting | compile s | step ms | speed-up | temp MiB | useful tokens "
      "| useful tokens/s |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for row in result["rows"]:
    compile_text = "—" if row["compile_seconds"] is None else f"{row['compile_seconds']:.1f}"
    temp_text = "—" if row["temp_bytes"] is None else f"{row['temp_bytes'] / 2**20:.1f}"
    lines.append(f"| {row['model']} | {row['feature']} | {row['setting']} | {compile_text} "
                 f"| {row['step_seconds'] * 1e3:.1f} | {row['speed_up']:.2f}x | {temp_text} "
                 f"| {row['useful_tokens']:.1%} | {row['useful_tokens_per_second']:,.0f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  result = measure(_TINY.value, _REPEATS.value)
  print(to_markdown(result))
  if _JSON.value:
    files.write_json(_JSON.value, result)


if __name__ == "__main__":
  app.run(main)
