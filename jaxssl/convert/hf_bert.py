"""Hugging Face BERT checkpoints (``config.json`` + safetensors) to and from jaxssl's BERT.

Import (``load_hf_bert``) gives a ``BertEncoder``; export (``save_hf_bert``) writes a
``BertEncoder`` as a BertModel or a ``BertForPretraining`` as a BertForPreTraining. Both
directions read the same name tables, so they cannot drift apart.

On import, every encoder parameter must come from exactly one checkpoint tensor of the expected
shape; anything else is an error naming the tensor, so no weight is left at its random
initialisation or dropped unnoticed. Only the pretraining heads and the pooler (which
``BertEncoder`` does not have) are skipped, and they are logged.
"""

from absl import logging
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.convert import hf_files
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
# BertForPretraining's modules beside its encoder, in BertForPreTraining's names. The MLM decoder
# weight is not written: transformers ties it to the word embeddings, as jaxssl does.
_PRETRAINING_MODULES = {
    "pooler": "bert.pooler.dense",
    "mlm_transform": "cls.predictions.transform.dense",
    "mlm_norm": "cls.predictions.transform.LayerNorm",
    "nsp_classifier": "cls.seq_relationship",
}
_MLM_BIAS = "cls.predictions.bias"
# BertConfig fields and the config.json keys that hold them.
_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "mlp_dim": "intermediate_size",
    "max_position": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
}


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
  fields = {field: hf_config[key] for field, key in _CONFIG_FIELDS.items()}
  return bert.BertConfig(**{**fields, **overrides})


def encoder_from_hf(tensors: dict[str, np.ndarray], cfg: bert.BertConfig) -> bert.BertEncoder:
  """BertEncoder(cfg) holding Hugging Face BertModel tensors (``bert.`` prefix or not), built
  abstractly (traced once) with its variables set.

  Linear weights are transposed from PyTorch's (out, in) to (in, out) and every tensor is cast
  to ``cfg.param_dtype``; nothing else changes.
  """
  tensors = {name.removeprefix("bert."): value for name, value in tensors.items()}
  model = nnx.eval_shape(lambda: bert.BertEncoder(cfg, nnx.Rngs(0)))
  state = nnx.state(model)  # the model's own variables
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
  return model


def load_hf_bert(directory: str, **overrides) -> bert.BertEncoder:
  """A BertEncoder holding the Hugging Face BERT checkpoint in ``directory``.

  ``directory`` holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``);
  ``overrides`` set BertConfig fields that do not change shapes (``dtype``, dropout rates…).
  The config is ``model.cfg``; ``nnx.split(model)`` gives the graphdef and parameters.
  """
  cfg = config_from_hf(hf_files.read_config(directory), **overrides)
  return encoder_from_hf(hf_files.read_tensors(directory), cfg)


def hf_config(cfg: bert.BertConfig, architecture: str) -> dict:
  """The Hugging Face ``config.json`` (as a dict) of a jaxssl BERT with config ``cfg``."""
  fields = {key: getattr(cfg, field) for field, key in _CONFIG_FIELDS.items()}
  return {
      "model_type": "bert",
      "architectures": [architecture],
      **fields,
      "hidden_act": "gelu",
      "position_embedding_type": "absolute",
      "torch_dtype": "float32",
  }


def hf_tensors(model: bert.BertEncoder | bert.BertForPretraining) -> dict[str, np.ndarray]:
  """``model``'s parameters as float32 Hugging Face tensors, Linear weights (out, in).

  A BertEncoder gives BertModel's names (without the pooler, which it does not have); a
  BertForPretraining gives BertForPreTraining's: ``bert.``-prefixed encoder, pooler and heads.
  """
  if isinstance(model, bert.BertForPretraining):
    name_of = _pretraining_hf_name
  elif isinstance(model, bert.BertEncoder):
    name_of = _hf_name
  else:
    raise ValueError(f"cannot export a {type(model).__name__}; save_hf_bert writes a BertEncoder "
                     "or a BertForPretraining.")
  tensors = {}
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    value = np.asarray(variable.get_value(), np.float32)
    # Contiguous: safetensors writes an array's buffer as is, so a transposed view would be
    # written untransposed.
    tensors[name_of(path)] = np.ascontiguousarray(value.T if path[-1] == "kernel" else value)
  return tensors


def save_hf_bert(model: bert.BertEncoder | bert.BertForPretraining, directory: str, extra_files=()):
  """Writes ``model`` to ``directory`` as a Hugging Face checkpoint: config.json, model.safetensors.

  A BertEncoder is written as a BertModel, a BertForPretraining as a BertForPreTraining; either
  loads with ``transformers.AutoModel.from_pretrained(directory)`` (a BertEncoder's pooler is
  then newly initialised) and back into jaxssl with ``load_hf_bert``. ``extra_files`` (paths,
  e.g. a tokenizer) are copied in beside them. ``directory`` must not exist or be empty; it is
  written whole or not at all.
  """
  hf_files.check_new_directory(directory)
  tensors = hf_tensors(model)  # first: it rejects a model that is not a jaxssl BERT
  is_pretraining = isinstance(model, bert.BertForPretraining)
  encoder = model.encoder if is_pretraining else model
  config = hf_config(encoder.cfg, "BertForPreTraining" if is_pretraining else "BertModel")
  hf_files.write_checkpoint(directory, config, tensors, extra_files)


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


def _pretraining_hf_name(path):
  """The Hugging Face BertForPreTraining name of the BertForPretraining parameter at ``path``."""
  if path[0] == "encoder":
    return f"bert.{_hf_name(path[1:])}"
  if path == ("mlm_bias",):
    return _MLM_BIAS
  module, leaf = path
  return f"{_PRETRAINING_MODULES[module]}.{_LEAVES[leaf]}"
