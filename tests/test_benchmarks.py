"""The benchmark scripts run and report sane numbers (tiny sizes on CPU)."""

import re
import subprocess
import sys

import pytest

from conftest import FAST_COMPILE
from conftest import ROOT

# The scripts' code paths, compiled without XLA's slow LLVM optimizations (tiny shapes: the
# timings themselves are not checked, only that they are sane).
ENV = {"PYTHONPATH": str(ROOT), "PATH": "", "XLA_FLAGS": FAST_COMPILE}


def run_script(script, *args, timeout):
  """Runs ``benchmarks/<script>`` with ``args``; its completed process, checked to succeed."""
  process = subprocess.run([sys.executable, f"benchmarks/{script}", *args],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=timeout,
                           env=ENV)
  assert process.returncode == 0, process.stderr[-2000:]
  return process


@pytest.mark.slow
def test_gpu_throughput_script_at_tiny_size():
  process = run_script("gpu_throughput.py", "--tiny", "--steps=2", timeout=600)
  rows = [line for line in process.stdout.splitlines() if re.match(r"\| (bert|gpt)-tiny", line)]
  assert len(rows) == 2
  for row in rows:
    tokens_per_second, mfu = row.split("|")[4], row.split("|")[6]
    assert float(tokens_per_second.replace(",", "")) > 0
    assert 0 < float(mfu.strip(" %")) < 100


@pytest.mark.slow
def test_cpu_peers_script_at_tiny_size(tfds_dir):
  process = run_script(
      "cpu_peers.py",
      "--tiny",
      "--steps=1",
      "--repeats=2",
      "--warmup=1",
      "--notorch_compile",
      f"--data_dir={tfds_dir}",
      timeout=900)
  lines = process.stdout.splitlines()
  counts = re.search(
      r"parameters: jaxssl ([\d,]+), transformers Flax ([\d,]+), "
      r"transformers PyTorch ([\d,]+)", process.stdout)
  assert counts and len(set(counts.groups())) == 1
  rows = {row.split("|")[1].strip(): row.split("|") for row in lines if row.startswith("| ")}
  for name in ("jaxssl", "transformers Flax", "transformers PyTorch"):
    step_ms, tokens_per_second, mfu = rows[name][2], rows[name][4], rows[name][6]
    assert float(step_ms) > 0 and float(tokens_per_second.replace(",", "")) > 0
    assert 0 < float(mfu.strip(" %")) < 100
  assert float(rows["jaxssl"][7]) > 0  # compile seconds
  for peer in ("transformers Flax", "transformers PyTorch"):
    ratio = re.search(rf"jaxssl / {peer}: ([\d.]+)x", process.stdout)
    assert ratio and float(ratio.group(1)) > 0
  pipeline = re.search(r"input pipeline: ([\d,]+) examples/s.*, ([\d.]+)x the", process.stdout)
  assert pipeline and float(pipeline.group(1).replace(",", "")) > 0
  assert float(pipeline.group(2)) > 0


@pytest.mark.slow
def test_speed_features_script_at_tiny_size():
  process = run_script("speed_features.py", "--tiny", "--repeats=1", timeout=900)
  rows = [[cell.strip()
           for cell in line.split("|")[1:-1]]
          for line in process.stdout.splitlines()
          if re.match(r"\| (bert|gpt|attention op)\b", line)]
  features = [(model, feature) for model, feature, *_ in rows]
  for family in ("bert", "gpt"):
    assert features.count((family, "remat")) == 3
    for feature in ("baseline", "compute dtype", "grad accum", "scan layers"):
      assert features.count((family, feature)) == 1
    deep = [feature for model, feature in features if model == f"{family} 3 layers"]
    assert deep == ["baseline", "scan layers", "remat", "scan layers"]
  assert ("bert", "MLM logits") in features and ("attention op", "attention") in features
  useful = {}
  for _, feature, setting, _, step_ms, speed_up, _, useful_tokens, _ in rows:
    assert float(step_ms) > 0 and float(speed_up.rstrip("x")) > 0
    assert feature != "baseline" or speed_up == "1.00x"
    useful[setting] = float(useful_tokens.rstrip("%")) / 100
  assert useful["paragraphs packed"] > useful["one paragraph per row, padded"]
  assert 0.95 < useful["chapters packed"] <= 1.0


@pytest.mark.slow
def test_cpu_step_profile_script_at_tiny_size(tfds_dir):
  process = run_script(
      "cpu_step_profile.py",
      "--tiny",
      "--steps=1",
      "--top=5",
      f"--data_dir={tfds_dir}",
      timeout=600)
  shares = dict(
      re.findall(r"^\| (matmul|layout copy|reduction|elementwise|other) \| [\d.]+ \| ([\d.]+)%",
                 process.stdout, re.M))
  assert set(shares) == {"matmul", "layout copy", "reduction", "elementwise", "other"}
  assert sum(map(float, shares.values())) == pytest.approx(100, abs=0.5)
  assert float(shares["matmul"]) > 0 and float(shares["elementwise"]) > 0
  counted = re.search(
      r"matmuls: ([\d.e+-]+) GFLOP per step \(cpu_peers.py's model FLOPs: "
      r"([\d.e+-]+)\) at ([\d.]+) GFLOP/s", process.stdout)
  # The dots in the compiled step are the model's matmuls that the FLOP formula counts, plus
  # the few it leaves out (pooler, NSP classifier, segment embedding): a little more, not less.
  assert counted and 1.0 <= float(counted.group(1)) / float(counted.group(2)) < 1.2
  assert float(counted.group(3)) > 0
  assert len(
      re.findall(r"^\| [\d.]+ \| (matmul|layout copy|reduction|elementwise|other) \|",
                 process.stdout, re.M)) == 5
