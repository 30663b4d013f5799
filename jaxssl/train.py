"""``run(config, workdir)``: corpus → tokenizer → batches → sharded state → train loop.

Every check a user's input can fail runs before anything is written to the workdir.
"""

import dataclasses
import json
import os
import shutil
import signal
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxssl import checkpoint
from jaxssl import families
from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl import sharding
from jaxssl import steps
from jaxssl.data import corpora
from jaxssl.data import pretrained_tokenizers
from jaxssl.data import pretraining
from jaxssl.data import tokenizer as tokenizer_lib

# Fields that fix what a workdir's checkpoints and tokenizer mean: resuming with any other
# value would silently train a different run.
RUN_IDENTITY_FIELDS = ("objective", "init_from", "seed", "dataset", "text_key", "train_split",
                       "vocab_size", "tokenizer", "max_seq_length", "max_predictions_per_seq",
                       "short_seq_prob", "mask_prob", "nsp", "model", "batch_size")
TOKENIZER_FILE = tokenizer_lib.MODEL_FILE
# A run started from a checkpoint (init_from) records the checkpoint's model config here.
MODEL_CONFIG_FILE = "model_config.json"
# Model config fields a run's config.model may set on a checkpoint: they change no shapes.
INIT_OVERRIDES = ("dtype", "param_dtype", "dropout_rate", "attention_dropout_rate", "remat",
                  "scan_layers", "attention_implementation")


def check_config(config, family, mesh):
  """Input errors detectable from the config alone, each as one line naming the fix."""
  max_position = family.model_config.max_position
  if config.max_seq_length > max_position:
    raise ValueError(f"max_seq_length={config.max_seq_length} exceeds the position table "
                     f"(model.max_position={max_position}); lower it or raise model.max_position.")
  family.check()
  model, backend = family.model_config, jax.default_backend()
  if model.attention_implementation == "cudnn" and (backend != "gpu" or
                                                    model.dtype not in ("bfloat16", "float16")):
    raise ValueError(f"model.attention_implementation='cudnn' needs an NVIDIA GPU and model.dtype "
                     f"bfloat16 or float16 (this run: {backend}, {model.dtype}); use 'xla'.")
  if not config.get("init_from") and config.vocab_size <= len(tokenizer_lib.SPECIAL_TOKENS):
    raise ValueError(f"vocab_size={config.vocab_size} leaves no room beside the special tokens.")
  parallel = sharding.batch_parallelism(mesh)
  if config.batch_size % parallel or config.batch_size % jax.process_count():
    raise ValueError(
        f"batch_size={config.batch_size} is not divisible by the {parallel} data-parallel "
        f"devices (mesh data x fsdp) and {jax.process_count()} processes; use a multiple.")
  micro_batches = config.grad_accumulation_steps
  if micro_batches < 1 or config.batch_size % (micro_batches * parallel):
    raise ValueError(
        f"grad_accumulation_steps={micro_batches} must be at least 1 and divide batch_size="
        f"{config.batch_size} into micro-batches that split evenly over the {parallel} "
        f"data-parallel devices; use a divisor of {config.batch_size // parallel}.")


