"""``run(config, workdir)``: corpus → tokenizer → batches → sharded state → the train loop.

What differs between BERT and GPT is the objective's (``jaxssl.core.objectives``); the loop is
``jaxssl.core.trainer``'s. Every check a user's input can fail runs before anything is written
to the workdir.
"""

import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jaxssl import metrics as metrics_lib
from jaxssl import pretrained
from jaxssl import sharding
from jaxssl import workdir as workdir_lib
from jaxssl.core import flops
from jaxssl.core import objectives
from jaxssl.core import probes
from jaxssl.core import rng as rng_lib
from jaxssl.core import steps
from jaxssl.core import trainer
from jaxssl.core import validation
from jaxssl.data import corpora
from jaxssl.data import prepared
from jaxssl.data import pretraining
from jaxssl.data import sources
from jaxssl.data import tokenizer as tokenizer_lib

# Fields that fix what a workdir's checkpoints and tokenizer mean: resuming with any other
# value would silently train a different run.
RUN_IDENTITY_FIELDS = ("objective", "init_from", "seed", "dataset", "text_key", "txt_documents",
                       "window_documents", "train_split", "vocab_size", "tokenizer",
                       "max_seq_length", "max_predictions_per_seq", "short_seq_prob", "mask_prob",
                       "nsp", "model", "batch_size", "generator_size")
# Model config fields a run's config.model may set on a checkpoint: they change no shapes.
INIT_OVERRIDES = ("dtype", "param_dtype", "dropout_rate", "attention_dropout_rate", "remat",
                  "scan_layers", "attention_implementation")


def probe_tasks(config):
  """The tasks of ``config.probe_tasks`` ('sentiment,pos'; absent or '': none)."""
  return [task for task in config.get("probe_tasks", "").split(",") if task]


def check_config(config, objective, mesh):
  """Input errors detectable from the config alone, each as one line naming the fix."""
  max_position = objective.model_config.max_position
  if config.max_seq_length > max_position:
    raise ValueError(f"max_seq_length={config.max_seq_length} exceeds the position table "
                     f"(model.max_position={max_position}); lower it or raise model.max_position.")
  objective.check()
  model, backend = objective.model_config, jax.default_backend()
  if model.attention_implementation == "cudnn" and (backend != "gpu" or
                                                    model.dtype not in ("bfloat16", "float16")):
    raise ValueError(f"model.attention_implementation='cudnn' needs an NVIDIA GPU and model.dtype "
                     f"bfloat16 or float16 (this run: {backend}, {model.dtype}); use 'xla'.")
  if probe_tasks(config):
    probes.check_tasks(probe_tasks(config))
    if not hasattr(objective, "encoder_outputs"):
      raise ValueError(f"probe_tasks={config.probe_tasks!r}: the {objective.name} objective has no "
                       "encoder to probe; set probe_tasks=''.")
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


def load_init(config):
  """The checkpoint ``config.init_from`` names (``jaxssl.pretrained``), or None if it is ""."""
  if not config.get("init_from"):
    return None
  objective = pretrained.objective_of(config.init_from)
  if objective != config.objective:
    raise ValueError(f"init_from={config.init_from!r} holds a {objective.upper()} model but "
                     f"objective={config.objective!r}; start a {objective} run from it.")
  known = {
      field.name
      for field in dataclasses.fields(objectives.OBJECTIVES[objective].model_config_class)
  }
  overrides = {
      field: config.model[field]
      for field in INIT_OVERRIDES
      if field in config.model and field in known
  }
  return pretrained.load(config.init_from, **overrides)


def with_checkpoint_params(params, init, prefix):
  """``params`` (sharded, freshly initialised) with every tensor ``init`` holds in its place,
  under ``prefix`` (the objective's: a BERT's pretraining heads stay as initialised)."""
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
  """The workdir's tokenizer on resume, else ``config.tokenizer``, else one trained now on
  ``train_texts()`` (into ``scratch_dir``: it moves into the workdir only once every check has
  passed)."""
  path = workdir_lib.path(workdir, tokenizer_lib.MODEL_FILE)
  if not os.path.exists(path):
    path = config.tokenizer
  if not path:
    path = os.path.join(scratch_dir, tokenizer_lib.MODEL_FILE)
    if jax.process_index() == 0:
      sentences = (s for text in train_texts() for s in pretraining.split_sentences(text))
      tokenizer_lib.train_tokenizer(sentences, config.vocab_size, path)
    if jax.process_count() > 1:
      copy_from_process_zero(path)
  tokenizer = tokenizer_lib.Tokenizer.load(path)
  if tokenizer.vocab_size != config.vocab_size:
    raise ValueError(
        f"tokenizer {path} has {tokenizer.vocab_size} tokens but the "
        f"model embeds vocab_size={config.vocab_size}; set vocab_size={tokenizer.vocab_size}.")
  return tokenizer


