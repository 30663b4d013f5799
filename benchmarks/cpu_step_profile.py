"""Where the jaxssl BERT train step's time goes: a per-op profile of the step cpu_peers.py times.

    python benchmarks/cpu_step_profile.py                 # BERT mini, batch 32 x 128 tokens
    python benchmarks/cpu_step_profile.py --tiny --steps=1   # a quick check (a test runs it)

Builds the jaxssl step and batch exactly as ``benchmarks/cpu_peers.py`` does, runs ``--steps``
steps under ``jax.profiler.trace``, matches every executed op to its instruction in the
compiled HLO and adds up its wall time by kind:

  matmul       a dot, or a fusion around one (YNNPACK or Eigen kernels on CPU)
  layout copy  a copy or transpose, or a fusion whose result is one (e.g. an operand
               transposed for a weight-gradient product), whatever it also computes
  reduction    a fusion whose result is a reduction (softmax and LayerNorm statistics, sums)
  elementwise  the other fusions (GELU, AdamW, masking, residual adds…)
  other        the rest (loops, custom calls)

The matmul rate is the dots' FLOPs, counted from their shapes in the HLO, over the matmul
time; beside it, the best rate XLA reaches on the model's matmul shapes alone (cpu_peers.py's
MFU reference). Op times can add up to more than the step: XLA runs independent ops at once.
"""

import collections
import glob
import gzip
import json
import math
import os
import re
import statistics
import tempfile
import time

import jax
from absl import app
from absl import flags

import cpu_peers

# cpu_peers.py's flags apply: --tiny, --steps (steps timed and traced), --data_dir.
_TOP = flags.DEFINE_integer("top", 15, "Costliest ops listed.")

# An HLO instruction: name, result shape (a tuple has spaces), opcode, operands, attributes.
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\([^=]*?\)|\S+) ([\w\-]+)\(([^)]*)\)(.*)$")
KINDS = ("matmul", "layout copy", "reduction", "elementwise", "other")
CONTAINERS = ("while", "call", "conditional")  # ops that run other computations


def dimensions(shape):
  """'f32[4096,256]{1,0}' -> [4096, 256]."""
  match = re.match(r"\w+\[([\d,]*)\]", shape)
  return [int(d) for d in match.group(1).split(",") if d] if match else []


def parse_hlo(text):
  """{computation: {instruction name: (shape, opcode, operand names, attributes, is root)}}."""
  computations, current = {}, None
  for line in text.splitlines():
    if line.endswith("{") and not line.startswith(" "):
      current = computations.setdefault(re.search(r"%([\w.\-]+)", line).group(1), {})
    elif line.startswith("}"):
      current = None
    elif current is not None and (match := INSTRUCTION.match(line)):
      name, shape, opcode, operands, attributes = match.groups()
      current[name] = (shape, opcode, re.findall(r"%([\w.\-]+)", operands), attributes,
                       line.lstrip().startswith("ROOT "))
  return computations


def dot_flops(instructions, name):
  """2 x output elements x contracted size of one dot."""
  shape, _, (lhs, _), attributes, _ = instructions[name]
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", attributes).group(1)
  lhs_dims = dimensions(instructions[lhs][0])
  inner = math.prod(lhs_dims[int(d)] for d in contracting.split(",") if d)
  return 2 * math.prod(dimensions(shape)) * inner


def kind_of(opcode, body):
  """The kind of an op (KINDS) from its opcode and, for a fusion, its fused computation."""
  if opcode != "fusion":
    return {"dot": "matmul", "copy": "layout copy", "transpose": "layout copy"}.get(opcode, "other")
  opcodes = [op for _, op, *_ in body.values()]
  root = next(name for name, (*_, is_root) in body.items() if is_root)
  while body[root][1] in ("bitcast", "reshape"):  # a view: what it views
    root = body[root][2][0]
  root = body[root][1]
  if "dot" in opcodes:
    return "matmul"
  if root in ("copy", "transpose"):
    return "layout copy"
  if root == "reduce" or root == "tuple" and "reduce" in opcodes:
    return "reduction"
  return "elementwise"


