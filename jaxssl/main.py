"""Entry point: ``python -m jaxssl.main --config=configs/bert_pretrain.py --workdir=DIR``.

A config whose ``objective`` is "finetune" (``configs/bert_finetune.py``) fine-tunes
(``jaxssl.core.finetune``); the others pretrain (``jaxssl.core.pretrain``).

On several hosts, pass ``--distributed`` (cluster auto-detection: TPU pods, SLURM, …) or
``--coordinator_address``, ``--num_processes`` and ``--process_id`` explicitly.
"""

import jax
from absl import flags
from ml_collections import config_flags

from jaxssl import cli
from jaxssl.core import finetune
from jaxssl.core import pretrain

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, tokenizer.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main():
  config = _CONFIG.value
  try:
    objective = config.objective
  except OSError as error:  # config_flags reports a file it could not load on first use
    reason = str(error).strip().splitlines()[-1].strip()
    raise ValueError(f"--config={flags.FLAGS['config'].config_filename} cannot be loaded "
                     f"({reason}); give a config file such as configs/bert_pretrain.py.") from None
  if _DISTRIBUTED.value or _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  # A fine-tuning config's objective is "finetune"; every other objective pretrains.
  run = {"finetune": finetune.run}.get(objective, pretrain.run)
  run(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
