"""End-to-end BERT pretraining runs on a tiny model: learning, sharding, resume, outputs."""

import glob
import json
import os
import shutil
import signal
import socket

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import SMALL_CORPUS
from conftest import fake_devices
from conftest import load_config
from conftest import run_main
from conftest import wait_for_logged_step
from jaxssl import metrics
from jaxssl import suite
from jaxssl import workdir as workdir_lib
from jaxssl.core import objectives
from jaxssl.core import pretrain
from jaxssl.core import steps
from jaxssl.core.objectives import bert as bert_objective
from jaxssl.data import corpora


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
  eval_metrics = pretrain.run(tiny_config, workdir)
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


def test_mfu_is_logged_and_profile_steps_are_traced(tiny_config, tmp_path):
  tiny_config.update(num_train_steps=10, peak_flops_per_chip=1e9, profile_steps="6,7")
  workdir = str(tmp_path / "run")
  pretrain.run(tiny_config, workdir)
  flops_per_token = objectives.get(tiny_config).flops_per_token()
  records = train_records(workdir)
  assert [r["step"] for r in records] == [5, 10]
  for record in records:
    assert record["model_flops_per_second"] == pytest.approx(
        record["tokens_per_second"] * flops_per_token, rel=1e-6)
    assert record["mfu"] == pytest.approx(record["model_flops_per_second"] /
                                          (1e9 * jax.device_count()))
  traces = glob.glob(os.path.join(workdir, "profile", "**", "*.xplane.pb"), recursive=True)
  assert len(traces) == 1


def test_nsp_off_trains_mlm_only(tiny_config, tmp_path):
  tiny_config.nsp = False
  tiny_config.num_train_steps = 10
  eval_metrics = pretrain.run(tiny_config, str(tmp_path / "run"))
  assert eval_metrics["mlm_loss"] < np.log(1000)
  assert "nsp_accuracy" not in eval_metrics  # an untrained head's score is not reported
  # Without NSP every B is the real continuation...
  objective = objectives.get(tiny_config)
  tokenizer = workdir_lib.load_tokenizer(str(tmp_path / "run"))
  documents = [[[7, 8, 9], [10, 11]], [[12, 13], [14, 15, 16]]] * 8
  _, eval_batches = objective.batches(tokenizer, documents, documents,
                                      dict(process_index=0, process_count=1))
  assert all((batch["next_sentence_labels"] == 0).all() for batch in eval_batches)
  # ...and the NSP loss sends no gradient: the classifier's bias (zero at initialisation, no
  # weight decay on biases) is still exactly zero, where one NSP step would move it.
  _, params = final_params(tmp_path / "run")
  nsp_bias = [
      value for name, value in params.items() if "nsp_classifier" in name and "bias" in name
  ]
  assert len(nsp_bias) == 1 and not nsp_bias[0].any()


@pytest.mark.slow
def test_eight_device_data_fsdp_mesh_matches_one_device(tiny_config, tmp_path):
  tiny_config.num_train_steps = 20
  one = run_main(tiny_config, tmp_path / "one")
  tiny_config.mesh.data, tiny_config.mesh.fsdp = 2, 4
  eight = run_main(tiny_config, tmp_path / "eight", env={"XLA_FLAGS": fake_devices(8)})
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
@pytest.mark.parametrize("corpus", ["tfds", "txt_files"])
def test_kill_and_resume_matches_uninterrupted_run(tiny_config, tfds_dir, tmp_path, corpus):
  if corpus == "txt_files":  # a folder of .txt files, streamed in windows of 2 documents
    folder = tmp_path / "texts"
    folder.mkdir()
    for index, text in enumerate(corpora.load_texts(SMALL_CORPUS, "train", tfds_dir)):
      (folder / f"chapter{index:03d}.txt").write_text(text, encoding="utf-8")
    tiny_config.update(
        dataset=str(folder),
        train_split="train[10%:]",
        eval_split="train[:10%]",
        window_documents=2)
  uninterrupted = run_main(tiny_config, tmp_path / "straight")
  interrupted = run_main(tiny_config, tmp_path / "killed")
  wait_for_logged_step(tmp_path / "killed", 15)
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
    np.testing.assert_array_equal(params_b[name], value, err_msg=name)
  # The same batches after the restart give the same losses, to the bit (in the intervals the
  # restart did not cut: the first one after it averages fewer steps).
  straight, killed = (train_records(tmp_path / run) for run in ("straight", "killed"))
  assert [r["step"] for r in killed] == list(range(5, 41, 5))  # nothing logged twice
  whole = lambda records: [r["mlm_loss"] for r in records if r["step"] - 5 >= stopped_at]
  assert whole(killed) == whole(straight) and len(whole(straight)) >= 2
  if corpus == "txt_files":
    with open(
        tmp_path / "killed" / "checkpoints" / "40" / "data" / "metadata", encoding="utf-8") as f:
      assert json.load(f)["window"] > 0  # the run went past its first window


