"""BERT pretraining train step on CPU: jaxssl against Hugging Face transformers (Flax, PyTorch).

    python benchmarks/cpu_peers.py                          # BERT mini, batch 32 x 128 tokens
    python benchmarks/cpu_peers.py --tiny --steps=1 --repeats=1 --notorch_compile   # a test
    python benchmarks/cpu_peers.py --json=peers.json        # also the numbers as JSON

All frameworks train the same model (4 layers, hidden 256, 4 heads, MLP 1024, vocab 8000,
post-LN, exact GELU, tied MLM decoder, pooler + NSP classifier: equal parameter counts,
checked) on the same batch: the first batch jaxssl's input pipeline builds from Moby Dick
with a SentencePiece tokenizer trained as ``jaxssl.core.pretrain`` does. A train step is forward +
backward + update: MLM loss at 20 masked positions per row plus the NSP loss, global-norm
clipping, AdamW with weight decay on matrices only, a linear warm-up/decay schedule.

  jaxssl                the train step ``jaxssl.core.pretrain.run`` builds (the objective's
                        ``steps``, ``steps.state_structure``), jitted with the state donated.
                        It masks on device inside the step, so masking is part of its time.
  transformers Flax     ``FlaxBertForPreTraining`` with a train step jitted as run_mlm_flax.py
                        does (value_and_grad, flax TrainState, state donated), the same optax
                        optimizer, masked inputs prepared once on the host.
  transformers PyTorch  ``BertForPreTraining`` (SDPA attention) in a standard loop:
                        loss.backward(), clip_grad_norm_, torch.optim.AdamW (fused kernel),
                        a linear schedule; torch uses one thread per core. With
                        ``--torch_compile`` also the same loop over ``torch.compile(model)``.

The transformers models compute MLM logits at all positions (their API has no masked-position
gather), jaxssl only at the masked ones; every row still counts the same model FLOPs, so
tokens/s and MFU compare the same useful work. Dropout is ``--dropout`` everywhere (default
0, as the CPU recipe in configs/bert_pretrain.py trains).

Timing: after compilation and ``--warmup`` steps, each framework runs ``--steps`` steps in
turn, ``--repeats`` rounds (interleaved, so drift of the machine hits all alike); the table
gives the median round's seconds per step and the range over rounds. "compile s" is the first
step (tracing, compilation and that step); torch.compile caches on disk, so it is shorter
after the first run on a machine.

MFU = model FLOPs per second / the best float32 matmul rate measured through XLA in the same
run at the model's matmul shapes (x @ W). Model FLOPs per trained token are those of
benchmarks/gpu_throughput.py:
    6 * L * (4 d^2 + 2 d m) + 12 * L * T * d + 6 * (d^2 + d V) * P / T
(3 passes, 2 FLOPs per multiply-add; MLM head at P masked positions only; embeddings, norms,
biases and the pooler left out).

The input pipeline line times ``jaxssl.data.pretraining.pair_batches`` (pairing, truncation,
shuffling and batching of tokenized documents; masking happens in the step) over two epochs,
and compares its examples/s with what the jaxssl train step consumes.
"""

import contextlib
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from absl import app
from absl import flags
from flax.training import train_state

from jaxssl import cli
from jaxssl import files
from jaxssl.core import flops
from jaxssl.core import objectives
from jaxssl.core import steps
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.data import corpora
from jaxssl.data import pretraining
from jaxssl.data import tokenizer as tokenizer_lib

import peers  # benchmarks/peers.py, beside this script

_TINY = flags.DEFINE_bool("tiny", False, "Tiny model and batch (a quick check of the script).")
_STEPS = flags.DEFINE_integer("steps", 5, "Train steps timed together per framework and round.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds (the median round is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per framework after compilation.")
_DROPOUT = flags.DEFINE_float("dropout", 0.0, "Hidden and attention dropout of every model.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile(model).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (None: TFDS's default).")
_JSON = flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")

CORPUS = "jaxssl_corpus/moby_dick"


def cpu_name():
  """The processor's model name (Linux), else its architecture."""
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  return platform.machine()


