"""Export of a BERT pretraining workdir as a Hugging Face checkpoint.

    python -m jaxssl.convert --workdir=/tmp/bert --output=/tmp/bert_hf

OUTPUT gets ``config.json`` and ``model.safetensors`` (a BertForPreTraining: encoder, pooler,
MLM and NSP heads), which ``transformers.AutoModel.from_pretrained(OUTPUT)`` loads, and a copy
of the workdir's SentencePiece ``tokenizer.model``. transformers cannot use that file as a BERT
tokenizer (BERT's are WordPiece); tokenize with ``jaxssl.data.tokenizer.Tokenizer.load`` and
pass the ids. GPT workdirs cannot be exported yet.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from flax import nnx

from jaxssl import train
from jaxssl.convert import hf_bert


def define_flags():
  """The command line's flags (defined only when run as a program, so importing the
  library functions next to another command's module never defines a flag twice)."""
  flags.DEFINE_string("workdir", None, "A BERT pretraining workdir (jaxssl.main).")
  flags.DEFINE_string("output", None, "Directory to write; must not exist or be empty.")
  flags.mark_flags_as_required(["workdir", "output"])


def export_workdir(workdir, output):
  """Writes the BERT trained in ``workdir`` and its tokenizer to ``output`` (see above)."""
  objective = train.load_run_config(workdir).objective  # checked before restoring any weights
  if objective != "bert":
    raise ValueError(f"workdir {workdir} holds a {objective!r} run; export of "
                     f"{objective.upper()} is not implemented yet, only BERT.")
  _, _, _, graphdef, params = train.load_trained(workdir)
  hf_bert.save_hf_bert(
      nnx.merge(graphdef, params),
      output,
      extra_files=[os.path.join(workdir, train.TOKENIZER_FILE)])


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