def check_workdir(config, workdir):
  """A workdir holding another run's config must not be resumed with this one."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    previous = json.load(f)
  current = json.loads(config.to_json())
  for field in RUN_IDENTITY_FIELDS:
    if previous.get(field) != current.get(field):
      raise ValueError(
          f"workdir {workdir} holds an incompatible run ({field}={previous.get(field)!r}, "
          f"this config has {current.get(field)!r}); use a new --workdir or that config.")


def load_init(config):
  """The checkpoint ``config.init_from`` names (``jaxssl.pretrained``), or None if it is ""."""
  if not config.get("init_from"):
    return None
  objective = pretrained.objective_of(config.init_from)
  if objective != config.objective:
    raise ValueError(f"init_from={config.init_from!r} holds a {objective.upper()} model but "
                     f"objective={config.objective!r}; start a {objective} run from it.")
  known = {
      field.name for field in dataclasses.fields(families.FAMILIES[objective].model_config_class)
  }
  overrides = {
      field: config.model[field]
      for field in INIT_OVERRIDES
      if field in config.model and field in known
  }
  return pretrained.load(config.init_from, **overrides)


def with_checkpoint_params(params, init):
  """``params`` (sharded, freshly initialised) with every tensor ``init`` holds in its place:
  all of a GPT, the encoder of a BERT (its pretraining heads stay as initialised)."""
  prefix = ("encoder",) if init.objective == "bert" else ()
  loaded = {
      prefix + path: variable.get_value()
      for path, variable in nnx.to_flat_state(nnx.state(init.model, nnx.Param))
  }
  placed_paths = set()

  def take(path, leaf):
    # The path to a Param's array ends in its attribute .value, which nnx paths leave out.
    key = tuple(entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey))
    if key not in loaded:
      return leaf
    placed_paths.add(key)
    value = np.asarray(loaded[key], leaf.dtype)
    return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

  params = jax.tree_util.tree_map_with_path(take, params)
  missing = sorted(set(loaded) - placed_paths)
  if missing:  # the model built from init's own config must have a place for all of it
    raise ValueError(f"init_from={init.name!r}: {'.'.join(map(str, missing[0]))} has no place in "
                     f"the {init.objective.upper()} being trained.")
  return params


def load_tokenizer(config, workdir, train_texts, scratch_dir):
  """The workdir's tokenizer on resume, else ``config.tokenizer``, else one trained now (into
  ``scratch_dir``: it moves into the workdir only once every check has passed)."""
  path = os.path.join(workdir, TOKENIZER_FILE)
  if not os.path.exists(path):
    path = config.tokenizer
  if not path:
    path = os.path.join(scratch_dir, TOKENIZER_FILE)
    if jax.process_index() == 0:
      sentences = (s for text in train_texts for s in pretraining.split_sentences(text))
      tokenizer_lib.train_tokenizer(sentences, config.vocab_size, path)
    if jax.process_count() > 1:
      copy_from_process_zero(path)
  tokenizer = tokenizer_lib.Tokenizer.load(path)
  if tokenizer.vocab_size != config.vocab_size:
    raise ValueError(
        f"tokenizer {path} has {tokenizer.vocab_size} tokens but the "
        f"model embeds vocab_size={config.vocab_size}; set vocab_size={tokenizer.vocab_size}.")
  return tokenizer


def copy_from_process_zero(path):
  """Gives every process process 0's file: SentencePiece training is not reproducible across
  machines, and hosts need not share a file system."""
  data = np.fromfile(path, np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
  data = multihost_utils.broadcast_one_to_all(data if data.size else np.zeros(size, np.uint8))
  np.asarray(data, np.uint8).tofile(path)


class StopSignal:
  """Turns SIGTERM into a request to checkpoint and stop (all hosts agree on the step)."""

  def __init__(self):
    self.requested = False
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self, step):
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


def state_structure(family, optimizer, seed):
  """(graphdef, init_state, abstract_state) of a run, with nothing materialised.

  ``init_state()`` creates a fresh TrainState (jit it with out_shardings to shard it);
  ``abstract_state`` is its tree of ShapeDtypeStructs.
  """

  def fresh_state(params):
    return steps.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  def init_state():
    return fresh_state(nnx.state(family.make_model(nnx.Rngs(seed)), nnx.Param))

  # One abstract trace of the model (a 30-layer one takes seconds to trace), not one per output.
  model = nnx.eval_shape(lambda: family.make_model(nnx.Rngs(seed)))
  abstract_state = jax.eval_shape(fresh_state, nnx.state(model, nnx.Param))
  return nnx.graphdef(model), init_state, abstract_state


def placed(abstract_state, shardings):
  """``abstract_state`` with each leaf's sharding set: the restore target of a checkpoint."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)


def load_run_config(workdir):
  """The config of the run in ``workdir``, read without touching its checkpoints."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(
        f"workdir {workdir} holds no run (no config.json); train one with jaxssl.main.")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir):
  """A finished or running workdir's (config, family, tokenizer, graphdef, params) on one device."""
  config = load_run_config(workdir)
  family = families.family(config, workdir_model_config(config, workdir))
  checkpointer = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  step = checkpointer.latest_step()
  if step is None:
    raise ValueError(f"workdir {workdir} has no checkpoint yet; let its training save one.")
  optimizer, _ = steps.make_optimizer(config)
  graphdef, _, abstract_state = state_structure(family, optimizer, config.seed)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state, _ = checkpointer.restore(
      step, placed(abstract_state, jax.tree.map(lambda _: device, abstract_state)))
  checkpointer.close()
  return config, family, load_workdir_tokenizer(workdir), graphdef, state.params