def bert_config(tiny, dropout):
  """configs/bert_pretrain.py's mini (or tiny) recipe at the benchmark's shapes."""
  config = cli.load_config("bert_pretrain", "size=tiny" if tiny else "size=mini")
  config.dataset = CORPUS
  config.batch_size = 4 if tiny else 32
  config.max_seq_length = 32 if tiny else 128
  config.max_predictions_per_seq = 5 if tiny else 20  # 15% of the row, as BERT
  config.vocab_size = 1000 if tiny else 8000
  config.model.dropout_rate = dropout
  config.model.attention_dropout_rate = dropout
  return config


def load_documents(config, data_dir, scratch_dir):
  """Tokenized training documents and the tokenizer, trained as ``pretrain.load_tokenizer`` does."""
  texts = corpora.load_texts(config.dataset, config.train_split, data_dir, config.text_key)
  sentences = (s for text in texts for s in pretraining.split_sentences(text))
  tokenizer = tokenizer_lib.train_tokenizer(sentences, config.vocab_size,
                                            os.path.join(scratch_dir, "tokenizer.model"))
  return pretraining.tokenize_documents(tokenizer, texts), tokenizer


def pretraining_batches(config, documents, tokenizer):
  """jaxssl's pretraining batches of ``documents`` (pairing, truncation, shuffling, batching)."""
  return pretraining.pair_batches(
      documents,
      batch_size=config.batch_size,
      seed=config.seed,
      window_documents=config.window_documents,
      max_seq_length=config.max_seq_length,
      short_seq_prob=config.short_seq_prob,
      random_next_prob=0.5 if config.nsp else 0.0,
      cls_id=tokenizer.cls_id,
      sep_id=tokenizer.sep_id,
      pad_id=tokenizer.pad_id)


def pipeline_rate(config, documents, tokenizer, epochs=2):
  """(examples/s of jaxssl's pretraining batches over ``epochs`` epochs, the first batch)."""
  start = time.perf_counter()
  batches = pretraining_batches(config, documents, tokenizer)
  first = next(batches)
  num_batches = 1
  while batches.state()["epoch"] < epochs:
    next(batches)
    num_batches += 1
  return num_batches * config.batch_size / (time.perf_counter() - start), first


def flops_per_token(model_config, length, predictions):
  """Model FLOPs per trained token (``jaxssl.core.flops``, as a BERT pretraining run logs)."""
  return (flops.blocks_flops_per_token(model_config, length) + flops.output_flops_per_token(
      model_config.hidden_size, model_config.vocab_size, predictions / length))


def matmul_shapes(model_config, batch_size, length, predictions):
  """(M, K, N) of the model's matmuls: projections, MLP up and down, the MLM decoder."""
  tokens, d, m = batch_size * length, model_config.hidden_size, model_config.mlp_dim
  return [(tokens, d, d), (tokens, d, m), (tokens, m, d),
          (batch_size * predictions, d, model_config.vocab_size)]


def best_seconds(function, repeats=30):
  function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def matmul_rates(shape):
  """float32 FLOP/s of one (M, K) x (K, N) product through XLA and through torch (best of 30)."""
  rows, inner, columns = shape
  a = np.random.default_rng(0).standard_normal((rows, inner), np.float32)
  b = np.random.default_rng(1).standard_normal((inner, columns), np.float32)
  product = jax.jit(jnp.dot)
  a_jax, b_jax = jnp.asarray(a), jnp.asarray(b)
  a_torch, b_torch = torch.from_numpy(a), torch.from_numpy(b)
  flops = 2 * rows * inner * columns
  xla = flops / best_seconds(lambda: product(a_jax, b_jax).block_until_ready())
  with torch.no_grad():
    eager = flops / best_seconds(lambda: a_torch @ b_torch)
  return xla, eager