def classify(computations):
  """{op name: (kind, matmul FLOPs, jax operation)} of every instruction that runs as an op:
  not those inside fusions, nor loops, calls and conditionals (their bodies' ops count)."""
  fused = {
      re.search(r"calls=%([\w.\-]+)", attributes).group(1)
      for instructions in computations.values()
      for _, opcode, _, attributes, _ in instructions.values()
      if opcode == "fusion"
  }
  ops = {}
  for computation, instructions in computations.items():
    for name, (_, opcode, _, attributes, _) in instructions.items():
      if computation in fused or opcode in CONTAINERS:
        continue
      body = instructions  # a fusion's: its fused computation
      if opcode == "fusion":
        body = computations[re.search(r"calls=%([\w.\-]+)", attributes).group(1)]
        dots = [n for n, (_, op, *_) in body.items() if op == "dot"]
      else:
        dots = [name] if opcode == "dot" else []
      jax_op = re.search(r'op_name="([^"]*)"', attributes)
      ops[name] = (kind_of(opcode, body), sum(dot_flops(body, d) for d in dots),
                   jax_op.group(1) if jax_op else "")
  return ops


def op_seconds(trace_dir, names):
  """{op name: total seconds} of the traced ops that are HLO instructions."""
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as trace:
    events = json.load(trace)
  totals = collections.Counter()
  for event in events["traceEvents"] if isinstance(events, dict) else events:
    if event.get("ph") == "X" and event.get("name") in names:
      totals[event["name"]] += event["dur"] / 1e6
  return totals


def main(argv):
  del argv
  config = cpu_peers.bert_config(flags.FLAGS.tiny, 0.0)
  with tempfile.TemporaryDirectory() as scratch_dir:
    documents, tokenizer = cpu_peers.load_documents(config, flags.FLAGS.data_dir, scratch_dir)
  batch = next(cpu_peers.pretraining_batches(config, documents, tokenizer))
  runner = cpu_peers.Jaxssl(config, tokenizer, batch)
  for _ in range(2):
    runner.step()
  runner.wait()
  steps = flags.FLAGS.steps
  step_seconds = [cpu_peers.seconds_per_step(runner, 1) for _ in range(steps)]
  compiled = runner.train_step.lower(runner.state, runner.batch, runner.rng).compile()
  ops = classify(parse_hlo(compiled.as_text()))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        runner.step()
      runner.wait()
      traced_seconds = (time.perf_counter() - start) / steps
    seconds = op_seconds(trace_dir, ops)
  if not seconds:
    raise RuntimeError("the trace holds no op of the compiled step; is this XLA:CPU?")

  model = runner.model_config
  print(f"{cpu_peers.cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}: BERT "
        f"{model.num_layers} layers, hidden {model.hidden_size}, vocab {model.vocab_size}; batch "
        f"{config.batch_size} x {config.max_seq_length}, float32")
  print(f"step: {statistics.median(step_seconds) * 1e3:.1f} ms untraced (median of {steps}), "
        f"{traced_seconds * 1e3:.1f} ms traced; op times below are per step")
  by_kind, counts, flops = collections.Counter(), collections.Counter(), 0
  for name, total in seconds.items():
    kind, op_flops, _ = ops[name]
    by_kind[kind] += total / steps
    counts[kind] += 1
    flops += op_flops * (kind == "matmul")
  op_time = sum(by_kind.values())
  print("| kind | ms per step | share of op time | ops |")
  print("|---|---|---|---|")
  for kind in KINDS:
    print(f"| {kind} | {by_kind[kind] * 1e3:.1f} | {by_kind[kind] / op_time:.1%} | "
          f"{counts[kind]} |")
  alone = max(
      cpu_peers.matmul_rates(shape)[0] for shape in cpu_peers.matmul_shapes(
          model, config.batch_size, config.max_seq_length, config.max_predictions_per_seq))
  tokens = config.batch_size * config.max_seq_length
  formula = cpu_peers.flops_per_token(model, config.max_seq_length,
                                      config.max_predictions_per_seq) * tokens
  print(f"matmuls: {flops / 1e9:.4g} GFLOP per step (cpu_peers.py's model FLOPs: "
        f"{formula / 1e9:.4g}) at {flops / by_kind['matmul'] / 1e9:.1f} GFLOP/s in the step; "
        f"XLA alone on the model's matmul shapes: {alone / 1e9:.1f} GFLOP/s")
  print(f"costliest ops (of {len(seconds)} executed):")
  print("| ms per step | kind | op | jax operation |")
  print("|---|---|---|---|")
  for name, total in seconds.most_common(_TOP.value):
    kind, _, jax_op = ops[name]
    print(f"| {total / steps * 1e3:.1f} | {kind} | {name} | {jax_op} |")


if __name__ == "__main__":
  app.run(main)
