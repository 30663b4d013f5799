"""A run directory: the one module that knows its layout. Everything that reads or writes a
run's config, tokenizer, model config, label names or checkpoints goes through here.

    WORKDIR/config.json         the resolved config (objective "bert", "gpt" or "finetune")
    WORKDIR/model_config.json   the model config of a checkpoint the run started from, if any
    WORKDIR/labels.json         a fine-tuning run's class (tag) names, else null
    WORKDIR/tokenizer.model     SentencePiece (or tokenizer.json / special_tokens.json: a
                                published checkpoint's tokenizer)
    WORKDIR/checkpoints/        orbax checkpoints (jaxssl.checkpoint)
    WORKDIR/metrics.jsonl       the logged metrics (jaxssl.metrics), with tensorboard/
    WORKDIR/.lock               held by the live run (``lock``): one run per workdir
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import socket

import ml_collections

from jaxssl import checkpoint
from jaxssl import files
from jaxssl.data import pretrained_tokenizers
from jaxssl.data import tokenizer as tokenizer_lib

CONFIG_FILE = "config.json"
MODEL_CONFIG_FILE = "model_config.json"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.jsonl"
TOKENIZER_FILES = (tokenizer_lib.MODEL_FILE, "tokenizer.json", "special_tokens.json",
                   pretrained_tokenizers.UnigramTokenizer.NORMALIZATION_FILE)
LOCK_FILE = ".lock"


def path(workdir, name):
  return os.path.join(workdir, name)


def check_writable(target, flag="--workdir", directory=True):
  """Raises a one-line ValueError if ``target``, a directory (or, ``directory`` False, a file)
  that a command will create or write, cannot be: a file stands where a directory must be, or
  the nearest existing directory is read-only. Checked before any work, so none is lost."""
  target_path = os.path.abspath(target)
  if os.path.exists(target_path) and os.path.isdir(target_path) != directory:
    wanted = "a directory" if directory else "a file"
    raise ValueError(f"{flag}={target} exists and is not {wanted}; choose another {flag}.")
  existing = target_path if directory else os.path.dirname(target_path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"{flag}={target}: {existing} is a file, not a directory; choose another "
                     f"{flag}.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"{flag}={target}: {existing} is not writable (read-only, or another "
                     f"user's); choose another {flag}.")


def has_config(workdir):
  return os.path.exists(path(workdir, CONFIG_FILE))


def write_config(workdir, config):
  files.write_text(path(workdir, CONFIG_FILE), config.to_json(indent=2))


def read_config(workdir):
  """The config of the run in ``workdir``, read without touching its checkpoints."""
  if not has_config(workdir):
    raise ValueError(
        f"workdir {workdir} holds no run (no config.json); train one with jaxssl.main.")
  with open(path(workdir, CONFIG_FILE), encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def check_compatible(workdir, config, identity_fields):
  """A workdir holding another run's config must not be resumed with this one: every field in
  ``identity_fields`` must match."""
  if not has_config(workdir):
    return
  previous = json.loads(read_config(workdir).to_json())
  current = json.loads(config.to_json())
  for field in identity_fields:
    if field not in previous:  # added to jaxssl after that run: it ran as the default does
      continue
    if previous.get(field) != current.get(field):
      raise ValueError(
          f"workdir {workdir} holds an incompatible run ({field}={previous.get(field)!r}, "
          f"this config has {current.get(field)!r}); use a new --workdir or that config.")


def write_model_config(workdir, model_config):
  """Records a model config dataclass (a checkpoint's, or a fine-tuned encoder's)."""
  files.write_text(
      path(workdir, MODEL_CONFIG_FILE), json.dumps(dataclasses.asdict(model_config), indent=2))


def read_model_config(workdir, config_class):
  """The recorded model config as ``config_class``, or None if the run recorded none."""
  if not os.path.exists(path(workdir, MODEL_CONFIG_FILE)):
    return None
  with open(path(workdir, MODEL_CONFIG_FILE), encoding="utf-8") as f:
    return config_class(**json.load(f))


def write_labels(workdir, label_names):
  files.write_text(path(workdir, LABELS_FILE), json.dumps(label_names))


def read_labels(workdir):
  with open(path(workdir, LABELS_FILE), encoding="utf-8") as f:
    return json.load(f)


def load_tokenizer(workdir):
  """The tokenizer a run saved in ``workdir``: SentencePiece, or a checkpoint's (init_from)."""
  if os.path.exists(path(workdir, "special_tokens.json")):
    return pretrained_tokenizers.ByteLevelBPETokenizer.load(workdir)
  if os.path.exists(path(workdir, pretrained_tokenizers.UnigramTokenizer.NORMALIZATION_FILE)):
    return pretrained_tokenizers.UnigramTokenizer.load(workdir)
  if os.path.exists(path(workdir, "tokenizer.json")):
    return pretrained_tokenizers.WordPieceTokenizer.load(workdir)
  return tokenizer_lib.Tokenizer.load(path(workdir, tokenizer_lib.MODEL_FILE))


def tokenizer_files(workdir):
  """The paths of the tokenizer files a run saved in ``workdir``."""
  return [path(workdir, name) for name in TOKENIZER_FILES if os.path.exists(path(workdir, name))]


def has_checkpoint(workdir):
  """Whether the run saved a checkpoint (read without opening, or creating, the folder)."""
  folder = path(workdir, checkpoint.DIRECTORY)
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def checkpointer(workdir, keep=1, read_only=False, best_metric=None):
  """The run's ``checkpoint.Checkpointer`` (``workdir/checkpoints``, the last ``keep`` kept, and
  the best by ``best_metric`` if given; ``read_only`` for a reader, which must not disturb a run
  that may be writing)."""
  return checkpoint.Checkpointer(workdir, keep, read_only, best_metric)


def has_metrics(workdir):
  return os.path.exists(path(workdir, METRICS_FILE))


@contextlib.contextmanager
def lock(workdir):
  """Holds the workdir for one run: a second run (another process) is refused with one line
  naming the holder. The operating system releases the lock when the holder exits, however it
  exits (kill -9 included), so a lock is never stale; the file keeps the last holder's pid and
  host only to say who holds it."""
  os.makedirs(workdir, exist_ok=True)
  with open(path(workdir, LOCK_FILE), "a+", encoding="utf-8") as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock_file.seek(0)
      holder = lock_file.read().strip() or "another process"
      raise ValueError(f"workdir {workdir} is in use by a running job ({holder}); wait for it "
                       "to finish or use another --workdir.") from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"pid {os.getpid()} on {socket.gethostname()}")
    lock_file.flush()
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)