def peer_batch(batch, config, tokenizer):
  """The batch masked once (jaxssl's masking, fixed key) in the form transformers' models take:
  labels at every position, -100 (ignored) where nothing is predicted."""
  masked_ids, positions, labels, weights = (
      np.asarray(x) for x in bert_objective.mask_tokens(
          jax.random.key(0),
          jnp.asarray(batch["input_ids"]),
          special_ids=(tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id),
          vocab_size=tokenizer.vocab_size,
          first_regular_id=tokenizer.num_special,
          mask_id=tokenizer.mask_id,
          max_predictions=config.max_predictions_per_seq,
          mask_prob=config.mask_prob))
  position_labels = np.full(masked_ids.shape, -100, np.int64)  # (B, T)
  rows = np.arange(len(masked_ids))[:, None].repeat(positions.shape[1], 1)
  position_labels[rows[weights > 0], positions[weights > 0]] = labels[weights > 0]
  return {
      "input_ids": masked_ids.astype(np.int64),
      "attention_mask": (batch["input_ids"] != tokenizer.pad_id).astype(np.int64),
      "token_type_ids": batch["segment_ids"].astype(np.int64),
      "labels": position_labels,
      "next_sentence_label": batch["next_sentence_labels"].astype(np.int64),
  }


def first_step_seconds(runner):
  """Seconds of the first step: tracing and compilation (and one step), as gpu_throughput.py."""
  start = time.perf_counter()
  runner.step()
  runner.wait()
  return time.perf_counter() - start


class Runner:
  """One framework's train step on a fixed batch: ``step()`` trains once, ``wait()`` blocks."""

  name: str
  num_params: int
  compile_seconds: float | None = None

  def step(self):
    raise NotImplementedError

  def wait(self):
    pass


class Jaxssl(Runner):
  """The train step and state exactly as ``pretrain.run`` builds them, on one device."""

  name = "jaxssl"

  def __init__(self, config, tokenizer, batch):
    objective = objectives.get(config)
    optimizer, _ = steps.make_optimizer(config)
    graphdef, init_state, _ = steps.state_structure(objective, optimizer, config.seed)
    self.state = jax.jit(init_state)()
    self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
    train_step, _ = objective.steps(graphdef, optimizer, tokenizer)
    self.train_step = jax.jit(train_step, donate_argnums=0)
    self.batch, self.rng = jax.device_put(batch), jax.random.key(config.seed)
    self.model_config = objective.model_config
    self.compile_seconds = first_step_seconds(self)

  def step(self):
    self.state, self.sums = self.train_step(self.state, self.batch, self.rng)

  def wait(self):
    jax.block_until_ready((self.state, self.sums))


class FlaxPeer(Runner):
  """transformers' FlaxBertForPreTraining, trained as examples/flax/run_mlm_flax.py does."""

  name = "transformers Flax"

  def __init__(self, config, model_config, batch):
    model = transformers.FlaxBertForPreTraining(
        peers.bert_config(transformers, model_config), seed=0, dtype=jnp.float32)
    self.num_params = sum(x.size for x in jax.tree.leaves(model.params))
    optimizer, _ = steps.make_optimizer(config)
    self.state = train_state.TrainState.create(
        apply_fn=model.__call__, params=model.params, tx=optimizer)

    def train_step(state, batch, dropout_rng):
      dropout_rng, new_dropout_rng = jax.random.split(dropout_rng)

      def loss_fn(params):
        outputs = state.apply_fn(
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            params=params,
            dropout_rng=dropout_rng,
            train=True)
        label_mask = batch["labels"] >= 0  # (B, T)
        mlm_losses = optax.softmax_cross_entropy_with_integer_labels(
            outputs.prediction_logits, jnp.where(label_mask, batch["labels"], 0))
        nsp_losses = optax.softmax_cross_entropy_with_integer_labels(
            outputs.seq_relationship_logits, batch["next_sentence_label"])
        return (jnp.sum(mlm_losses * label_mask) / jnp.maximum(jnp.sum(label_mask), 1) +
                jnp.mean(nsp_losses))

      loss, grads = jax.value_and_grad(loss_fn)(state.params)
      return state.apply_gradients(grads=grads), loss, new_dropout_rng

    self.train_step = jax.jit(train_step, donate_argnums=0)
    self.batch = jax.device_put({k: v.astype(np.int32) for k, v in batch.items()})
    self.rng = jax.random.key(config.seed)
    self.compile_seconds = first_step_seconds(self)

  def step(self):
    self.state, self.loss, self.rng = self.train_step(self.state, self.batch, self.rng)

  def wait(self):
    jax.block_until_ready((self.state, self.loss))