def load_decoder(workdir=None, init_from=None):
  """(description, graphdef, params, tokenizer, data_dir) of the GPT trained in ``workdir`` or
  of the published decoder ``init_from`` names (see ``jaxssl.pretrained``): exactly one."""
  if (workdir is None) == (init_from is None):
    raise ValueError("pass exactly one of workdir (a GPT pretraining run) and init_from "
                     f"(a published decoder such as 'smollm2'); got {workdir=}, {init_from=}.")
  if init_from is not None:
    loaded = pretrained.load(init_from)
    if loaded.objective != "gpt":
      raise ValueError(f"init_from={init_from!r} is a {loaded.objective.upper()} encoder; "
                       "this needs a decoder such as 'smollm2'.")
    graphdef, params = nnx.split(loaded.model)
    return f"{init_from} ({os.path.basename(loaded.path)})", graphdef, params, loaded.tokenizer, None
  config, _, tokenizer, graphdef, params = load_trained(workdir)
  if config.objective != "gpt":
    raise ValueError(f"workdir {workdir} holds a {config.objective!r} run; this needs a GPT.")
  description = f"jaxssl GPT {config.model.size} ({os.path.basename(os.path.abspath(workdir))})"
  return description, graphdef, params, tokenizer, config.get("data_dir")


def load_workdir_tokenizer(workdir):
  """The tokenizer a run saved in ``workdir``: SentencePiece, or a checkpoint's (init_from)."""
  if os.path.exists(os.path.join(workdir, "special_tokens.json")):
    return pretrained_tokenizers.ByteLevelBPETokenizer.load(workdir)
  if os.path.exists(os.path.join(workdir, "tokenizer.json")):
    return pretrained_tokenizers.WordPieceTokenizer.load(workdir)
  return tokenizer_lib.Tokenizer.load(os.path.join(workdir, TOKENIZER_FILE))


def tokenizer_files(workdir):
  """The paths of the tokenizer files a run saved in ``workdir``."""
  names = (TOKENIZER_FILE, "tokenizer.json", "special_tokens.json")
  return [
      os.path.join(workdir, name) for name in names if os.path.exists(os.path.join(workdir, name))
  ]


def workdir_model_config(config, workdir):
  """The model config of the run in ``workdir``: the checkpoint's one it recorded, if any."""
  if not config.get("init_from"):
    return None
  with open(os.path.join(workdir, MODEL_CONFIG_FILE), encoding="utf-8") as f:
    fields = json.load(f)
  return families.FAMILIES[config.objective].model_config_class(**fields)


