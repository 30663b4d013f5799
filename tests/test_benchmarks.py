"""The benchmark scripts run and report sane numbers (tiny sizes on CPU)."""

import json
import subprocess
import sys

import pytest

from conftest import FAST_COMPILE
from conftest import ROOT

# The scripts' code paths, compiled without XLA's slow LLVM optimizations (tiny shapes: the
# timings themselves are not checked, only that they are sane).
ENV = {"PYTHONPATH": str(ROOT), "PATH": "", "XLA_FLAGS": FAST_COMPILE}
PEERS = ("transformers Flax", "transformers PyTorch")
KINDS = ("matmul", "layout copy", "reduction", "elementwise", "other")  # cpu_step_profile.py's


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


def measured(script, tmp_path, *args, timeout):
  """The results ``benchmarks/<script>`` writes with ``--json`` when run with ``args``."""
  path = tmp_path / "results.json"
  run_script(script, *args, f"--json={path}", timeout=timeout)
  return json.loads(path.read_text())


@pytest.mark.slow
def test_gpu_throughput_smoke_mode_times_jaxssl_beside_pytorch(tmp_path):
  # torch.compile is left out: on CPU it takes minutes to build its C++ kernels.
  result = measured(
      "gpu_throughput.py", tmp_path, "--smoke", "--steps=2", "--notorch_compile", timeout=600)
  rows = [(row["model"], row["framework"]) for row in result["rows"]]
  assert rows == [(model, framework)
                  for model in ("bert-tiny seq 32", "gpt-tiny seq 32")
                  for framework in ("PyTorch", "jaxssl")]
  for row in result["rows"]:
    assert "error" not in row
    assert row["tokens_per_second"] > 0
    assert 0 < row["mfu"] < 1
  assert set(result["ratios"]) == {"bert-tiny seq 32", "gpt-tiny seq 32"}
  assert all(ratio > 0 for ratio in result["ratios"].values())


@pytest.mark.slow
def test_corpus_scaling_smoke_mode_prepares_trains_and_streams(tfds_dir, tmp_path):
  result = measured(
      "corpus_scaling.py",
      tmp_path,
      "--smoke",
      f"--dir={tmp_path / 'work'}",
      f"--data_dir={tfds_dir}",
      timeout=600)
  assert [row["scale"] for row in result["scales"]] == [1, 2]
  for row in result["scales"]:
    assert row["prepare_tokens_per_second"] > 0 and row["train_tokens_per_second"] > 0
    assert row["train_peak_rss_mib"] > 100  # a JAX process, measured
  assert result["pipeline"]["examples_per_second"] > result["pipeline"]["ratio"] > 0


@pytest.mark.slow
def test_cpu_peers_script_at_tiny_size(tfds_dir, tmp_path):
  result = measured(
      "cpu_peers.py",
      tmp_path,
      "--tiny",
      "--steps=1",
      "--repeats=2",
      "--warmup=1",
      "--notorch_compile",
      f"--data_dir={tfds_dir}",
      timeout=900)
  assert list(result["parameters"]) == ["jaxssl", *PEERS]
  assert len(set(result["parameters"].values())) == 1
  frameworks = result["frameworks"]
  for name in ("jaxssl", *PEERS):
    assert frameworks[name]["step_seconds"] > 0 and frameworks[name]["tokens_per_second"] > 0
    assert 0 < frameworks[name]["mfu"] < 1
  assert frameworks["jaxssl"]["compile_seconds"] > 0
  assert set(result["ratios"]) == set(PEERS)
  assert all(ratio > 0 for ratio in result["ratios"].values())
  assert result["pipeline"]["examples_per_second"] > 0 and result["pipeline"]["ratio"] > 0


