"""Sharding on 8 fake CPU devices: tensor-parallel runs train as one device does, and FSDP and
tensor parallelism really split the parameters and optimizer state (bytes held per device).

Two subprocesses (``main`` below) run at once: the one-device references, and all the
8-device work.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import fake_devices
from conftest import load_config
from conftest import ROOT
from conftest import shared_across_workers
from conftest import small_bert_config
from conftest import small_gpt_config
from jaxssl import metrics
from jaxssl import sharding
from jaxssl import sharding_report
from jaxssl.core import pretrain
from jaxssl.models import bert
from test_train import final_params

ONE_DEVICE = dict(data=1, fsdp=1, tensor=1)
# The tensor-parallel runs: heads, MLP and vocabulary split 4 ways, batch rows 2 ways.
TENSOR_PARALLEL = {
    "bert": dict(data=1, fsdp=2, tensor=4),
    "gpt": dict(data=2, fsdp=1, tensor=4),
}
BYTES_MESHES = sharding_report.default_meshes(8)  # data=8, fsdp=8, tensor=8, fsdp=2 x tensor=4


def short_configs(tfds_dir, tokenizer_path):
  """{name: config} of the runs compared: a few steps, a loss logged at each."""
  configs = {
      "bert": small_bert_config(tfds_dir, tokenizer_path),
      "gpt": small_gpt_config(tfds_dir, tokenizer_path),
  }
  for config in configs.values():
    config.update(
        num_train_steps=6,
        warmup_steps=2,
        log_every=1,
        eval_every=6,
        eval_batches=1,
        checkpoint_every=6)
  llama = small_gpt_config(tfds_dir, tokenizer_path)  # sized only: grouped-query, SwiGLU, untied
  llama.model.size = "llama-tiny"
  return {**configs, "llama": llama}


def main(side, configs_file, out_dir):
  """One side of the comparison: the runs on one device (``side="one"``), or the
  tensor-parallel runs and the bytes per device on each of BYTES_MESHES (``"eight"``)."""
  with open(configs_file, encoding="utf-8") as f:
    configs = {name: ml_collections.ConfigDict(fields) for name, fields in json.load(f).items()}
  if side == "eight":
    held = {}
    for name, config in configs.items():
      abstract = sharding_report.abstract_state(config)
      held[name] = {
          sharding_report.mesh_label(sizes):
              sharding_report.state_bytes(abstract, sizes, config.logical_axis_rules)
          for sizes in BYTES_MESHES
      }
    with open(os.path.join(out_dir, "bytes.json"), "w", encoding="utf-8") as f:
      json.dump(held, f)
  for name, mesh in TENSOR_PARALLEL.items():
    configs[name].mesh.update(mesh if side == "eight" else ONE_DEVICE)
    pretrain.run(configs[name], os.path.join(out_dir, name))


@pytest.fixture(scope="module")
def runs(tfds_dir, tokenizer_path, tmp_path_factory, worker_id):
  """(configs, one-device workdirs, 8-device workdirs, bytes per device from the 8 devices)."""
  configs = short_configs(tfds_dir, tokenizer_path)

  def run_both_sides(directory):
    configs_file = directory / "configs.json"
    configs_file.write_text(json.dumps({name: c.to_dict() for name, c in configs.items()}))
    # Both sides at once, a core each.
    sides = {"one": fake_devices(1), "eight": fake_devices(8)}
    dirs, processes = {}, {}
    for side, xla_flags in sides.items():
      dirs[side] = directory / f"{side}_device"
      dirs[side].mkdir()
      with open(dirs[side] / "log.txt", "w", encoding="utf-8") as log:
        processes[side] = subprocess.Popen(
            [sys.executable, __file__, side,
             str(configs_file), str(dirs[side])],
            cwd=ROOT,
            env={
                **os.environ, "PYTHONPATH": str(ROOT),
                "XLA_FLAGS": xla_flags
            },
            stdout=log,
            stderr=subprocess.STDOUT)
    try:
      for side, process in processes.items():
        assert process.wait(timeout=600) == 0, (dirs[side] / "log.txt").read_text()[-3000:]
    finally:
      for process in processes.values():
        process.kill()
    return {side: str(path) for side, path in dirs.items()}

  dirs = shared_across_workers(tmp_path_factory, worker_id, "sharding_runs", run_both_sides)
  one, eight = pathlib.Path(dirs["one"]), pathlib.Path(dirs["eight"])
  held = json.loads((eight / "bytes.json").read_text())
  return configs, one, eight, held


def without_trailing_nones(spec):
  spec = tuple(spec)
  while spec and spec[-1] is None:
    spec = spec[:-1]
  return spec


def saved_partition_specs(workdir):
  """{array name: mesh axes of each dimension} of the train state in the latest checkpoint."""
  step = max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  path = workdir / "checkpoints" / str(step) / "state"
  arrays = jax.tree.leaves(ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree)
  return {array.name: without_trailing_nones(array.sharding.partition_spec) for array in arrays}


def mesh_axes_by_rules(tree, rules):
  """[(key path, leaf, mesh axis or None of each dimension)] for the leaves of ``tree``
  (ShapeDtypeStructs in Variables naming logical axes), as ``rules`` map those names."""
  specs = jax.tree.leaves(nnx.get_partition_spec(tree), is_leaf=lambda x: isinstance(x, jax.P))
  placed = []
  for (path, leaf), names in zip(jax.tree.leaves_with_path(tree), specs, strict=True):
    axes = [rules.get(name) if name else None for name in names]
    placed.append((path, leaf, axes + [None] * (leaf.ndim - len(axes))))
  return placed


def rule_partition_specs(config):
  """{array name: mesh axes of each dimension} of the train state, by the logical axis rules."""
  abstract = sharding_report.abstract_state(config)
  name = lambda path: ".".join(
      str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", None)))) for key in path)
  return {
      name(path): without_trailing_nones(axes)
      for path, _, axes in mesh_axes_by_rules(abstract, config.logical_axis_rules)
  }


@pytest.mark.parametrize("name", list(TENSOR_PARALLEL))
def test_tensor_parallel_run_matches_one_device(runs, name):
  configs, one_dir, eight_dir, _ = runs
  # The 8-device run held its state as the rules say (tensor axis included) up to its last save.
  assert saved_partition_specs(eight_dir / name) == rule_partition_specs(configs[name])
  loss = {"bert": "mlm_loss", "gpt": "lm_loss"}[name]
  records = {
      where: metrics.read_metrics(base / name)
      for where, base in (("one", one_dir), ("eight", eight_dir))
  }
  losses = {
      where: [r[loss] for r in rows if r["split"] == "train"] for where, rows in records.items()
  }
  assert len(losses["one"]) == 6
  np.testing.assert_allclose(losses["eight"], losses["one"], rtol=2e-4)
  evals = {where: [r[loss] for r in rows if r["split"] == "eval"] for where, rows in records.items()}
  np.testing.assert_allclose(evals["eight"], evals["one"], rtol=2e-4)
  _, params_one = final_params(one_dir / name)
  _, params_eight = final_params(eight_dir / name)
  for path, value in params_one.items():
    np.testing.assert_allclose(params_eight[path], value, atol=2e-4, err_msg=path)


def shard_bytes(tree, mesh_sizes, rules):
  """Bytes of one device's shard of every leaf of ``tree``, if each dimension whose logical name
  a rule maps to a mesh axis is split evenly over it."""
  total = 0
  for _, leaf, axes in mesh_axes_by_rules(tree, rules):
    used = [axis for axis in axes if axis]
    assert len(used) == len(set(used)), axes  # a mesh axis splits one dimension at most
    ways = [mesh_sizes[axis] if axis else 1 for axis in axes]
    assert all(dim % w == 0 for dim, w in zip(leaf.shape, ways)), (leaf.shape, axes, mesh_sizes)
    total += math.prod(dim // w for dim, w in zip(leaf.shape, ways)) * leaf.dtype.itemsize
  return total


@pytest.mark.parametrize("name", ["bert", "gpt", "llama"])
def test_parameters_and_optimizer_state_are_sharded(runs, name):
  configs, _, _, held = runs
  config = configs[name]
  abstract = sharding_report.abstract_state(config)
  whole = sharding_report.whole_bytes(abstract)
  print(f"\n{name}:\n" + sharding_report.table(whole, held[name]))
  rules = config.logical_axis_rules
  for sizes in BYTES_MESHES:
    got = held[name][sharding_report.mesh_label(sizes)]
    expected = {
        "params": shard_bytes(abstract.params, sizes, rules),
        "train state": shard_bytes(abstract, sizes, rules)
    }
    for part in expected:  # every shard is even: all 8 devices hold the same bytes
      assert got[part] == [expected[part]] * 8, (sizes, part)
  by_mesh = {label: bytes_held["params"][0] for label, bytes_held in held[name].items()}
  assert by_mesh["data=8"] == whole["params"]  # a whole copy on every device
  # FSDP splits every weight on its hidden (embed) axis; only the vectors along the other axes
  # (biases of the heads and MLP, the MLM bias) stay whole: Llama has none.
  assert whole["params"] / 8 <= by_mesh["fsdp=8"] < whole["params"] / 6
  # Tensor parallelism splits the attention, MLP and vocabulary matrices (and their moments);
  # position tables, norms and the attention/MLP output biases stay whole.
  assert whole["params"] / 8 < by_mesh["tensor=8"] < whole["params"] / 3
  assert by_mesh["fsdp=8"] < by_mesh["fsdp=2 tensor=4"] < by_mesh["tensor=8"]


def test_activations_are_constrained_to_the_mesh_under_the_rules():
  """Under ``sharding.activation_rules`` the encoder pins its activations (rows over data x
  fsdp, heads and MLP units over tensor); without the rules it leaves them to XLA. A one-device
  mesh still spells the constraints out in the lowered program."""
  cfg = bert.BertConfig.from_dict(dict(size="tiny", vocab_size=100))  # 2 blocks
  graphdef, state = nnx.split(bert.BertEncoder(cfg, nnx.Rngs(0)))
  ids = jnp.zeros((8, 16), jnp.int32)
  # A new function for each lowering: jit caches traces by function, and the rules are not
  # part of its cache key.
  forward = lambda: lambda state, ids: nnx.merge(graphdef, state)(ids, ids, ids >= 0)[0]
  rules = sharding.logical_rules(load_config("bert_pretrain", "size=tiny").logical_axis_rules)
  with jax.set_mesh(sharding.make_mesh(ONE_DEVICE)):
    plain = jax.jit(forward()).lower(state, ids).as_text()
    with sharding.activation_rules(rules):
      constrained = jax.jit(forward()).lower(state, ids).as_text()
  specs = re.findall(r"sdy\.sharding_constraint %\w+ <@mesh, (\[.*?\])>", constrained)
  assert "sharding_constraint" not in plain
  rows = '[{"data", "fsdp"}, {}, {}]'  # (B, T, D)
  heads = '[{"data", "fsdp"}, {}, {"tensor"}, {}]'  # (B, T, N, H)
  mlp = '[{"data", "fsdp"}, {}, {"tensor"}]'  # (B, T, M)
  # The embeddings' output and each block's output; q, k and v of each block; its MLP units.
  assert (specs.count(rows), specs.count(heads), specs.count(mlp)) == (3, 6, 2), specs


if __name__ == "__main__":
  main(*sys.argv[1:])
