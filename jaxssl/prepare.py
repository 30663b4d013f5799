"""``python -m jaxssl.prepare --config=configs/bert_pretrain.py [--config.dataset=...]``.

Tokenizes a pretraining config's train and eval splits once into array_record shards
(``jaxssl.data.prepared``), which every later run with the same corpus and tokenizer streams
from without reading the text again. The tokenizer is the config's ``tokenizer`` (a
SentencePiece model file) or ``init_from``'s; a run that trains its own tokenizer prepares in
its first stage instead.
"""

import functools

from absl import flags
from ml_collections import config_flags

from jaxssl import cli
from jaxssl.core import pretrain
from jaxssl.core import validation
from jaxssl.data import tokenizer as tokenizer_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining config file.")
flags.mark_flags_as_required(["config"])


def prepare(config):
  """Prepares ``config``'s train and eval splits; returns their ``prepared.PreparedCorpus``."""
  validation.check_fields(config)
  init = pretrain.load_init(config)
  if init:
    tokenizer = init.tokenizer
  elif config.tokenizer:
    tokenizer = tokenizer_lib.Tokenizer.load(config.tokenizer)
  else:
    raise ValueError("prepare needs a tokenizer: set --config.tokenizer=MODEL_FILE or "
                     "--config.init_from=NAME (a run with neither trains one, then prepares).")
  return [
      pretrain.prepared_documents(config, split, tokenizer,
                                  functools.partial(pretrain.split_texts, config, split))
      for split in (config.train_split, config.eval_split)
  ]


if __name__ == "__main__":
  cli.run(lambda: prepare(_CONFIG.value))