def split_texts(config, split):
  """The texts of ``split`` of the corpus ``config`` names (``corpora.load_texts``)."""
  return corpora.load_texts(config.dataset, split, config.data_dir, config.text_key,
                            config.txt_documents)


def prepared_documents(config, split, tokenizer, texts):
  """``split``'s documents → sentences → token ids, tokenized once per corpus and tokenizer
  into ``config.prepared_dir`` (``jaxssl.data.prepared``); ``texts()`` is read only then."""
  identity = prepared.source_identity(
      config.dataset, split, config.text_key, config.txt_documents,
      lambda: corpora.dataset_version(config.dataset, config.data_dir))
  return prepared.documents(config.prepared_dir or prepared.default_root(), identity, tokenizer,
                            texts, f"{config.dataset} {split}")


def data_positions(train_batches):
  """What the checkpoint records of the input: this run's position in its stream, or with
  several processes every process's (each reads its own documents, so they differ)."""
  position = train_batches.state()
  if jax.process_count() == 1:
    return position
  keys = sorted(position)
  rows = multihost_utils.process_allgather(np.asarray([position[key] for key in keys], np.int64))
  return {"processes": [dict(zip(keys, map(int, row))) for row in rows]}


def own_position(data_positions):
  """This process's position in what ``data_positions`` recorded."""
  if "processes" not in data_positions:
    return data_positions
  recorded = data_positions["processes"]
  if len(recorded) != jax.process_count():
    raise ValueError(f"the checkpoint was written by {len(recorded)} processes and this run has "
                     f"{jax.process_count()}; resume with {len(recorded)} processes.")
  return recorded[jax.process_index()]


