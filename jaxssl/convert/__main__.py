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

from absl import flags
from flax import nnx

from jaxssl import cli
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
  flags.DEFINE_string("workdir", None, "A BERT or GPT pretraining workdir (jaxssl.main).")
  flags.DEFINE_string("output", None, "Directory to write; must not exist or be empty.")
  flags.mark_flags_as_required(["workdir", "output"])


def export_workdir(workdir, output):
  """Writes the model trained in ``workdir`` and its tokenizer to ``output`` (see above)."""
  hf_files.check_new_directory(output)  # checked before restoring any weights
  workdir_lib.check_writable(output, "--output")
  config = workdir_lib.read_config(workdir)
  if config.objective not in EXPORTERS:
    raise ValueError(f"workdir {workdir} holds a {config.objective!r} run; only "
                     f"{' and '.join(EXPORTERS)} runs can be exported.")
  check, save = EXPORTERS[config.objective]
  check(trained.run_objective(config, workdir).model_config)
  _, _, _, graphdef, params = trained.load_trained(workdir)
  save(nnx.merge(graphdef, params), output, extra_files=workdir_lib.tokenizer_files(workdir))


def main():
  export_workdir(flags.FLAGS.workdir, flags.FLAGS.output)
  print(f"Wrote {flags.FLAGS.output}")


if __name__ == "__main__":
  cli.run(main, define_flags)
