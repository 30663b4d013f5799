"""Entry point: ``python -m jaxssl.main --config=configs/bert_pretrain.py --workdir=DIR``.

A config whose ``objective`` is "finetune" (``configs/bert_finetune.py``) runs
``jaxssl.finetune``; the others pretrain (``jaxssl.train``).

On several hosts, pass ``--distributed`` (cluster auto-detection: TPU pods, SLURM, …) or
``--coordinator_address``, ``--num_processes`` and ``--process_id`` explicitly.
"""

import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxssl import finetune
from jaxssl import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, tokenizer.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's parser, with a bad flag or config override as one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # a config file's error comes with its traceback: keep the end
    print(f"error: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
  except (AttributeError, KeyError) as error:  # config_flags: a field that does not exist
    field = str(error).strip("\"'")
    print(
        f"error: unknown config field {field!r}; the --config file lists every field.",
        file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax and TFDS log every step at INFO
    logging.set_verbosity(logging.WARNING)
  if _DISTRIBUTED.value or _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    if _CONFIG.value.objective == "finetune":
      finetune.run(_CONFIG.value, _WORKDIR.value)
    else:
      train.run(_CONFIG.value, _WORKDIR.value)
  except ValueError as error:  # a user's input: one line, no traceback
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