def test_cpu_recipe_trains_every_position_the_suite_reads():
  config = load_config("bert_pretrain", "recipe=cpu")
  assert not config.nsp and config.model.size == "mini"
  # Position rows past max_seq_length stay at their initialisation: a fine-tuning row must not
  # reach them (the demo's 64-token pretraining left QA's and paraphrase's rows untrained).
  longest_row = max(
      budget.get("max_seq_length", suite.SHARED["max_seq_length"])
      for task, budget in suite.BUDGETS.items()
      if task != "sentiment_zh")
  assert config.max_seq_length >= longest_row
  assert load_config("bert_pretrain", "recipe=cpu,nsp=True").nsp  # an explicit nsp= wins


def test_nsp_head_can_fit_a_fixed_batch():
  """NSP stays at chance in the short CPU run; here it must fit 16 fixed examples' labels."""
  import jax.numpy as jnp
  import ml_collections
  from flax import nnx

  from jaxssl.models import bert
  config = ml_collections.ConfigDict(
      dict(
          learning_rate=1e-3,
          warmup_steps=10,
          final_lr_fraction=1.0,
          num_train_steps=150,
          max_grad_norm=1.0,
          adam_b1=0.9,
          adam_b2=0.999,
          adam_eps=1e-6,
          weight_decay=0.0,
          max_predictions_per_seq=4,
          mask_prob=0.15,
          nsp=True))
  cfg = bert.BertConfig.from_dict(
      dict(size="tiny", vocab_size=300, dropout_rate=0.0, attention_dropout_rate=0.0))
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 300, (16, 24)).astype(np.int32)
  ids[:, 0], ids[:, 12], ids[:, -1] = 2, 3, 3
  batch = {
      "input_ids": ids,
      "segment_ids": (np.arange(24) > 12).astype(np.int32)[None].repeat(16, 0),
      "next_sentence_labels": rng.permutation(np.arange(16) % 2).astype(np.int32),
      "example_weights": np.ones(16, np.float32)
  }
  special = dict(special_ids=(0, 2, 3, 4), vocab_size=300, first_regular_id=5, mask_id=4, pad_id=0)
  optimizer, _ = steps.make_optimizer(config)
  graphdef, params = nnx.split(bert.BertForPretraining(cfg, nnx.Rngs(0)), nnx.Param)
  state = steps.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  train_step = jax.jit(bert_objective.make_train_step(graphdef, optimizer, config, special))
  for _ in range(150):
    state, sums = train_step(state, batch, jax.random.key(0))
  assert bert_objective.Objective(config,
                                  cfg).summarize(jax.device_get(sums))["nsp_accuracy"] == 1.0


@pytest.mark.slow
def test_two_processes_train_and_resume_exactly(tiny_config, tmp_path):
  """jax.distributed over loopback (gloo): 2 processes x 1 device, with the state FSDP-sharded
  across them and each reading its own half of the corpus; both restore their shards of a
  checkpoint and their own input positions, and go on to the uninterrupted run's end."""
  tiny_config.num_train_steps = 10
  tiny_config.eval_every = 10
  tiny_config.checkpoint_every = 5
  tiny_config.mesh.data, tiny_config.mesh.fsdp = 1, 2

  def run_two_processes(workdir):
    with socket.socket() as probe:  # a free port for the coordinator
      probe.bind(("127.0.0.1", 0))
      port = probe.getsockname()[1]
    processes = [
        run_main(
            tiny_config,
            workdir,
            env={"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"},
            extra=[
                f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                f"--process_id={index}"
            ]) for index in range(2)
    ]
    for process in processes:
      _, stderr = process.communicate(timeout=600)
      assert process.returncode == 0, stderr[-3000:]

  run_two_processes(tmp_path / "two")
  losses = [r["mlm_loss"] for r in train_records(tmp_path / "two")]
  assert len(losses) == 2 and losses[1] < losses[0]
  _, params = final_params(tmp_path / "two")
  with open(tmp_path / "two" / "checkpoints" / "5" / "data" / "metadata", encoding="utf-8") as f:
    positions = json.load(f)["processes"]
  assert positions == [{"epoch": 0, "window": 0, "batch": 5}] * 2
  # As if both processes were stopped after step 5's checkpoint. The restart must restore it:
  # it keeps the records up to step 5 (marked here) and logs the later ones again.
  shutil.rmtree(tmp_path / "two" / "checkpoints" / "10")
  records = [{**r, "before_restart": True} for r in metrics.read_metrics(tmp_path / "two")]
  (tmp_path / "two" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  run_two_processes(tmp_path / "two")
  assert [(r["step"], "before_restart" in r) for r in train_records(tmp_path / "two")
         ] == [(5, True), (10, False)]
  assert [r["mlm_loss"] for r in train_records(tmp_path / "two")] == losses
  _, resumed_params = final_params(tmp_path / "two")
  for name, value in params.items():
    np.testing.assert_array_equal(resumed_params[name], value, err_msg=name)
