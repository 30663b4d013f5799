"""Export of a BERT or GPT pretraining workdir as a Hugging Face checkpoint.

    python -m jaxssl.convert --workdir=/tmp/bert --output=/tmp/bert_hf
    python -m jaxssl.convert --workdir=/tmp/gpt --output=/tmp/gpt_hf

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
"""

import sys

from absl import app
from absl import flags
from absl import logging
from flax import nnx

from jaxssl import families
from jaxssl import train
from jaxssl.convert import hf_bert
from jaxssl.convert import hf_gpt

SAVERS = {"bert": hf_bert.save_hf_bert, "gpt": hf_gpt.save_hf_gpt}  # by the run's objective


def define_flags():
  """The command line's flags (defined only when run as a program, so importing the
  library functions next to another command's module never defines a flag twice)."""
  flags.DEFINE_string("workdir", None, "A BERT or GPT pretraining workdir (jaxssl.main).")
  flags.DEFINE_string("output", None, "Directory to write; must not exist or be empty.")
  flags.mark_flags_as_required(["workdir", "output"])


def export_workdir(workdir, output):
  """Writes the model trained in ``workdir`` and its tokenizer to ``output`` (see above)."""
  config = train.load_run_config(workdir)  # checked before restoring any weights
  if config.objective not in SAVERS:
    raise ValueError(f"workdir {workdir} holds a {config.objective!r} run; only "
                     f"{' and '.join(SAVERS)} runs can be exported.")
  if config.objective == "gpt":  # the architecture has a transformers counterpart
    hf_gpt.hf_config(
        families.family(config, train.workdir_model_config(config, workdir)).model_config)
  _, _, _, graphdef, params = train.load_trained(workdir)
  SAVERS[config.objective](
      nnx.merge(graphdef, params), output, extra_files=train.tokenizer_files(workdir))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    export_workdir(flags.FLAGS.workdir, flags.FLAGS.output)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"Wrote {flags.FLAGS.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
