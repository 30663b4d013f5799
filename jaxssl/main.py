"""Entry point: ``python -m jaxssl.main --config=configs/bert_pretrain.py --workdir=DIR``.

On several hosts, pass ``--distributed`` (cluster auto-detection: TPU pods, SLURM, …) or
``--coordinator_address``, ``--num_processes`` and ``--process_id`` explicitly.
"""

import sys

import jax
from absl import app
from absl import flags
from ml_collections import config_flags

from jaxssl import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, tokenizer.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value or _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train.run(_CONFIG.value, _WORKDIR.value)
  except ValueError as error:  # a user's input: one line, no traceback
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
