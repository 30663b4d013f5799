"""Hugging Face GPT-2 and Llama checkpoints (config.json + safetensors) to and from jaxssl's GPT.

Import (``load_hf_gpt``) reads a GPT-2 (GPT2LMHeadModel or GPT2Model) or Llama
(LlamaForCausalLM) checkpoint into a ``GPT``. Export (``save_hf_gpt``) writes a ``GPT`` as the
architecture its config describes: learned positions, LayerNorm, a GELU MLP and biases are
GPT-2's; rotary positions, RMSNorm, SwiGLU and no biases are Llama's. Both directions read the
same name tables, so they cannot drift apart, and importing an export gives back the same bits.

On import, every GPT parameter must come from exactly one checkpoint tensor of the expected
shape (GPT-2's fused ``c_attn`` holds query, key and value side by side); anything else is an
error naming the tensor, so no weight is left at its random initialisation or dropped
unnoticed. Only constant buffers are skipped (GPT-2's causal-mask ``attn.bias`` and
``attn.masked_bias``, Llama's rotary ``inv_freq``), and a tied ``lm_head.weight`` is checked
to equal the token embeddings rather than loaded.

Dropout: jaxssl's GPT drops embeddings and residuals at one rate, and only when given a
dropout key (training), so inference is the same at any rate. Import takes GPT-2's
``resid_pdrop`` as that rate (its recipe for fine-tuning) and 0.0 for Llama, which has no such
dropout; GPT-2's ``embd_pdrop`` and both architectures' attention dropout are not read, since
jaxssl has no attention dropout. Pass ``dropout_rate=`` to choose another rate.
"""

import dataclasses
import re

from absl import logging
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.convert import hf_files
from jaxssl.models import gpt

_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}
_LM_HEAD = "lm_head.weight"  # Outside the base model in both architectures, an nn.Linear.


@dataclasses.dataclass(frozen=True)
class _Architecture:
  """How one transformers architecture spells a GPT: its config.json and its tensor names."""
  model_type: str
  hf_class: str  # The LM-head model written into config.json's "architectures".
  fields: dict  # GPTConfig field: the config.json key holding it.
  defaults: dict  # config.json keys a checkpoint may leave out: transformers' default.
  required: dict  # config.json keys for what jaxssl computes one way only: the value it needs.
  activation_key: str  # The config.json key naming the MLP's activation.
  activations: dict  # Its values jaxssl computes: the GPTConfig.mlp (export writes the first).
  fixed: dict  # GPTConfig fields the architecture fixes: set on import, checked on export.
  base_prefix: str  # What the base model's names (GPT2Model, LlamaModel) lack.
  modules: dict  # GPT module outside the blocks: its Hugging Face module.
  block: str  # Block i's Hugging Face module, formatted with i.
  block_modules: dict  # Module path inside a block: its Hugging Face module inside block i.
  conv1d_blocks: bool  # Block weights are (in, out) Conv1D ones, not nn.Linear's (out, in).
  ignored: str  # Regular expression matching the constant buffers a checkpoint may hold.


_GPT2 = _Architecture(
    model_type="gpt2",
    hf_class="GPT2LMHeadModel",
    fields={
        "vocab_size": "vocab_size",
        "hidden_size": "n_embd",
        "num_layers": "n_layer",
        "num_heads": "n_head",
        "mlp_dim": "n_inner",
        "max_position": "n_positions",
        "layer_norm_eps": "layer_norm_epsilon",
        "dropout_rate": "resid_pdrop",
        "tie_embeddings": "tie_word_embeddings",
    },
    defaults={
        "n_inner": None,  # 4 * n_embd
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.1,
        "tie_word_embeddings": True,
        "activation_function": "gelu_new",
    },
    required={
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False
    },
    activation_key="activation_function",
    activations={
        "gelu_new": "gelu_tanh",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu": "gelu"
    },
    fixed=dict(positions="learned", norm="layernorm", use_bias=True),
    base_prefix="transformer.",
    modules={
        "token_embed": "transformer.wte",
        "position_embed": "transformer.wpe",
        "final_norm": "transformer.ln_f",
        "lm_head": "lm_head",  # Only when untied.
    },
    block="transformer.h.{}",
    # Query, key and value share c_attn, in this order along its output axis.
    block_modules={
        ("attention_norm",): "ln_1",
        ("attention", "query"): "attn.c_attn",
        ("attention", "key"): "attn.c_attn",
        ("attention", "value"): "attn.c_attn",
        ("attention", "out"): "attn.c_proj",
        ("mlp_norm",): "ln_2",
        ("mlp", "up"): "mlp.c_fc",
        ("mlp", "down"): "mlp.c_proj",
    },
    conv1d_blocks=True,
    ignored=r"transformer\.h\.\d+\.attn\.(masked_)?bias")