@pytest.mark.slow
def test_speed_features_script_at_tiny_size(tmp_path):
  result = measured("speed_features.py", tmp_path, "--tiny", "--repeats=1", timeout=900)
  rows = result["rows"]
  features = [(row["model"], row["feature"]) for row in rows]
  for family in ("bert", "gpt"):
    assert features.count((family, "remat")) == 3
    for feature in ("baseline", "compute dtype", "grad accum", "scan layers"):
      assert features.count((family, feature)) == 1
    deep = [feature for model, feature in features if model == f"{family} 3 layers"]
    assert deep == ["baseline", "scan layers", "remat", "scan layers"]
  assert ("bert", "MLM logits") in features and ("attention op", "attention") in features
  for row in rows:
    assert row["step_seconds"] > 0 and row["speed_up"] > 0
    assert row["feature"] != "baseline" or row["speed_up"] == 1.0
  useful = {row["setting"]: row["useful_tokens"] for row in rows}
  assert useful["paragraphs packed"] > useful["one paragraph per row, padded"]
  assert 0.95 < useful["chapters packed"] <= 1.0


@pytest.mark.slow
def test_cpu_step_profile_script_at_tiny_size(tfds_dir, tmp_path):
  result = measured(
      "cpu_step_profile.py",
      tmp_path,
      "--tiny",
      "--steps=1",
      "--top=5",
      f"--data_dir={tfds_dir}",
      timeout=600)
  kinds = result["kinds"]
  assert tuple(kinds) == KINDS
  assert sum(kind["share"] for kind in kinds.values()) == pytest.approx(1)
  assert kinds["matmul"]["share"] > 0 and kinds["elementwise"]["share"] > 0
  matmul = result["matmul"]
  # The dots in the compiled step are the model's matmuls that the FLOP formula counts, plus
  # the few it leaves out (pooler, NSP classifier, segment embedding): a little more, not less.
  assert 1.0 <= matmul["flops"] / matmul["model_flops"] < 1.2
  assert matmul["flops_per_second"] > 0
  assert len(result["top_ops"]) == 5
  assert all(op["kind"] in KINDS for op in result["top_ops"])


@pytest.mark.slow
def test_kv_cache_script_at_tiny_size(tmp_path):
  result = measured(
      "kv_cache.py",
      tmp_path,
      "--size=tiny",
      "--batch=2",
      "--prompt_length=4",
      "--output_lengths=4,8",
      "--repeats=1",
      timeout=300)
  assert [row["generated_tokens"] for row in result["rows"]] == [4, 8]
  for row in result["rows"]:
    assert row["cached_seconds_per_token"] > 0 and row["rerun_seconds_per_token"] > 0
    assert row["ratio"] > 0


@pytest.mark.slow
def test_finetune_peers_script_at_tiny_size(tfds_dir, tmp_path):
  result = measured(
      "finetune_peers.py",
      tmp_path,
      "--tasks=pos,qa",
      "--seeds=2",
      "--num_train_steps=2",
      "--train_split=train[:16]",
      "--eval_split=validation[:8]",
      f"--data_dir={tfds_dir}",
      timeout=900)
  assert list(result) == ["pos", "qa"]
  for task, metric in (("pos", "accuracy"), ("qa", "exact_match")):
    for framework in ("jaxssl", "transformers"):
      runs = result[task][framework]
      assert runs["metric"] == metric
      assert len(runs["scores"]) == 2 and all(0 <= score <= 1 for score in runs["scores"])
      assert len(runs["epoch_seconds"]) == 2 and all(s > 0 for s in runs["epoch_seconds"])
    # jaxssl compiled its step for at least one padding bucket; the eager PyTorch loop did not
    assert all(s > 0 for s in result[task]["jaxssl"]["compile_seconds"])
    assert result[task]["transformers"]["compile_seconds"] == [0.0, 0.0]


@pytest.mark.slow
def test_text_baselines_read_the_text(tfds_dir, tmp_path):
  result = measured(
      "text_baselines.py",
      tmp_path,
      "--tasks=pos,paraphrase",
      f"--data_dir={tfds_dir}",
      timeout=600)
  # Far above the text-blind majority tag (0.25) and class (0.5): these baselines read words.
  assert 0.9 < result["pos"]["accuracy"] < 1
  assert 0.85 < result["paraphrase"]["accuracy"] < 1
