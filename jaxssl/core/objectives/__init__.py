"""Pretraining objectives, one module each, and ``get``: the one for a config.

An objective (``bert.Objective``, ``electra.Objective``, ``gpt.Objective``) owns what differs between pretraining
runs: the model it builds, its batches, its train and eval steps, the metrics those steps sum,
the baseline a run is judged against and the line that summarises it. ``core.pretrain.run`` is
the same for all of them; adding an objective is a module here and an entry in OBJECTIVES.
"""

from jaxssl.core.objectives import bert
from jaxssl.core.objectives import electra
from jaxssl.core.objectives import gpt

OBJECTIVES = {"bert": bert.Objective, "electra": electra.Objective, "gpt": gpt.Objective}


def get(config, model_config=None):
  """The objective ``config.objective`` names; ``model_config`` (a checkpoint's, see
  ``init_from``) replaces the one ``config.model`` describes."""
  if config.objective not in OBJECTIVES:
    raise ValueError(
        f"objective={config.objective!r} is not supported; use one of {sorted(OBJECTIVES)}.")
  return OBJECTIVES[config.objective](config, model_config)
