"""Faults and bad input: one line naming the problem, a non-zero exit, and nothing lost."""

import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from conftest import run_main
from conftest import wait_for_logged_step
from jaxssl import workdir as workdir_lib
from jaxssl.core import pretrain
from jaxssl.core import trained
from jaxssl.core import trainer
from test_train import final_params


def checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def metric_records(workdir):
  """Every line of metrics.jsonl parsed as JSON (which fails on a bare NaN)."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("field, value, message", [
    ("num_train_steps", 0, "num_train_steps=0 is out of range; set it >= 1"),
    ("batch_size", -8, "batch_size=-8 is out of range; set it >= 1"),
    ("checkpoint_every", 0, "checkpoint_every=0 is out of range"),
    ("log_every", 0, "log_every=0 is out of range"),
    ("eval_every", 0, "eval_every=0 is out of range"),
    ("eval_batches", 0, "eval_batches=0 is out of range"),
    ("keep_checkpoints", 0, "keep_checkpoints=0 is out of range; set it >= 1"),
    ("learning_rate", float("nan"), "learning_rate=nan is not a number; set it >= 0"),
    ("learning_rate", float("inf"), "learning_rate=inf is out of range; set it >= 0"),
    ("learning_rate", -1e-3, "learning_rate=-0.001 is out of range"),
    ("warmup_steps", -1, "warmup_steps=-1 is out of range; set it >= 0"),
    ("mask_prob", 2.0, "mask_prob=2.0 is out of range; set it > 0 and <= 1"),
    ("adam_b2", 1.5, "adam_b2=1.5 is out of range; set it >= 0 and < 1"),
    ("seed", -1, "seed=-1 is out of range"),
    ("model.dtype", "float7", "model.dtype='float7' is not a supported dtype"),
])
def test_bad_config_values_fail_before_anything_is_written(tiny_config, tmp_path, field, value,
                                                           message):
  if "." in field:
    tiny_config.model[field.split(".")[1]] = value
  else:
    tiny_config[field] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    pretrain.run(tiny_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_busy_workdir_is_refused_and_left_alone(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.lock(workdir):  # as a running job holds it
    with pytest.raises(ValueError, match=r"is in use by a running job \(pid \d+ on "):
      pretrain.run(tiny_config, workdir)
    assert os.listdir(workdir) == [workdir_lib.LOCK_FILE]
  tiny_config.num_train_steps = 2  # released: the next run takes the workdir
  pretrain.run(tiny_config, workdir)
  assert checkpoint_steps(workdir) == [2]


def test_divergence_stops_and_keeps_the_last_finite_checkpoint(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  tiny_config.update(num_train_steps=4, checkpoint_every=2, log_every=2, eval_every=4)
  pretrain.run(tiny_config, workdir)
  # adam_eps=0 divides by zero for parameters no step has touched (unused position rows): NaN.
  tiny_config.update(num_train_steps=12, adam_eps=0.0)
  with pytest.raises(trainer.NonFiniteError, match="checkpoint 4, the last finite one, is kept"):
    pretrain.run(tiny_config, workdir)
  assert checkpoint_steps(workdir) == [2, 4]
  records = metric_records(workdir)
  assert records[-1]["non_finite"] is True and records[-1]["step"] > 4
  _, _, _, _, params = trained.load_trained(workdir)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tiny_config, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  tiny_config.update(num_train_steps=4, checkpoint_every=2, log_every=2, eval_every=4)
  pretrain.run(tiny_config, workdir)
  state_dir = os.path.join(workdir, "checkpoints", "4", "state")
  shutil.rmtree(state_dir)  # a write that never finished, or a damaged disk
  os.makedirs(state_dir)
  tiny_config.num_train_steps = 6
  pretrain.run(tiny_config, workdir)
  assert "checkpoint 4 cannot be read" in capsys.readouterr().out
  assert checkpoint_steps(workdir) == [2, 4, 6]
  assert [r["step"] for r in metric_records(workdir) if r["split"] == "train"] == [2, 4, 6]


@pytest.mark.slow
def test_a_second_concurrent_run_refuses_and_the_first_finishes(tiny_config, tmp_path):
  tiny_config.num_train_steps = 30
  first = run_main(tiny_config, tmp_path / "run")
  lock_file = tmp_path / "run" / workdir_lib.LOCK_FILE
  deadline = time.time() + 300
  while time.time() < deadline and not (lock_file.exists() and lock_file.read_text()):
    time.sleep(0.05)
  second = run_main(tiny_config, tmp_path / "run")
  _, second_err = second.communicate(timeout=300)
  assert second.returncode == 2
  assert second_err.strip().splitlines()[-1].startswith(
      f"error: workdir {tmp_path / 'run'} is in use")
  _, first_err = first.communicate(timeout=600)
  assert first.returncode == 0, first_err[-3000:]
  assert [r["step"] for r in metric_records(tmp_path / "run") if r["split"] == "train"
         ] == list(range(5, 31, 5))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tiny_config, tmp_path):
  workdir = tmp_path / "run"
  interrupted = run_main(tiny_config, workdir)
  wait_for_logged_step(workdir, 15)
  interrupted.send_signal(signal.SIGINT)
  stdout, stderr = interrupted.communicate(timeout=300)
  assert interrupted.returncode == 0, stderr[-3000:]
  assert "Stopped by SIGINT" in stdout and "Traceback" not in stderr
  stopped_at, _ = final_params(workdir)
  assert 15 <= stopped_at < 40
  resumed = run_main(tiny_config, workdir)
  _, stderr = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, stderr[-3000:]
  assert final_params(workdir)[0] == 40
