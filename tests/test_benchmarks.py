"""The benchmark scripts run and report sane numbers (tiny sizes on CPU)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_throughput_script_at_tiny_size():
  process = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--tiny", "--steps=2"],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=600,
                           env={
                               "PYTHONPATH": str(ROOT),
                               "PATH": ""
                           })
  assert process.returncode == 0, process.stderr[-2000:]
  rows = [line for line in process.stdout.splitlines() if re.match(r"\| (bert|gpt)-tiny", line)]
  assert len(rows) == 2
  for row in rows:
    tokens_per_second, mfu = row.split("|")[4], row.split("|")[6]
    assert float(tokens_per_second.replace(",", "")) > 0
    assert 0 < float(mfu.strip(" %")) < 100
