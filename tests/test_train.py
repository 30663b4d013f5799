"""End-to-end BERT pretraining runs on a tiny model: learning, sharding, resume, outputs."""

import json
import os
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import run_main
from jaxssl import metrics
from jaxssl import train


def train_records(workdir, split="train"):
  return [r for r in metrics.read_metrics(workdir) if r["split"] == split]


def final_params(workdir):
  """The parameters of the latest checkpoint, as a flat {path: numpy array}."""
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  path = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  flat = {}

  def visit(prefix, node):
    if isinstance(node, dict):
      for key, child in node.items():
        visit(f"{prefix}/{key}", child)
    else:
      flat[prefix] = np.asarray(node)

  visit("", restored["params"])
  return steps[-1], flat


def test_loss_falls_and_run_outputs_are_written(tiny_config, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  eval_metrics = train.run(tiny_config, workdir)
  records = train_records(workdir)
  assert [r["step"] for r in records] == list(range(5, 41, 5))
  first, last = records[0]["mlm_loss"], records[-1]["mlm_loss"]
  assert first > np.log(1000) - 0.5  # starts near uniform over the vocabulary
  assert last < first - 1.0, (first, last)
  evals = train_records(workdir, "eval")
  assert [r["step"] for r in evals] == [20, 40]
  for key in ("mlm_loss", "mlm_accuracy", "mlm_perplexity", "nsp_accuracy", "unigram_mlm_accuracy"):
    assert key in evals[-1]
  assert eval_metrics["mlm_perplexity"] == pytest.approx(np.exp(eval_metrics["mlm_loss"]), rel=1e-6)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_train_steps"] == 40
  assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
  assert any(name.startswith("events") for name in os.listdir(os.path.join(workdir, "tensorboard")))
  checkpoints = sorted(
      int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert checkpoints == [20, 30, 40]  # every 10 steps, the last 3 kept
  assert "Done: 40 steps" in capsys.readouterr().out


def test_nsp_off_trains_mlm_only(tiny_config, tmp_path):
  tiny_config.nsp = False
  tiny_config.num_train_steps = 10
  eval_metrics = train.run(tiny_config, str(tmp_path / "run"))
  # Without NSP every B is the real continuation: the untrained NSP head's accuracy is then
  # the share of its argmax class, and its loss plays no part in training.
  assert eval_metrics["mlm_loss"] < np.log(1000)


@pytest.mark.slow
def test_eight_device_data_fsdp_mesh_matches_one_device(tiny_config, tmp_path):
  tiny_config.num_train_steps = 20
  one = run_main(tiny_config, tmp_path / "one")
  tiny_config.mesh.data, tiny_config.mesh.fsdp = 2, 4
  eight = run_main(
      tiny_config,
      tmp_path / "eight",
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  for process in (one, eight):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
  losses_one = [r["mlm_loss"] for r in train_records(tmp_path / "one")]
  losses_eight = [r["mlm_loss"] for r in train_records(tmp_path / "eight")]
  np.testing.assert_allclose(losses_eight, losses_one, rtol=2e-4)
  _, params_one = final_params(tmp_path / "one")
  _, params_eight = final_params(tmp_path / "eight")
  for name, value in params_one.items():
    np.testing.assert_allclose(params_eight[name], value, atol=2e-4, err_msg=name)


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tiny_config, tmp_path):
  uninterrupted = run_main(tiny_config, tmp_path / "straight")
  interrupted = run_main(tiny_config, tmp_path / "killed")
  metrics_file = tmp_path / "killed" / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics_file.exists() and
                                        '"step": 15' in metrics_file.read_text()):
    time.sleep(0.05)
  interrupted.send_signal(signal.SIGTERM)
  stdout, stderr = interrupted.communicate(timeout=300)
  assert interrupted.returncode == 0, stderr[-3000:]
  assert "Stopped by SIGTERM" in stdout
  stopped_at, _ = final_params(tmp_path / "killed")
  assert 15 <= stopped_at < 40

  resumed = run_main(tiny_config, tmp_path / "killed")
  for process in (resumed, uninterrupted):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
  step_a, params_a = final_params(tmp_path / "straight")
  step_b, params_b = final_params(tmp_path / "killed")
  assert step_a == step_b == 40
  for name, value in params_a.items():
    np.testing.assert_allclose(params_b[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  steps_logged = [r["step"] for r in train_records(tmp_path / "killed")]
  assert steps_logged == list(range(5, 41, 5))  # nothing logged twice after the restart