def copy_from_process_zero(path):
  """Gives every process process 0's file: SentencePiece training is not reproducible across
  machines, and hosts need not share a file system."""
  data = np.fromfile(path, np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
  data = multihost_utils.broadcast_one_to_all(data if data.size else np.zeros(size, np.uint8))
  np.asarray(data, np.uint8).tofile(path)


def run(config, workdir):
  """Pretrains per ``config`` in ``workdir``, resuming from its latest checkpoint if any.

  Returns the last evaluation's metrics.
  """
  # --- Checks that need no data: config, mesh, workdir (and the checkpoint init_from names).
  validation.check_fields(config)
  workdir_lib.check_writable(workdir)
  init = load_init(config)
  objective = objectives.get(config, init and init.model.cfg)
  mesh = sharding.make_mesh(config.mesh)
  check_config(config, objective, mesh)
  workdir_lib.check_compatible(workdir, config, RUN_IDENTITY_FIELDS)

  # --- Corpus and tokenizer (trained into a scratch dir until every check has passed).
  texts = {
      split: functools.cache(functools.partial(split_texts, config, split))
      for split in (config.train_split, config.eval_split)
  }
  scratch_dir = tempfile.mkdtemp(prefix="jaxssl_")
  try:
    tokenizer = init.tokenizer if init else load_tokenizer(config, workdir,
                                                           texts[config.train_split], scratch_dir)
    train_documents, eval_documents = (
        prepared_documents(config, split, tokenizer, texts[split])
        for split in (config.train_split, config.eval_split))
    for read in texts.values():  # training streams the prepared shards: the text can go
      read.cache_clear()
    sources.clear_cache()
    processes = dict(process_index=jax.process_index(), process_count=jax.process_count())
    batches = objective.batches(tokenizer, train_documents, eval_documents, processes)

    # --- Every check passed: the workdir is written from here on, by one run at a time.
    held = workdir_lib.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with held:
      if not workdir_lib.has_config(workdir) and jax.process_index() == 0:
        tokenizer.save(workdir)
        if init:
          workdir_lib.write_model_config(workdir, init.model.cfg)
      if jax.process_index() == 0:
        workdir_lib.write_config(workdir, config)
      baseline = objective.baseline(batches[1], train_documents, tokenizer)
      prober = probes.Prober(
          probe_tasks(config), tokenizer, config.max_seq_length, config.data_dir, config.batch_size,
          mesh) if probe_tasks(config) else None
      return train(config, workdir, objective, init, tokenizer, batches, baseline, mesh, prober)
  finally:
    shutil.rmtree(scratch_dir, ignore_errors=True)


def peak_flops(config):
  """All devices' peak FLOP/s, that logged MFU divides model FLOP/s by: config's
  peak_flops_per_chip, else the chip's datasheet bf16 rate (``flops.PEAK_BF16_FLOPS``) when the
  model computes in bfloat16; None (no MFU logged) otherwise."""
  per_chip = config.get("peak_flops_per_chip", 0.0)
  if not per_chip and config.model.dtype == "bfloat16":
    per_chip = flops.peak_flops(jax.devices()[0].device_kind)
  return per_chip * jax.device_count() if per_chip else None


def train(config, workdir, objective, init, tokenizer, batches, baseline, mesh, prober=None):
  """Builds (or restores) the sharded state and runs the train loop, probing its encoder with
  ``prober`` (a ``probes.Prober``) if given; returns the last evaluation's metrics."""
  train_batches, eval_batches = batches
  rules = sharding.logical_rules(config.logical_axis_rules)
  # --- Sharded state, built in place on the mesh (never whole on one device).
  optimizer, schedule = steps.make_optimizer(config)
  graphdef, init_state, abstract_state = steps.state_structure(objective, optimizer, config.seed)
  state_sharding = sharding.state_shardings(abstract_state, mesh, rules)
  replicated = jax.NamedSharding(mesh, jax.P())
  train_step, eval_step = objective.steps(graphdef, optimizer, tokenizer)
  train_step = jax.jit(train_step, out_shardings=(state_sharding, replicated), donate_argnums=0)
  eval_step = jax.jit(eval_step, out_shardings=replicated)
  probe = None
  if prober is not None:
    encode = jax.jit(objective.encoder_outputs(graphdef), out_shardings=replicated)
    probe = lambda state: prober(encode, state.params)

  checkpointer = workdir_lib.checkpointer(workdir, config.keep_checkpoints)
  with jax.set_mesh(mesh), sharding.activation_rules(rules):
    start_step, state, data_position = checkpointer.restore_latest(
        steps.placed(abstract_state, state_sharding))
    if start_step is None:
      start_step = 0
      state = jax.jit(init_state, out_shardings=state_sharding)()
      if init:
        state = state.replace(
            params=with_checkpoint_params(state.params, init, objective.checkpoint_prefix))
    else:
      train_batches.restore(own_position(data_position))
  eval_rng = rng_lib.run_key(config.seed, "eval")

  def evaluate(state):
    totals = None
    for index, batch in enumerate(eval_batches):
      sums = eval_step(state.params, sharding.global_batch(batch, mesh),
                       jax.random.fold_in(eval_rng, index))
      totals = trainer.add_sums(totals, sums)
    return {**objective.summarize(totals), **baseline.metrics}

  flops_per_token = objective.flops_per_token()

  def global_batches():
    while True:
      batch = next(train_batches)
      tokens = objective.real_tokens(batch, tokenizer) * jax.process_count()
      yield sharding.global_batch(batch, mesh), {
          "tokens": tokens,
          "model_flops": tokens * flops_per_token
      }

  def save(step, state, metrics):
    del metrics  # every checkpoint is kept by age
    checkpointer.save(step, state, data_positions(train_batches))

  # --- Train loop.
  writer = metrics_lib.MetricWriter(workdir, start_step)
  try:
    with jax.set_mesh(mesh), sharding.activation_rules(rules):
      state, eval_metrics = trainer.train(
          state,
          train_step=train_step,
          batches=global_batches(),
          rng=rng_lib.run_key(config.seed, "train"),
          start_step=start_step,
          num_steps=config.num_train_steps,
          summarize=objective.summarize,
          evaluate=evaluate,
          save=save,
          writer=writer,
          schedule=schedule,
          log_every=config.log_every,
          eval_every=config.eval_every,
          checkpoint_every=config.checkpoint_every,
          description=f"{config.objective} pretrain",
          progress_metric=objective.progress_metric,
          probe=probe,
          probe_every=config.get("probe_every", 0),
          peak_flops=peak_flops(config),
          profile_steps=validation.profile_steps(config.get("profile_steps", "")),
          profile_dir=os.path.join(workdir, "profile"))
      if not eval_metrics:  # resumed a finished run
        eval_metrics = evaluate(state)
  finally:  # pending checkpoint writes finish even when training stops on an error
    checkpointer.close()
    writer.close()

  if jax.process_index() == 0:
    print(f"Done: {int(state.step)} steps. {objective.summary(eval_metrics, baseline)}. "
          f"Metrics: {workdir}/metrics.jsonl")
    records = metrics_lib.read_metrics(workdir)
    probed = [r for r in records if r["split"] == "probe"]
    if probed:
      probes.plot(records, objective.progress_metric, os.path.join(workdir, "probes.png"))
      print(f"{probes.summary(probed[0], probed[-1])} Plot: {workdir}/probes.png")
  return eval_metrics