class TorchPeer(Runner):
  """transformers' BertForPreTraining in a standard PyTorch loop, optionally torch.compiled."""

  def __init__(self, config, model_config, batch, compiled):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(
        peers.bert_config(transformers, model_config, attn_implementation="sdpa"))
    model.train()
    self.num_params = sum(p.numel() for p in model.parameters())
    parameters = list(model.parameters())
    self.optimizer, self.schedule = peers.adamw(torch, transformers, parameters, config)
    self.parameters = parameters
    self.max_grad_norm = config.max_grad_norm
    self.model = torch.compile(model) if compiled else model
    self.name = "transformers PyTorch" + (" compiled" if compiled else "")
    self.batch = {k: torch.from_numpy(v) for k, v in batch.items()}
    if compiled:
      self.compile_seconds = first_step_seconds(self)

  def step(self):
    loss = self.model(**self.batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
    self.optimizer.step()
    self.schedule.step()
    self.optimizer.zero_grad(set_to_none=True)


def seconds_per_step(runner, num_steps):
  start = time.perf_counter()
  for _ in range(num_steps):
    runner.step()
  runner.wait()
  return (time.perf_counter() - start) / num_steps


def measure(*, tiny, num_steps, repeats, warmup, dropout, torch_compile, data_dir):
  """The setting, the matmul rates, every framework's timings and the input pipeline's rate, as
  a dict (see the module docstring for what each measures)."""
  torch.set_num_threads(os.cpu_count())
  config = bert_config(tiny, dropout)
  batch_size, length = config.batch_size, config.max_seq_length
  predictions = config.max_predictions_per_seq
  with tempfile.TemporaryDirectory() as scratch_dir:
    documents, tokenizer = load_documents(config, data_dir, scratch_dir)
  examples_per_second, batch = pipeline_rate(config, documents, tokenizer)

  runners = [Jaxssl(config, tokenizer, batch)]
  model_config = runners[0].model_config
  hf_batch = peer_batch(batch, config, tokenizer)
  runners.append(FlaxPeer(config, model_config, hf_batch))
  runners.append(TorchPeer(config, model_config, hf_batch, compiled=False))
  if torch_compile:
    runners.append(TorchPeer(config, model_config, hf_batch, compiled=True))
  counts = {runner.name: runner.num_params for runner in runners}
  if len(set(counts.values())) != 1:
    raise ValueError(f"the models differ in size: {counts}")

  matmuls = []
  for shape in matmul_shapes(model_config, batch_size, length, predictions):
    xla, eager = matmul_rates(shape)
    matmuls.append({
        "shape": list(shape),
        "xla_flops_per_second": xla,
        "torch_flops_per_second": eager
    })
  xla_rate = max(matmul["xla_flops_per_second"] for matmul in matmuls)

  for runner in runners:
    for _ in range(warmup):
      runner.step()
    runner.wait()
  rounds = {runner.name: [] for runner in runners}
  for _ in range(repeats):
    for runner in runners:
      rounds[runner.name].append(seconds_per_step(runner, num_steps))

  flops = flops_per_token(model_config, length, predictions)
  frameworks = {}
  for runner in runners:
    seconds = statistics.median(rounds[runner.name])
    tokens_per_second = batch_size * length / seconds
    frameworks[runner.name] = {
        "step_seconds": seconds,
        "round_seconds": rounds[runner.name],
        "tokens_per_second": tokens_per_second,
        "model_flops_per_second": tokens_per_second * flops,
        "mfu": tokens_per_second * flops / xla_rate,
        "compile_seconds": runner.compile_seconds,
    }
  jaxssl_rate = frameworks["jaxssl"]["tokens_per_second"]
  consumed = jaxssl_rate / length
  return {
      "machine": {
          "cpu": cpu_name(),
          "cores": os.cpu_count(),
          "jax": jax.__version__,
          "transformers": transformers.__version__,
          "torch": torch.__version__,
          "torch_threads": torch.get_num_threads(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
      },
      "model": {
          "layers": model_config.num_layers,
          "hidden": model_config.hidden_size,
          "heads": model_config.num_heads,
          "mlp": model_config.mlp_dim,
          "vocab": model_config.vocab_size,
      },
      "batch_size": batch_size,
      "length": length,
      "predictions": predictions,
      "dropout": dropout,
      "steps": num_steps,
      "repeats": repeats,
      "parameters": counts,
      "matmuls": matmuls,
      "mfu_reference_flops_per_second": xla_rate,
      "frameworks": frameworks,
      # jaxssl's tokens/s over each peer's.
      "ratios": {
          name: jaxssl_rate / framework["tokens_per_second"]
          for name, framework in frameworks.items()
          if name != "jaxssl"
      },
      "pipeline": {
          "corpus": CORPUS,
          "examples_per_second": examples_per_second,
          "consumed_examples_per_second": consumed,  # by the jaxssl step
          "ratio": examples_per_second / consumed,
      },
  }


def to_markdown(result):
  """``measure``'s dict as the printed report: the setting, then Markdown tables and ratios."""
  machine, model, frameworks = result["machine"], result["model"], result["frameworks"]
  lines = [
      f"{machine['cpu']}, {machine['cores']} cores; jax {machine['jax']}, transformers "
      f"{machine['transformers']}, torch {machine['torch']} ({machine['torch_threads']} threads); "
      f"XLA_FLAGS={machine['xla_flags']!r}",
      f"BERT {model['layers']} layers, hidden {model['hidden']}, {model['heads']} heads, MLP "
      f"{model['mlp']}, vocab {model['vocab']}; batch {result['batch_size']} x "
      f"{result['length']} tokens, {result['predictions']} masked positions per row; dropout "
      f"{result['dropout']}; float32",
      "parameters: " +
      ", ".join(f"{name} {count:,}" for name, count in result["parameters"].items()),
      "| matmul M x K x N | XLA GFLOP/s | torch GFLOP/s |",
      "|---|---|---|",
  ]
  for matmul in result["matmuls"]:
    lines.append(f"| {' x '.join(map(str, matmul['shape']))} | "
                 f"{matmul['xla_flops_per_second'] / 1e9:.1f} | "
                 f"{matmul['torch_flops_per_second'] / 1e9:.1f} |")
  lines += [
      "MFU reference: the best XLA float32 matmul rate above, "
      f"{result['mfu_reference_flops_per_second'] / 1e9:.1f} GFLOP/s",
      f"| framework | step ms (median of {result['repeats']}) | range ms | tokens/s "
      "| model GFLOP/s | MFU | compile s |",
      "|---|---|---|---|---|---|---|",
  ]
  for name, framework in frameworks.items():
    compile_seconds = framework["compile_seconds"]
    compile_text = "-" if compile_seconds is None else f"{compile_seconds:.1f}"
    lines.append(f"| {name} | {framework['step_seconds'] * 1e3:.1f} | "
                 f"{min(framework['round_seconds']) * 1e3:.1f}-"
                 f"{max(framework['round_seconds']) * 1e3:.1f} | "
                 f"{framework['tokens_per_second']:,.0f} | "
                 f"{framework['model_flops_per_second'] / 1e9:.1f} | {framework['mfu']:.1%} | "
                 f"{compile_text} |")
  for name, ratio in result["ratios"].items():
    lines.append(f"jaxssl / {name}: {ratio:.2f}x tokens/s")
  pipeline = result["pipeline"]
  lines.append(f"input pipeline: {pipeline['examples_per_second']:,.0f} examples/s (pair_batches, "
               f"2 epochs of {pipeline['corpus']}), {pipeline['ratio']:.1f}x the "
               f"{pipeline['consumed_examples_per_second']:,.1f} examples/s the jaxssl step "
               "consumes")
  return "\n".join(lines)


def main(argv):
  del argv
  result = measure(
      tiny=_TINY.value,
      num_steps=_STEPS.value,
      repeats=_REPEATS.value,
      warmup=_WARMUP.value,
      dropout=_DROPOUT.value,
      torch_compile=_TORCH_COMPILE.value,
      data_dir=_DATA_DIR.value)
  print(to_markdown(result))
  if _JSON.value:
    files.write_json(_JSON.value, result)


if __name__ == "__main__":
  app.run(main)
