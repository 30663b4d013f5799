"""Models trained by jaxssl pretraining runs, loaded back from their workdirs onto one device
(for generation, prompting, export, fine-tuning and the analyses)."""

import os

from flax import nnx

from jaxssl import pretrained
from jaxssl import workdir as workdir_lib
from jaxssl.core import objectives
from jaxssl.core import steps


def run_objective(config, workdir):
  """The objective of the pretraining run in ``workdir``, with the model config it recorded
  (a checkpoint's, when the run started from one)."""
  if config.get("objective") not in objectives.OBJECTIVES:
    raise ValueError(f"workdir {workdir} holds a {config.get('objective')!r} run, not a "
                     f"pretraining run ({sorted(objectives.OBJECTIVES)}).")
  model_class = objectives.OBJECTIVES[config.objective].model_config_class
  return objectives.get(config, workdir_lib.read_model_config(workdir, model_class))


def restore_on_one_device(workdir, abstract_state, step=None):
  """(step, state) of checkpoint ``step`` in ``workdir`` (None: the newest readable one), on
  one device; read only, so a run still writing there is not disturbed."""
  checkpointer = workdir_lib.checkpointer(workdir, read_only=True)
  try:
    if step is None:
      step, state, _ = checkpointer.restore_latest(steps.on_one_device(abstract_state))
    else:
      state, _ = checkpointer.restore(step, steps.on_one_device(abstract_state))
  finally:
    checkpointer.close()
  if step is None:
    raise ValueError(f"workdir {workdir} has no checkpoint yet; rerun its training command to "
                     "resume it until it saves one.")
  return step, state


def load_trained(workdir):
  """A pretraining workdir's (config, objective, tokenizer, graphdef, params) on one device,
  from its latest checkpoint."""
  config = workdir_lib.read_config(workdir)
  objective = run_objective(config, workdir)
  optimizer, _ = steps.make_optimizer(config)
  graphdef, _, abstract_state = steps.state_structure(objective, optimizer, config.seed)
  _, state = restore_on_one_device(workdir, abstract_state)
  return config, objective, workdir_lib.load_tokenizer(workdir), graphdef, state.params


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