_LLAMA = _Architecture(
    model_type="llama",
    hf_class="LlamaForCausalLM",
    fields={
        "vocab_size": "vocab_size",
        "hidden_size": "hidden_size",
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "head_dim": "head_dim",
        "mlp_dim": "intermediate_size",
        "max_position": "max_position_embeddings",
        "layer_norm_eps": "rms_norm_eps",
        "rope_theta": "rope_theta",
        "tie_embeddings": "tie_word_embeddings",
    },
    defaults={
        "num_key_value_heads": None,  # one per query head
        "head_dim": None,  # hidden_size // num_attention_heads
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    },
    required={
        "attention_bias": False,
        "mlp_bias": False,
        "rope_scaling": None
    },
    activation_key="hidden_act",
    activations={"silu": "swiglu"},
    fixed=dict(positions="rotary", norm="rmsnorm", use_bias=False),
    base_prefix="model.",
    modules={
        "token_embed": "model.embed_tokens",
        "final_norm": "model.norm",
        "lm_head": "lm_head",  # Only when untied.
    },
    block="model.layers.{}",
    block_modules={
        ("attention_norm",): "input_layernorm",
        ("attention", "query"): "self_attn.q_proj",
        ("attention", "key"): "self_attn.k_proj",
        ("attention", "value"): "self_attn.v_proj",
        ("attention", "out"): "self_attn.o_proj",
        ("mlp_norm",): "post_attention_layernorm",
        ("mlp", "gate"): "mlp.gate_proj",
        ("mlp", "up"): "mlp.up_proj",
        ("mlp", "down"): "mlp.down_proj",
    },
    conv1d_blocks=False,
    ignored=r"model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq")
_ARCHITECTURES = {arch.model_type: arch for arch in (_GPT2, _LLAMA)}


def config_from_hf(hf_config: dict, **overrides) -> gpt.GPTConfig:
  """The GPTConfig of a Hugging Face GPT-2 or Llama ``config.json`` (as a dict).

  ``overrides`` set other fields, e.g. ``dtype="bfloat16"`` to compute in bfloat16, or
  ``dropout_rate`` (see the module docstring).
  """
  model_type = hf_config.get("model_type")
  if model_type not in _ARCHITECTURES:
    raise ValueError(f"config.json model_type={model_type!r} is not supported; load_hf_gpt reads "
                     f"{' and '.join(map(repr, _ARCHITECTURES))} checkpoints.")
  arch = _ARCHITECTURES[model_type]
  config = {**arch.defaults, **hf_config}
  for key, value in arch.required.items():
    if config.get(key, value) != value:
      raise ValueError(f"config.json {key}={config[key]!r} is not supported; jaxssl's GPT reads "
                       f"{model_type} checkpoints with {key}={value!r}.")
  activation = config[arch.activation_key]
  if activation not in arch.activations:
    raise ValueError(f"config.json {arch.activation_key}={activation!r} is not supported; "
                     f"jaxssl's GPT reads {model_type} with one of {tuple(arch.activations)}.")
  missing = [key for key in arch.fields.values() if key not in config]
  if missing:
    raise ValueError(f"config.json has no {missing[0]!r}; is it a complete {model_type} config?")
  fields = {field: config[key] for field, key in arch.fields.items()}
  fields["mlp_dim"] = fields["mlp_dim"] or 4 * fields["hidden_size"]  # GPT-2's n_inner None
  # Llama's head counts as GPTConfig holds them: None where the value is what None means, so
  # that a config comes back from its config.json unchanged.
  if fields.get("num_kv_heads") == fields["num_heads"]:
    fields["num_kv_heads"] = None
  if fields.get("head_dim") and fields["head_dim"] * fields["num_heads"] == fields["hidden_size"]:
    fields["head_dim"] = None
  fields.update(arch.fixed, mlp=arch.activations[activation])
  return gpt.GPTConfig(**{"dropout_rate": 0.0, **fields, **overrides})  # Llama: no dropout


