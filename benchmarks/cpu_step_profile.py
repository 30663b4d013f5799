"""Where the jaxssl BERT train step's time goes: a per-op profile of the step cpu_peers.py times.

    python benchmarks/cpu_step_profile.py                 # BERT mini, batch 32 x 128 tokens
    python benchmarks/cpu_step_profile.py --tiny --steps=1   # a quick check (a test runs it)
    python benchmarks/cpu_step_profile.py --json=profile.json   # also the numbers as JSON

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

from jaxssl import files

import cpu_peers

# cpu_peers.py's flags apply: --tiny, --steps (steps timed and traced), --data_dir, --json (this
# script's results, ``measure``'s dict).
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


def measure(*, tiny, num_steps, data_dir, top):
  """The step's time untraced and traced, its op time by kind, its matmul FLOPs and rate, and
  the ``top`` costliest ops, as a dict."""
  config = cpu_peers.bert_config(tiny, 0.0)
  with tempfile.TemporaryDirectory() as scratch_dir:
    documents, tokenizer = cpu_peers.load_documents(config, data_dir, scratch_dir)
  batch = next(cpu_peers.pretraining_batches(config, documents, tokenizer))
  runner = cpu_peers.Jaxssl(config, tokenizer, batch)
  for _ in range(2):
    runner.step()
  runner.wait()
  step_seconds = [cpu_peers.seconds_per_step(runner, 1) for _ in range(num_steps)]
  compiled = runner.train_step.lower(runner.state, runner.batch, runner.rng).compile()
  ops = classify(parse_hlo(compiled.as_text()))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(num_steps):
        runner.step()
      runner.wait()
      traced_seconds = (time.perf_counter() - start) / num_steps
    seconds = op_seconds(trace_dir, ops)
  if not seconds:
    raise RuntimeError("the trace holds no op of the compiled step; is this XLA:CPU?")

  by_kind, counts, flops = collections.Counter(), collections.Counter(), 0
  for name, total in seconds.items():
    kind, op_flops, _ = ops[name]
    by_kind[kind] += total / num_steps
    counts[kind] += 1
    flops += op_flops * (kind == "matmul")
  op_time = sum(by_kind.values())
  model = runner.model_config
  alone = max(
      cpu_peers.matmul_rates(shape)[0] for shape in cpu_peers.matmul_shapes(
          model, config.batch_size, config.max_seq_length, config.max_predictions_per_seq))
  tokens = config.batch_size * config.max_seq_length
  formula = cpu_peers.flops_per_token(model, config.max_seq_length,
                                      config.max_predictions_per_seq) * tokens
  return {
      "machine": {
          "cpu": cpu_peers.cpu_name(),
          "cores": os.cpu_count(),
          "jax": jax.__version__
      },
      "model": {
          "layers": model.num_layers,
          "hidden": model.hidden_size,
          "vocab": model.vocab_size
      },
      "batch_size":
          config.batch_size,
      "length":
          config.max_seq_length,
      "steps":
          num_steps,
      "step_seconds":
          statistics.median(step_seconds),  # untraced
      "traced_step_seconds":
          traced_seconds,
      # Per step, in KINDS' order; a share is of the summed op time.
      "kinds": {
          kind: {
              "seconds": by_kind[kind],
              "share": by_kind[kind] / op_time,
              "ops": counts[kind]
          } for kind in KINDS
      },
      "matmul": {
          "flops": flops,  # per step, counted in the HLO
          "model_flops": formula,  # per step, cpu_peers.py's formula
          "flops_per_second": flops / by_kind["matmul"],
          "xla_alone_flops_per_second": alone,
      },
      "executed_ops":
          len(seconds),
      "top_ops": [
          {
              "seconds": total / num_steps,  # per step
              "kind": ops[name][0],
              "op": name,
              "jax_operation": ops[name][2]
          } for name, total in seconds.most_common(top)
      ],
  }


def to_markdown(result):
  """``measure``'s dict as the printed report: the setting, then Markdown tables."""
  machine, model, matmul = result["machine"], result["model"], result["matmul"]
  lines = [
      f"{machine['cpu']}, {machine['cores']} cores, jax {machine['jax']}: BERT "
      f"{model['layers']} layers, hidden {model['hidden']}, vocab {model['vocab']}; batch "
      f"{result['batch_size']} x {result['length']}, float32",
      f"step: {result['step_seconds'] * 1e3:.1f} ms untraced (median of {result['steps']}), "
      f"{result['traced_step_seconds'] * 1e3:.1f} ms traced; op times below are per step",
      "| kind | ms per step | share of op time | ops |",
      "|---|---|---|---|",
  ]
  for kind, row in result["kinds"].items():
    lines.append(f"| {kind} | {row['seconds'] * 1e3:.1f} | {row['share']:.1%} | {row['ops']} |")
  lines += [
      f"matmuls: {matmul['flops'] / 1e9:.4g} GFLOP per step (cpu_peers.py's model FLOPs: "
      f"{matmul['model_flops'] / 1e9:.4g}) at {matmul['flops_per_second'] / 1e9:.1f} GFLOP/s in "
      "the step; XLA alone on the model's matmul shapes: "
      f"{matmul['xla_alone_flops_per_second'] / 1e9:.1f} GFLOP/s",
      f"costliest ops (of {result['executed_ops']} executed):",
      "| ms per step | kind | op | jax operation |",
      "|---|---|---|---|",
  ]
  for op in result["top_ops"]:
    lines.append(f"| {op['seconds'] * 1e3:.1f} | {op['kind']} | {op['op']} | "
                 f"{op['jax_operation']} |")
  return "\n".join(lines)


def main(argv):
  del argv
  result = measure(
      tiny=flags.FLAGS.tiny,
      num_steps=flags.FLAGS.steps,
      data_dir=flags.FLAGS.data_dir,
      top=_TOP.value)
  print(to_markdown(result))
  if flags.FLAGS.json:
    files.write_json(flags.FLAGS.json, result)


if __name__ == "__main__":
  app.run(main)
