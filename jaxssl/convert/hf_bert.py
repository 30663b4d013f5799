"""Hugging Face BERT checkpoints (``config.json`` + safetensors) as a jaxssl ``BertEncoder``.

Every encoder parameter must come from exactly one checkpoint tensor of the expected shape;
anything else is an error naming the tensor, so no weight is left at its random initialisation
or dropped unnoticed. Only the pretraining heads and the pooler (which ``BertEncoder`` does not
have) are skipped, and they are logged.
"""

import dataclasses
import json
import os

from absl import logging
import jax.numpy as jnp
import numpy as np
from flax import nnx
import safetensors.numpy

from jaxssl.models import bert

# Tensors a BertModel / BertForPreTraining checkpoint holds that BertEncoder has no place for:
# the pooler and the MLM/NSP heads ("cls."), and position_ids, a constant arange buffer.
_IGNORED_PREFIXES = ("pooler.", "cls.")
_IGNORED_NAMES = ("embeddings.position_ids",)

_EMBEDDING_MODULES = {
    "token_embed": "embeddings.word_embeddings",
    "position_embed": "embeddings.position_embeddings",
    "segment_embed": "embeddings.token_type_embeddings",
    "embed_norm": "embeddings.LayerNorm",
}
_BLOCK_MODULES = {
    ("attention", "query"): "attention.self.query",
    ("attention", "key"): "attention.self.key",
    ("attention", "value"): "attention.self.value",
    ("attention", "out"): "attention.output.dense",
    ("attention_norm",): "attention.output.LayerNorm",
    ("mlp", "up"): "intermediate.dense",
    ("mlp", "down"): "output.dense",
    ("mlp_norm",): "output.LayerNorm",
}
_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}


def config_from_hf(hf_config: dict, **overrides) -> bert.BertConfig:
  """The BertConfig of a Hugging Face ``config.json`` (as a dict); ``overrides`` set other fields.

  E.g. ``dtype="bfloat16"`` to compute in bfloat16, or ``dropout_rate=0.0``.
  """
  model_type = hf_config.get("model_type")
  if model_type != "bert":
    raise ValueError(f"config.json model_type={model_type!r} is not supported; "
                     "load_hf_bert reads BERT checkpoints (model_type 'bert').")
  hidden_act = hf_config.get("hidden_act")
  if hidden_act != "gelu":
    raise ValueError(f"config.json hidden_act={hidden_act!r} is not supported; jaxssl's BERT uses "
                     "exact GELU, hidden_act 'gelu'.")
  position_type = hf_config.get("position_embedding_type", "absolute")
  if position_type != "absolute":
    raise ValueError(f"config.json position_embedding_type={position_type!r} is not supported; "
                     "jaxssl's BERT learns absolute position embeddings ('absolute').")
  cfg = bert.BertConfig(
      vocab_size=hf_config["vocab_size"],
      hidden_size=hf_config["hidden_size"],
      num_layers=hf_config["num_hidden_layers"],
      num_heads=hf_config["num_attention_heads"],
      mlp_dim=hf_config["intermediate_size"],
      max_position=hf_config["max_position_embeddings"],
      type_vocab_size=hf_config["type_vocab_size"],
      dropout_rate=hf_config["hidden_dropout_prob"],
      attention_dropout_rate=hf_config["attention_probs_dropout_prob"],
      layer_norm_eps=hf_config["layer_norm_eps"])
  return dataclasses.replace(cfg, **overrides)


def read_tensors(directory: str) -> dict[str, np.ndarray]:
  """The checkpoint's tensors by name: ``model.safetensors``, else ``pytorch_model.bin``."""
  safetensors_path = os.path.join(directory, "model.safetensors")
  if os.path.exists(safetensors_path):
    return safetensors.numpy.load_file(safetensors_path)
  torch_path = os.path.join(directory, "pytorch_model.bin")
  if os.path.exists(torch_path):
    import torch  # Only old checkpoints need it, so it is not a dependency of jaxssl.
    state_dict = torch.load(torch_path, map_location="cpu", weights_only=True)
    return {name: tensor.numpy() for name, tensor in state_dict.items()}
  raise FileNotFoundError(f"{directory!r} holds neither model.safetensors nor pytorch_model.bin; "
                          "point load_hf_bert at a Hugging Face BERT checkpoint directory.")


def encoder_state_from_hf(tensors: dict[str, np.ndarray], cfg: bert.BertConfig) -> nnx.State:
  """BertEncoder(cfg)'s parameters from Hugging Face BertModel tensors (``bert.`` prefix or not).

  Linear weights are transposed from PyTorch's (out, in) to (in, out) and every tensor is cast
  to ``cfg.param_dtype``; nothing else changes.
  """
  tensors = {name.removeprefix("bert."): value for name, value in tensors.items()}
  abstract_model = nnx.eval_shape(lambda: bert.BertEncoder(cfg, nnx.Rngs(0)))
  state = nnx.state(abstract_model)
  used = set()
  for path, variable in nnx.to_flat_state(state):
    name = _hf_name(path)
    if name not in tensors:
      raise ValueError(f"checkpoint has no tensor {name!r} (for {'.'.join(map(str, path))}); "
                       "is it a BERT checkpoint with the layers config.json describes?")
    is_kernel = path[-1] == "kernel"
    expected = variable.get_value().shape[::-1] if is_kernel else variable.get_value().shape
    if tensors[name].shape != expected:
      raise ValueError(f"checkpoint tensor {name!r} has shape {tensors[name].shape}, expected "
                       f"{expected} from config.json; are they from the same model?")
    value = tensors[name].T if is_kernel else tensors[name]
    variable.set_value(jnp.asarray(value, cfg.param_dtype))
    used.add(name)
  unused = sorted(set(tensors) - used)
  ignored = [name for name in unused if _is_ignored(name)]
  unexpected = [name for name in unused if not _is_ignored(name)]
  if unexpected:
    raise ValueError(
        f"checkpoint tensor {unexpected[0]!r} (one of {len(unexpected)} unexpected) "
        "has no place in the BertEncoder config.json describes; are both from one plain BERT?")
  if ignored:
    logging.info("Not loaded (BertEncoder has no pooler or pretraining heads): %s", ignored)
  return state


def load_hf_bert(directory: str, **overrides) -> bert.BertEncoder:
  """A BertEncoder holding the Hugging Face BERT checkpoint in ``directory``.

  ``directory`` holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``);
  ``overrides`` set BertConfig fields that do not change shapes (``dtype``, dropout rates…).
  The config is ``model.cfg``; ``nnx.split(model)`` gives the graphdef and parameters.
  """
  with open(os.path.join(directory, "config.json")) as config_file:
    cfg = config_from_hf(json.load(config_file), **overrides)
  state = encoder_state_from_hf(read_tensors(directory), cfg)
  model = nnx.eval_shape(lambda: bert.BertEncoder(cfg, nnx.Rngs(0)))
  nnx.update(model, state)
  return model


def _is_ignored(name):
  return name.startswith(_IGNORED_PREFIXES) or name in _IGNORED_NAMES


def _hf_name(path):
  """The Hugging Face tensor name of the BertEncoder parameter at ``path``."""
  *module, leaf = path
  if module[0] == "blocks":
    layer, *block_module = module[1:]
    prefix = f"encoder.layer.{layer}.{_BLOCK_MODULES[tuple(block_module)]}"
  else:
    prefix = _EMBEDDING_MODULES[module[0]]
  return f"{prefix}.{_LEAVES[leaf]}"