def run(config, workdir):
  """Pretrains per ``config`` in ``workdir``, resuming from its latest checkpoint if any.

  Returns the last evaluation's metrics.
  """
  # --- Checks that need no data: config, mesh, workdir (and the checkpoint init_from names).
  init = load_init(config)
  family = families.family(config, init and init.model.cfg)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.logical_axis_rules)
  check_config(config, family, mesh)
  check_workdir(config, workdir)

  # --- Corpus and tokenizer (trained into a scratch dir until every check has passed).
  train_texts = corpora.load_texts(config.dataset, config.train_split, config.data_dir,
                                   config.text_key)
  eval_texts = corpora.load_texts(config.dataset, config.eval_split, config.data_dir,
                                  config.text_key)
  scratch_dir = tempfile.mkdtemp(prefix="jaxssl_")
  try:
    tokenizer = init.tokenizer if init else load_tokenizer(config, workdir, train_texts,
                                                           scratch_dir)
    train_documents = pretraining.tokenize_documents(tokenizer, train_texts)
    eval_documents = pretraining.tokenize_documents(tokenizer, eval_texts)
    processes = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_batches, eval_batches = family.batches(tokenizer, train_documents, eval_documents,
                                                 processes)

    # --- Every check passed: the workdir is written from here on.
    os.makedirs(workdir, exist_ok=True)
    if not os.path.exists(os.path.join(workdir, "config.json")) and jax.process_index() == 0:
      tokenizer.save(workdir)
      if init:
        with open(os.path.join(workdir, MODEL_CONFIG_FILE), "w", encoding="utf-8") as f:
          json.dump(dataclasses.asdict(init.model.cfg), f, indent=2)
  finally:
    shutil.rmtree(scratch_dir, ignore_errors=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=2))
  baseline = family.baseline(eval_batches, train_documents, tokenizer)

  # --- Sharded state, built in place on the mesh (never whole on one device).
  optimizer, schedule = steps.make_optimizer(config)

  graphdef, init_state, abstract_state = state_structure(family, optimizer, config.seed)
  state_sharding = sharding.state_shardings(abstract_state, mesh, rules)
  replicated = jax.NamedSharding(mesh, jax.P())
  train_step, eval_step = family.steps(graphdef, optimizer, tokenizer)
  train_step = jax.jit(train_step, out_shardings=(state_sharding, replicated), donate_argnums=0)
  eval_step = jax.jit(eval_step, out_shardings=replicated)

  checkpointer = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  start_step = checkpointer.latest_step()
  with jax.set_mesh(mesh):
    if start_step is None:
      start_step = 0
      state = jax.jit(init_state, out_shardings=state_sharding)()
      if init:
        state = state.replace(params=with_checkpoint_params(state.params, init))
    else:
      state, data_position = checkpointer.restore(start_step, placed(abstract_state,
                                                                     state_sharding))
      train_batches.restore(data_position)
  rng = jax.random.key(config.seed)
  eval_rng = jax.random.key(config.seed + 1)

  def evaluate():
    totals = None
    with jax.set_mesh(mesh):
      for index, batch in enumerate(eval_batches):
        sums = eval_step(state.params, sharding.global_batch(batch, mesh),
                         jax.random.fold_in(eval_rng, index))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return {**steps.summarize(totals), **baseline}

  # --- Train loop.
  writer = metrics_lib.MetricWriter(workdir, start_step)
  stop = StopSignal()
  tokens_per_step = config.batch_size * config.max_seq_length
  step = start_step
  eval_metrics = {}
  progress = tqdm(
      total=config.num_train_steps,
      initial=start_step,
      desc=f"{config.objective} pretrain",
      disable=jax.process_index() != 0,
      dynamic_ncols=True)
  window_sums, window_steps, window_start = None, 0, time.perf_counter()
  with jax.set_mesh(mesh):
    while step < config.num_train_steps:
      batch = sharding.global_batch(next(train_batches), mesh)
      state, sums = train_step(state, batch, rng)
      step += 1
      window_sums = sums if window_sums is None else jax.tree.map(jnp.add, window_sums, sums)
      window_steps += 1
      progress.update(1)
      if step % config.log_every == 0 or step == config.num_train_steps:
        train_metrics = steps.summarize(jax.device_get(window_sums), window_steps)
        elapsed = time.perf_counter() - window_start
        train_metrics["tokens_per_second"] = window_steps * tokens_per_step / elapsed
        train_metrics["learning_rate"] = float(schedule(step))
        writer.write(step, "train", train_metrics)
        progress.set_postfix(
            loss=f"{train_metrics[family.progress_metric]:.3f}",
            tok_s=f"{train_metrics['tokens_per_second']:.0f}")
        window_sums, window_steps, window_start = None, 0, time.perf_counter()
      if step % config.eval_every == 0 or step == config.num_train_steps:
        eval_metrics = evaluate()
        writer.write(step, "eval", eval_metrics)
      stopping = stop.should_stop(step)
      if step % config.checkpoint_every == 0 or step == config.num_train_steps or stopping:
        checkpointer.save(step, state, train_batches.state())
      if stopping:
        break
  if not eval_metrics and step >= config.num_train_steps:  # resumed a finished run
    eval_metrics = evaluate()
  progress.close()
  checkpointer.close()
  writer.close()

  if step < config.num_train_steps:
    print(f"Stopped by SIGTERM at step {step}; checkpoint saved. Rerun the same command to resume.")
  elif eval_metrics and jax.process_index() == 0:
    print(f"Done: {step} steps. {family.summary(eval_metrics)}. Metrics: {workdir}/metrics.jsonl")
  return eval_metrics