def model_from_hf(tensors: dict[str, np.ndarray], cfg: gpt.GPTConfig) -> gpt.GPT:
  """GPT(cfg) holding Hugging Face GPT-2 or Llama tensors (which one: ``cfg``'s).

  Names may lack the base model's prefix (GPT2Model's checkpoints have no ``transformer.``).
  nn.Linear weights are transposed from PyTorch's (out, in) to (in, out), GPT-2's fused
  ``c_attn`` is split into query, key and value, and every tensor is cast to
  ``cfg.param_dtype``; nothing else changes.
  """
  arch = _architecture(cfg)
  tensors = _prefixed(tensors, arch)
  model = nnx.eval_shape(lambda: gpt.GPT(cfg, nnx.Rngs(0)))  # traced once, then filled
  variables = dict(nnx.to_flat_state(nnx.state(model)))  # the model's own variables
  used = set()
  for name, paths in _tensor_table(arch, variables).items():
    if name not in tensors:
      raise ValueError(
          f"checkpoint has no tensor {name!r} (for {', '.join(map(_dotted, paths))}); "
          f"is it a {arch.model_type} checkpoint with the layers config.json describes?")
    shapes = [variables[path].get_value().shape for path in paths]
    expected = _hf_shape(arch, paths, shapes)
    if tensors[name].shape != expected:
      raise ValueError(f"checkpoint tensor {name!r} has shape {tensors[name].shape}, expected "
                       f"{expected} from config.json; are they from the same model?")
    value = tensors[name].T if _transposed(arch, paths[0]) else tensors[name]
    widths = [shape[-1] for shape in shapes]
    for path, part in zip(paths, np.split(value, np.cumsum(widths)[:-1], axis=-1)):
      variables[path].set_value(jnp.asarray(part, cfg.param_dtype))
    used.add(name)
  if cfg.tie_embeddings and _LM_HEAD in tensors:
    embedding = _hf_name(arch, ("token_embed", "embedding"))
    if not np.array_equal(tensors[_LM_HEAD], tensors[embedding]):
      raise ValueError(f"checkpoint tensor {_LM_HEAD!r} differs from {embedding!r}, which "
                       "config.json ties it to; set tie_word_embeddings false to load both.")
    used.add(_LM_HEAD)
  unused = sorted(set(tensors) - used)
  ignored = [name for name in unused if re.fullmatch(arch.ignored, name)]
  unexpected = [name for name in unused if name not in ignored]
  if unexpected:
    raise ValueError(f"checkpoint tensor {unexpected[0]!r} (one of {len(unexpected)} unexpected) "
                     f"has no place in the GPT config.json describes; are both from one "
                     f"{arch.model_type} model?")
  if ignored:
    logging.info("Not loaded (constant buffers): %s", ignored)
  return model


def load_hf_gpt(directory: str, **overrides) -> gpt.GPT:
  """A GPT holding the Hugging Face GPT-2 or Llama checkpoint in ``directory``.

  ``directory`` holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``);
  ``overrides`` set GPTConfig fields that do not change shapes (``dtype``, ``dropout_rate``…).
  The config is ``model.cfg``; ``nnx.split(model)`` gives the graphdef and parameters.
  """
  cfg = config_from_hf(hf_files.read_config(directory), **overrides)
  return model_from_hf(hf_files.read_tensors(directory), cfg)


def hf_config(cfg: gpt.GPTConfig) -> dict:
  """The Hugging Face ``config.json`` (as a dict) of a jaxssl GPT with config ``cfg``.

  The token ids transformers would otherwise default (GPT-2's 50256, Llama's 1 and 2) are
  written as null: they are the tokenizer's, which a GPTConfig does not know. Llama has no
  residual dropout, so a rotary GPT's ``dropout_rate`` is not written.
  """
  arch = _architecture(cfg)
  activation = next(key for key, mlp in arch.activations.items() if mlp == cfg.mlp)
  fields = {key: getattr(cfg, field) for field, key in arch.fields.items()}
  config = {
      "model_type": arch.model_type,
      "architectures": [arch.hf_class],
      **fields,
      **arch.required,
      arch.activation_key: activation,
      "bos_token_id": None,
      "eos_token_id": None,
      "torch_dtype": "float32",
  }
  if arch is _GPT2:  # jaxssl drops embeddings at the residual rate and has no attention dropout.
    config.update(embd_pdrop=cfg.dropout_rate, attn_pdrop=0.0)
  else:  # transformers reads null as these, but other readers of config.json may not
    config.update(num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_size)
  return config


def hf_tensors(model: gpt.GPT) -> dict[str, np.ndarray]:
  """``model``'s parameters as float32 Hugging Face tensors, by their transformers names.

  GPT2LMHeadModel's or LlamaForCausalLM's, in their layouts: GPT-2's block weights (Conv1D) are
  (in, out), other weights (nn.Linear) (out, in), and GPT-2's query, key and value are one
  ``c_attn``.
  """
  if not isinstance(model, gpt.GPT):
    raise ValueError(f"cannot export a {type(model).__name__}; save_hf_gpt writes a jaxssl GPT.")
  arch = _architecture(model.cfg)
  variables = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  tensors = {}
  for name, paths in _tensor_table(arch, variables).items():
    value = np.concatenate([np.asarray(variables[path].get_value(), np.float32) for path in paths],
                           axis=-1)
    # Contiguous: safetensors writes an array's buffer as is, so a transposed view would be
    # written untransposed.
    tensors[name] = np.ascontiguousarray(value.T if _transposed(arch, paths[0]) else value)
  return tensors


