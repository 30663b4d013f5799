"""Device mesh and the mapping of logical parameter axes onto it.

The mesh has three axes: ``data`` (pure data parallelism), ``fsdp`` (data parallelism with
parameters and optimizer state sharded over it) and ``tensor`` (Megatron-style splits of
heads and MLP). Batches are split over ``data`` × ``fsdp``.
"""

import collections

import jax
import numpy as np
from flax import linen
from flax import nnx

from jaxssl.models import layers

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config):
  """Builds the mesh from ``{data, fsdp, tensor}`` sizes; one size may be -1 (the rest)."""
  sizes = [mesh_config[name] for name in MESH_AXES]
  num_devices = jax.device_count()
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh={dict(zip(MESH_AXES, sizes))}: at most one axis may be -1.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh={dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} devices.")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(
        f"mesh={dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
        f"but {num_devices} are present; set mesh sizes whose product is {num_devices}.")
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))


def batch_parallelism(mesh):
  """How many ways a global batch is split (the data × fsdp devices)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def logical_rules(rules_config):
  """Config rules ``{logical: mesh axis or None}`` as the tuple flax expects."""
  return tuple((name, axis) for name, axis in rules_config.items())


def activation_rules(rules):
  """A context in which the models' activation constraints (``layers.constrain``) apply: rows
  over data x fsdp, heads and the MLP's hidden units over the mesh axes the parameter ``rules``
  give the ``heads`` and ``mlp`` weights; length and hidden size whole (fsdp shards rows, not
  the hidden size of activations). Use it inside ``jax.set_mesh``."""
  weights = dict(rules)
  activations = (
      (layers.BATCH, BATCH_AXES),
      (layers.LENGTH, None),
      (layers.EMBED, None),
      (layers.HEADS, weights.get("heads")),
      (layers.MLP_HIDDEN, weights.get("mlp")),
  )
  return nnx.logical_axis_rules(tuple(rules) + activations)


def state_shardings(abstract_state, mesh, rules):
  """NamedShardings for every leaf of a pytree holding nnx Variables (params, optimizer state).

  Leaves without axis names (step counters, optimizer counts) are replicated.
  """
  specs = nnx.get_partition_spec(abstract_state)
  return linen.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh):
  """Rows over data × fsdp, everything else whole."""
  return jax.NamedSharding(mesh, jax.P(BATCH_AXES))


def global_batch(local_batch, mesh):
  """Assembles each process's rows (a dict of numpy arrays) into global jax Arrays."""
  sharding = batch_sharding(mesh)
  return {
      name: jax.make_array_from_process_local_data(sharding, rows)
      for name, rows in local_batch.items()
  }


def per_device_bytes(tree):
  """``{device: bytes}`` that the jax Arrays of ``tree`` hold on each of this process's devices:
  a replicated array counts once per device, a sharded one only its shard there."""
  held = collections.Counter()
  for array in jax.tree.leaves(tree):
    for shard in array.addressable_shards:
      held[shard.device] += shard.data.nbytes
  return dict(held)
