"""What every objective's steps share: the train state, the optimizer and the pure
``train_step(state, batch, rng) -> (state, sums)`` built from a loss function.

State and batches are plain pytrees; objectives rebuild their model from its graph definition
inside the loss (``nnx.merge``), so nothing here holds mutable state.
"""

import math
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxssl.core import rng as rng_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # () int32, number of updates applied
  params: Any  # nnx.State of the model's Params
  opt_state: Any  # optax state mirroring ``params``


# The shape of the learning rate after warm-up, from the peak to ``final_lr_fraction`` of it.
DECAYS = {
    "linear": lambda peak, steps, final: optax.linear_schedule(peak, peak * final, steps),
    "cosine": lambda peak, steps, final: optax.cosine_decay_schedule(peak, steps, alpha=final),
}


def make_optimizer(config):
  """AdamW with linear warm-up (``warmup_steps``, or ``warmup_ratio`` of the steps when > 0)
  then ``lr_decay`` (BERT's: linear) to ``final_lr_fraction`` of the peak, and global-norm
  clipping. Configs of workdirs written before ``lr_decay``/``warmup_ratio`` existed, and
  benchmark namespaces without them, get linear decay and ``warmup_steps``.

  Weight decay skips biases and LayerNorm parameters: exactly the parameters with one axis.
  ``layer_lr_decay`` < 1 (if the config has it) scales each parameter's update by
  ``layer_scales``: the lower the layer, the smaller its learning rate.
  """
  warmup_ratio = getattr(config, "warmup_ratio", 0.0)
  # Rounded up, as transformers' TrainingArguments.get_warmup_steps does, so the peer benchmark's
  # two schedules are the same (64 steps at 0.1: 7 warm-up steps in both).
  warmup = math.ceil(warmup_ratio * config.num_train_steps) if warmup_ratio else config.warmup_steps
  decay = DECAYS[getattr(config, "lr_decay", "linear")]
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, config.learning_rate, warmup),
      decay(config.learning_rate, max(config.num_train_steps - warmup, 1),
            config.final_lr_fraction),
  ],
                                  boundaries=[warmup])
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  layer_lr_decay = getattr(config, "layer_lr_decay", 1.0)
  by_layer = [] if layer_lr_decay == 1.0 else [
      optax.stateless(lambda updates, params: jax.tree.map(jnp.multiply, updates,
                                                           layer_scales(updates, layer_lr_decay)))
  ]
  return optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(
          schedule,
          b1=config.adam_b1,
          b2=config.adam_b2,
          eps=config.adam_eps,
          weight_decay=config.weight_decay,
          mask=decay_mask),
      *by_layer,
  ), schedule


EMBEDDINGS = ("token_embed", "position_embed", "segment_embed", "embed_norm")


def layer_scales(params, decay):
  """Layer-wise learning-rate decay (ELECTRA's): a tree like ``params`` of ``decay ** (N + 1 -
  depth)``, with depth 0 for the embeddings (``EMBEDDINGS``), i + 1 for transformer block i of
  N (``blocks``), and N + 1, so scale 1, for everything else (heads, pooler)."""
  names = lambda path: [
      getattr(key, "key", getattr(key, "idx", getattr(key, "name", None))) for key in path
  ]
  blocks = [names(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  num_layers = 1 + max((n[n.index("blocks") + 1] for n in blocks if "blocks" in n), default=-1)

  def scale(path, _):
    n = names(path)
    if "blocks" in n:
      depth = n[n.index("blocks") + 1] + 1
    elif any(name in EMBEDDINGS for name in n):
      depth = 0
    else:
      depth = num_layers + 1
    return decay**(num_layers + 1 - depth)

  return jax.tree_util.tree_map_with_path(scale, params)


def make_train_step(loss_fn, optimizer, accumulation_steps=1, prepare=None):
  """Returns ``train_step(state, batch, rng) -> (state, metric sums)`` for any objective.

  ``loss_fn(params, batch, rng) -> (loss, sums)``. ``rng`` is the run's base key: each step
  folds in its step number, so masks, dropout and hence a resumed run are fixed by
  (seed, step) alone. ``prepare(batch, rng) -> (batch, rng)``, if given, first does the work
  that must see the whole batch (BERT's masking, the loss normalisers).

  With ``accumulation_steps`` k > 1 the batch is cut into k micro-batches whose gradients and
  sums are added up before one update, so only a micro-batch's activations are alive at a
  time. The update is the whole batch's when ``loss_fn`` adds up over rows (as the
  pretraining losses do: their weights are normalised over the whole batch in ``prepare``);
  only dropout masks differ, being drawn per micro-batch.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def gradients(params, batch, rng):
    if accumulation_steps == 1:
      return grad_fn(params, batch, rng)
    micro_batches = jax.tree.map(lambda rows: micro_batch_rows(rows, accumulation_steps), batch)

    def accumulate(totals, inputs):
      micro_batch, index = inputs
      grads_and_sums = grad_fn(params, micro_batch, jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, totals, grads_and_sums), None

    first = jax.tree.map(lambda rows: rows[0], micro_batches)
    zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype),
                         jax.eval_shape(grad_fn, params, first, rng))
    totals, _ = jax.lax.scan(accumulate, zeros, (micro_batches, jnp.arange(accumulation_steps)))
    return totals

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    if prepare is not None:
      batch, rng = prepare(batch, rng)
    grads, sums = gradients(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    sums["grad_norm"] = optax.tree.norm(grads)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), sums

  return train_step


def micro_batch_rows(rows, count):
  """(B, ...) -> (count, B / count, ...), micro-batch i holding rows i, i + count, ...

  Strided rather than contiguous: a batch sharded over devices by rows keeps every device's
  share of each micro-batch on that device (when count divides the rows per device).
  """
  return rows.reshape(rows.shape[0] // count, count, *rows.shape[1:]).swapaxes(0, 1)


class Baseline(NamedTuple):
  """What a run is judged against: metrics (logged with every evaluation) and what they are."""
  metrics: dict
  description: str


def with_grad_norm(metrics, sums, num_steps):
  """``metrics`` plus the mean ``grad_norm`` over ``num_steps`` steps, when the sums hold one."""
  if "grad_norm" in sums:
    metrics["grad_norm"] = float(sums["grad_norm"]) / num_steps
  return metrics


def fresh_state(params, optimizer):
  """The TrainState before the first update: step 0, ``params``, the optimizer's initial state."""
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def state_structure(objective, optimizer, seed):
  """(graphdef, init_state, abstract_state) of a run, with nothing materialised.

  ``init_state()`` creates a fresh TrainState (jit it with out_shardings to shard it), its
  parameters drawn from the run's "params" stream; ``abstract_state`` is its tree of
  ShapeDtypeStructs.
  """

  def make_model():
    return objective.make_model(nnx.Rngs(params=rng_lib.run_key(seed, "params")))

  def init_state():
    return fresh_state(nnx.state(make_model(), nnx.Param), optimizer)

  # One abstract trace of the model (a 30-layer one takes seconds to trace), not one per output.
  model = nnx.eval_shape(make_model)
  abstract_state = jax.eval_shape(lambda params: fresh_state(params, optimizer),
                                  nnx.state(model, nnx.Param))
  return nnx.graphdef(model), init_state, abstract_state


def placed(abstract_state, shardings):
  """``abstract_state`` with each leaf's sharding set: the restore target of a checkpoint."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)


def on_one_device(abstract_state):
  """``abstract_state`` placed on the first device: the restore target on one device."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return placed(abstract_state, jax.tree.map(lambda _: device, abstract_state))