def save_hf_gpt(model: gpt.GPT, directory: str, extra_files=()):
  """Writes ``model`` to ``directory`` as a Hugging Face checkpoint: config.json, model.safetensors.

  A GPT-2-style GPT is written as a GPT2LMHeadModel, a Llama-style one as a LlamaForCausalLM;
  either loads with ``transformers.AutoModelForCausalLM.from_pretrained(directory)`` and back
  into jaxssl with ``load_hf_gpt``. Any other combination of GPTConfig options is a ValueError
  naming the option transformers has no counterpart for. ``extra_files`` (paths, e.g. a
  tokenizer) are copied in beside them. ``directory`` must not exist or be empty; it is written
  whole or not at all.
  """
  hf_files.check_new_directory(directory)
  tensors = hf_tensors(model)  # first: it rejects a model transformers has no counterpart for
  config = hf_config(model.cfg)
  hf_files.write_checkpoint(directory, config, tensors, extra_files)


def _architecture(cfg):
  """The transformers architecture of a GPT with config ``cfg``: Llama if its positions are
  rotary, else GPT-2; a ValueError names the first field that architecture cannot hold."""
  arch = _LLAMA if cfg.positions == "rotary" else _GPT2
  where = f"has no transformers counterpart with positions={cfg.positions!r}: {arch.hf_class}"
  for field, value in arch.fixed.items():
    if getattr(cfg, field) != value:
      raise ValueError(f"{field}={getattr(cfg, field)!r} {where} needs {field}={value!r}.")
  if cfg.mlp not in arch.activations.values():
    raise ValueError(f"mlp={cfg.mlp!r} {where} needs mlp in "
                     f"{tuple(dict.fromkeys(arch.activations.values()))}.")
  if arch is _GPT2 and cfg.kv_heads != cfg.num_heads:
    raise ValueError(f"num_kv_heads={cfg.num_kv_heads} {where} has one key/value head per "
                     "query head.")
  if arch is _GPT2 and cfg.head_size * cfg.num_heads != cfg.hidden_size:
    raise ValueError(f"head_dim={cfg.head_dim} {where} splits hidden_size={cfg.hidden_size} "
                     f"among num_heads={cfg.num_heads}.")
  return arch


def _prefixed(tensors, arch):
  """``tensors`` with the base model's prefix added to names that lack it (GPT2Model's)."""
  named = {}
  for name, value in tensors.items():
    full_name = name if name.startswith((arch.base_prefix, "lm_head.")) else arch.base_prefix + name
    if full_name in named:
      raise ValueError(f"checkpoint holds tensor {full_name!r} twice, with and without its "
                       f"{arch.base_prefix!r} prefix; keep one.")
    named[full_name] = value
  return named


def _hf_name(arch, path):
  """The name of the Hugging Face tensor holding the GPT parameter at ``path``."""
  *module, leaf = path
  if module[0] == "blocks":
    layer, *block_module = module[1:]
    prefix = f"{arch.block.format(layer)}.{arch.block_modules[tuple(block_module)]}"
  else:
    prefix = arch.modules[module[0]]
  return f"{prefix}.{_LEAVES[leaf]}"


def _tensor_table(arch, paths):
  """Each Hugging Face tensor name and the GPT parameter paths it holds, in their order along
  its output axis: one path, or query, key and value for GPT-2's fused c_attn."""
  order = list(arch.block_modules)  # a fused tensor's parts are block modules, in this order

  def rank(path):
    return order.index(tuple(path[2:-1])) if path[0] == "blocks" else 0

  table = {}
  for path in sorted(paths, key=rank):  # stable: only the parts of one tensor are reordered
    table.setdefault(_hf_name(arch, path), []).append(path)
  return table


def _transposed(arch, path):
  """Whether the Hugging Face tensor of ``path`` is the transpose of its GPT parameter: nn.Linear
  weights are (out, in); GPT-2's block weights are Conv1D ones, (in, out) like jaxssl's."""
  return path[-1] == "kernel" and not (arch.conv1d_blocks and path[0] == "blocks")


def _hf_shape(arch, paths, shapes):
  """The shape of the Hugging Face tensor holding parameters ``paths`` of ``shapes``: those side
  by side on their last (output) axis, transposed where ``_transposed``."""
  shape = (*shapes[0][:-1], sum(shape[-1] for shape in shapes))
  return shape[::-1] if _transposed(arch, paths[0]) else shape


def _dotted(path):
  return ".".join(map(str, path))
