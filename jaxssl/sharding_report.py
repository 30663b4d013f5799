"""Bytes each device holds of a run's parameters and train state, mesh by mesh.

    python -m jaxssl.sharding_report --config=configs/bert_pretrain.py:size=tiny --devices=8

places a train state (parameters + AdamW moments) on ``--devices`` fake CPU devices with the
shardings ``jaxssl.core.pretrain.run`` gives it, for a data-parallel, an FSDP, a
tensor-parallel and an FSDP x tensor mesh, and prints what each device holds (measured from the arrays' shards).
Each device's zeros are only its shard, so accelerator-sized configs fit in host memory
(except the data-parallel mesh: every device holds a whole copy).
"""

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from jaxssl import cli
from jaxssl import sharding
from jaxssl.core import objectives
from jaxssl.core import steps

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.", lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU devices to shard over.")
flags.mark_flags_as_required(["config"])


def mesh_label(mesh_sizes):
  """``{"data": 1, "fsdp": 2, "tensor": 4}`` -> "fsdp=2 tensor=4"."""
  return " ".join(f"{axis}={size}" for axis, size in mesh_sizes.items() if size != 1) or "1 device"


def abstract_state(config):
  """The TrainState ``config`` trains, as ShapeDtypeStructs in Variables naming logical axes."""
  optimizer, _ = steps.make_optimizer(config)
  _, _, abstract = steps.state_structure(objectives.get(config), optimizer, config.seed)
  return abstract


def whole_bytes(abstract):
  """``{"params": bytes, "train state": bytes}`` of one whole copy of ``abstract_state(...)``."""
  size = lambda tree: sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))
  return {"params": size(abstract.params), "train state": size(abstract)}


def state_bytes(abstract, mesh_config, rules_config):
  """``{"params": [...], "train state": [...]}``: the bytes each device (``jax.devices()``
  order) holds of a TrainState shaped as ``abstract`` once placed with the shardings
  ``jaxssl.core.pretrain.run`` gives it on that mesh (its values are zeros: only shapes
  matter here)."""
  mesh = sharding.make_mesh(mesh_config)
  shardings = sharding.state_shardings(abstract, mesh, sharding.logical_rules(rules_config))
  place = lambda leaf, where: jax.make_array_from_callback(
      leaf.shape, where, lambda index: np.zeros(leaf.shape, leaf.dtype)[index])
  state = jax.tree.map(place, abstract, shardings)
  held = {"params": sharding.per_device_bytes(state.params)}
  held["train state"] = sharding.per_device_bytes(state)
  return {part: [by_device.get(d, 0) for d in jax.devices()] for part, by_device in held.items()}


def table(whole, by_mesh):
  """A text table: for each mesh (``{label: state_bytes(...)}``), the most any device holds of
  each part, and its share of ``whole`` (``whole_bytes(...)``)."""
  lines = [f"{'mesh':<18}" + "".join(f"{part + ' per device':>34}" for part in whole)]
  for label, held in {"one copy": {p: [n] for p, n in whole.items()}, **by_mesh}.items():
    cells = (f"{max(held[part]):>23,} B ({max(held[part]) / whole[part]:6.1%})" for part in whole)
    lines.append(f"{label:<18}" + "".join(f"{cell:>34}" for cell in cells))
  return "\n".join(lines)


def default_meshes(devices):
  """Data-parallel, FSDP, tensor-parallel and FSDP x tensor meshes over ``devices``."""
  tensor = 4 if devices % 4 == 0 and devices > 4 else devices
  return [
      dict(data=devices, fsdp=1, tensor=1),
      dict(data=1, fsdp=devices, tensor=1),
      dict(data=1, fsdp=1, tensor=devices),
      dict(data=1, fsdp=devices // tensor, tensor=tensor),
  ]


def main():
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", _DEVICES.value)
  config = _CONFIG.value
  abstract = abstract_state(config)
  by_mesh = {
      mesh_label(sizes): state_bytes(abstract, sizes, config.logical_axis_rules)
      for sizes in default_meshes(_DEVICES.value)
  }
  print(table(whole_bytes(abstract), by_mesh))


if __name__ == "__main__":
  cli.run(main)
