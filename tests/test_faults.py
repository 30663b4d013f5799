"""Faults and bad input: one line naming the problem, a non-zero exit, and nothing lost."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT
from conftest import run_main
from conftest import wait_for_logged_step
from jaxssl import checkpoint
from jaxssl import cli
from jaxssl import predict
from jaxssl import pretrained
from jaxssl import workdir as workdir_lib
from jaxssl.convert import __main__ as convert
from jaxssl.convert import hf_bert
from jaxssl.core import finetune
from jaxssl.core import pretrain
from jaxssl.core import trained
from jaxssl.core import trainer
from test_finetune import small_config
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
    ("peak_flops_per_chip", -1.0, "peak_flops_per_chip=-1.0 is out of range; set it >= 0"),
    ("profile_steps", "5", "profile_steps='5' is not 'first,last'"),
    ("profile_steps", "6,2", "profile_steps='6,2': need 1 <= first <= last"),
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


def finetune_config(tfds_dir, tiny_encoder, **fields):
  """Fine-tuning the tiny pretrained encoder on sentiment: a few seconds a run."""
  return small_config(
      tfds_dir,
      init_from=tiny_encoder,
      train_split="train[:128]",
      eval_split="validation[:32]",
      max_seq_length=32,
      batch_size=8,
      **fields)


@pytest.fixture(scope="module")
def finetuned(tiny_encoder, tfds_dir, tmp_path_factory):
  """A finished 2-step fine-tuning workdir (read-only)."""
  workdir = str(tmp_path_factory.mktemp("finetuned"))
  config = finetune_config(
      tfds_dir, tiny_encoder, num_train_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  finetune.run(config, workdir)
  return workdir


def test_a_full_disk_stops_before_a_checkpoint_is_written(tiny_config, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  tiny_config.update(num_train_steps=4, checkpoint_every=2, log_every=2, eval_every=4)
  pretrain.run(tiny_config, workdir)
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda path: shutil._ntuple_diskusage(2**40, 2**40 - 2**20, 2**20))
  tiny_config.num_train_steps = 6
  with pytest.raises(OSError) as raised:
    pretrain.run(tiny_config, workdir)
  assert raised.value.errno == errno.ENOSPC
  assert cli.os_error_line(raised.value).startswith(
      "No space left on device for checkpoint 6 (7 MB needed, 1 MB free): "
      f"{os.path.join(workdir, 'checkpoints')}; the disk is full: free space")
  assert checkpoint_steps(workdir) == [2, 4]
  assert [r["step"] for r in metric_records(workdir) if r["split"] == "train"] == [2, 4, 6]
  monkeypatch.undo()  # space freed: the same command resumes
  pretrain.run(tiny_config, workdir)
  assert checkpoint_steps(workdir) == [2, 4, 6]


@pytest.mark.slow
def test_a_write_failing_midway_is_one_line_and_the_run_resumes(tiny_config, tmp_path):
  workdir = tmp_path / "run"
  tiny_config.update(num_train_steps=4, checkpoint_every=2, log_every=2, eval_every=4)
  pretrain.run(tiny_config, str(workdir))
  tiny_config.num_train_steps = 8

  # As a full disk does, the checkpoint's first big write fails: files are limited to 300 kB
  # (SIGXFSZ ignored, so the write returns an error rather than killing the process).
  limited = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000)); "
             "os.execv(sys.argv[1], sys.argv[1:])")
  failing = run_main(tiny_config, workdir, launcher=(sys.executable, "-c", limited))
  _, stderr = failing.communicate(timeout=300)
  assert failing.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      f"error: File too large: {workdir / 'checkpoints'}; the file is larger than this process "
      "may write (ulimit -f): raise the limit, then rerun the command.")
  assert checkpoint_steps(workdir)[:2] == [2, 4]
  resumed = run_main(tiny_config, workdir)
  _, stderr = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, stderr[-3000:]
  assert checkpoint_steps(workdir)[-1] == 8
  assert not [name for name in os.listdir(workdir / "checkpoints") if "tmp" in name]
  assert [r["step"] for r in metric_records(workdir) if r["split"] == "train"] == [2, 4, 6, 8]


def test_a_workdir_that_cannot_be_written_is_one_line(tiny_config, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  with pytest.raises(ValueError, match=f"--workdir={a_file} exists and is not a directory"):
    pretrain.run(tiny_config, str(a_file))
  with pytest.raises(ValueError, match=f"{a_file} is a file, not a directory"):
    pretrain.run(tiny_config, str(a_file / "run"))
  if os.geteuid() != 0:  # root writes into read-only directories
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    with pytest.raises(ValueError, match=f"{read_only} is not writable"):
      pretrain.run(tiny_config, str(read_only / "run"))


def test_a_missing_or_broken_config_file_is_one_line(tmp_path):
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n")
  for config, message in [
      (tmp_path / "nope.py", f"error: --config={tmp_path / 'nope.py'} cannot be loaded ([Errno 2] "
       f"No such file or directory: '{tmp_path / 'nope.py'}'); give a config file such as "
       "configs/bert_pretrain.py."),
      (broken,
       f"error: {broken} line 1 is not valid Python (invalid syntax); fix the config file."),
  ]:
    process = subprocess.run(
        [sys.executable, "-m", "jaxssl.main", f"--config={config}", f"--workdir={tmp_path / 'w'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300)
    assert process.returncode == 2 and process.stderr.strip().splitlines() == [message]
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_finetuning_resumes_exactly_after_sigterm_and_kill_9(tiny_encoder, tfds_dir, tmp_path):
  config = finetune_config(
      tfds_dir, tiny_encoder, num_train_steps=40, log_every=5, eval_every=20, checkpoint_every=5)
  straight = run_main(config, tmp_path / "straight")
  terminated = run_main(config, tmp_path / "terminated")
  wait_for_logged_step(tmp_path / "terminated", 10)
  terminated.send_signal(signal.SIGTERM)
  stdout, stderr = terminated.communicate(timeout=300)
  assert terminated.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
  assert "Stopped by SIGTERM" in stdout
  stopped_at = checkpoint_steps(tmp_path / "terminated")[-1]
  assert 10 <= stopped_at < 40
  predictor = predict.Predictor(str(tmp_path / "terminated"))  # the interrupted run predicts
  assert predictor.predict([{"text": "A fine film."}])[0]["label"] in ("negative", "positive")

  killed = run_main(config, tmp_path / "killed")
  deadline = time.time() + 300
  while time.time() < deadline and not (tmp_path / "killed" / "checkpoints" / "10").is_dir():
    time.sleep(0.05)
  killed.kill()
  killed.communicate(timeout=60)
  assert 10 <= checkpoint_steps(tmp_path / "killed")[-1] < 40

  for name in ("terminated", "killed"):
    resumed = run_main(config, tmp_path / name)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
  _, stderr = straight.communicate(timeout=600)
  assert straight.returncode == 0, stderr[-3000:]
  step, params = final_params(tmp_path / "straight")
  assert step == 40
  final_eval = [r for r in metric_records(tmp_path / "straight") if r["split"] == "eval"][-1]
  for name in ("terminated", "killed"):
    resumed_step, resumed_params = final_params(tmp_path / name)
    assert resumed_step == 40
    for path, value in params.items():
      np.testing.assert_array_equal(resumed_params[path], value, err_msg=f"{name} {path}")
    records = metric_records(tmp_path / name)
    assert [r for r in records if r["split"] == "eval"][-1] == final_eval
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(5, 41, 5))


def test_finetuning_workdir_states_are_one_line(finetuned, tfds_dir, tiny_encoder, tmp_path,
                                                capsys):
  # Finished: a rerun of the same command evaluates the saved model and trains nothing.
  config = finetune_config(
      tfds_dir, tiny_encoder, num_train_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  copy = shutil.copytree(finetuned, tmp_path / "copy")
  finetune.run(config, str(copy))
  assert "Done: 2 steps" in capsys.readouterr().out
  assert metric_records(copy) == metric_records(finetuned)
  # Killed before its first checkpoint: predict says what to do.
  shutil.rmtree(copy / "checkpoints")
  with pytest.raises(ValueError, match="has no checkpoint yet; rerun its training command"):
    predict.Predictor(str(copy))
  # Another kind of run, or another config, in the same workdir.
  with pytest.raises(ValueError, match="holds a 'finetune' run, not a pretraining run"):
    trained.load_decoder(workdir=finetuned)  # jaxssl.generate --workdir
  with pytest.raises(ValueError, match=r"holds an incompatible run \(task='sentiment'"):
    finetune.run(finetune_config(tfds_dir, tiny_encoder, task="rating"), finetuned)


def test_bad_prediction_input_is_one_line_naming_file_and_line(finetuned, tmp_path):
  with pytest.raises(ValueError, match=r"batch_size=0 is out of range; set it >= 1"):
    predict.Predictor(finetuned, batch_size=0)
  binary = tmp_path / "latin1.jsonl"
  binary.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
  with pytest.raises(
      ValueError, match=f"{binary} line 2 is not UTF-8 \\(byte 0xe9 at column 14\\)"):
    predict.read_records(str(binary))
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"text": "fine"}\n{"text": "unclosed\n')
  with pytest.raises(ValueError, match=f"{broken} line 2 is not JSON"):
    predict.read_records(str(broken))
  predictor = predict.Predictor(finetuned)
  with pytest.raises(ValueError, match=r"record 2: 'text' is \["):
    predictor.predict([{"text": "fine"}, {"text": ["a", "list"]}])
  with pytest.raises(ValueError, match=r"record 1: 'text' is null; give a string"):
    predictor.predict([{"text": None}])


def test_damaged_checkpoint_files_are_one_line(random_minilm_encoder, tmp_path):
  model, tokenizer = random_minilm_encoder
  directory = str(tmp_path / "hf")
  hf_bert.save_hf_bert(model, directory)
  tokenizer.save(directory)
  assert pretrained.load(directory).objective == "bert"
  weights = os.path.join(directory, "model.safetensors")
  with open(weights, "r+b") as f:
    f.truncate(os.path.getsize(weights) // 2)
  with pytest.raises(ValueError, match=f"{weights} cannot be read .*truncated or damaged"):
    pretrained.load(directory)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    f.write('{"model_type": "bert",')
  with pytest.raises(ValueError, match="config.json is not valid JSON"):
    pretrained.load(directory)
  junk = tmp_path / "junk.gguf"
  junk.write_bytes(b"not a gguf file" * 10)
  with pytest.raises(ValueError, match="cannot be read as GGUF .*copy or download it again"):
    pretrained.load(str(junk))


def test_an_export_onto_a_file_is_refused_before_reading(tiny_encoder, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("keep me")
  with pytest.raises(ValueError, match="is a file; export into a new directory"):
    convert.export_workdir(tiny_encoder, str(a_file))
  assert a_file.read_text() == "keep me"


def test_jobs_preparing_the_same_dataset_at_once_all_succeed(tmp_path):
  load = ("from jaxssl.data import corpora; print(len(corpora.load_examples("
          f"'jaxssl_sentiment/movie_reviews', 'train[:5]', {str(tmp_path)!r})))")
  jobs = [
      subprocess.Popen([sys.executable, "-c", load],
                       stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE,
                       text=True) for _ in range(3)
  ]
  for job in jobs:
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0 and stdout.splitlines()[-1] == "5", stderr[-3000:]
