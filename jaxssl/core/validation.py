"""Range checks of a run config's numeric fields, run before anything is written: each bad
value is one error naming the field, the value and the range it must lie in."""

import math

from jaxssl.core import steps
from jaxssl.data import sequence_words

# field -> (lowest, highest, whether each bound is allowed): the fields any run config may hold.
# A field a config does not have is not checked. model.* fields are given with their prefix.
RANGES = {
    "num_train_steps": (1, math.inf, True, True),
    "batch_size": (1, math.inf, True, True),
    "log_every": (1, math.inf, True, True),
    "eval_every": (1, math.inf, True, True),
    "probe_every": (1, math.inf, True, True),
    "generator_size": (0, 1, False, True),  # ELECTRA's generator width, a fraction of the encoder's
    "checkpoint_every": (1, math.inf, True, True),
    "keep_checkpoints": (1, math.inf, True, True),
    "eval_batches": (1, math.inf, True, True),
    "window_documents": (1, math.inf, True, True),
    "early_stopping_patience": (0, math.inf, True, True),
    "grad_accumulation_steps": (1, math.inf, True, True),
    "max_seq_length": (1, math.inf, True, True),
    "warmup_steps": (0, math.inf, True, True),
    "seed": (0, 2**31 - 1, True, True),
    "learning_rate": (0, math.inf, True, False),  # 0: weights stay (a checkpoint evaluated)
    "final_lr_fraction": (0, 1, True, True),
    "warmup_ratio": (0, 1, True, False),
    "layer_lr_decay": (0, 1, False, True),
    "adam_b1": (0, 1, True, False),
    "adam_b2": (0, 1, True, False),
    "adam_eps": (0, math.inf, True, False),
    "weight_decay": (0, math.inf, True, False),
    "max_grad_norm": (0, math.inf, False, False),
    "mask_prob": (0, 1, False, True),
    "short_seq_prob": (0, 1, True, True),
    "dropout_rate": (0, 1, True, False),
    "attention_dropout_rate": (0, 1, True, False),
    "model.dropout_rate": (0, 1, True, False),
    "model.attention_dropout_rate": (0, 1, True, False),
    "doc_stride": (1, math.inf, True, True),
    "max_question_length": (1, math.inf, True, True),
    "n_best": (1, math.inf, True, True),
    "max_answer_length": (1, math.inf, True, True),
    "peak_flops_per_chip": (0, math.inf, True, False),
}
DTYPES = ("float32", "bfloat16", "float16")  # model.dtype and model.param_dtype


def _value(config, field):
  node = config
  for part in field.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def _range_text(low, high, low_included, high_included):
  left = f"{'>=' if low_included else '>'} {low}"
  right = "" if high == math.inf else f" and {'<=' if high_included else '<'} {high}"
  return left + right


def check_fields(config):
  """Raises ValueError for the first field of ``config`` outside its range (``RANGES``) or with
  an unknown dtype; a value that is not a number is refused too."""
  for field, (low, high, low_included, high_included) in RANGES.items():
    value = _value(config, field)
    if value is None:
      continue
    allowed = _range_text(low, high, low_included, high_included)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
      raise ValueError(f"{field}={value!r} is not a number; set it {allowed}.")
    above_low = value >= low if low_included else value > low
    below_high = value <= high if high_included else value < high
    if not (above_low and below_high):
      raise ValueError(f"{field}={value!r} is out of range; set it {allowed}.")
  for field in ("model.dtype", "model.param_dtype"):
    value = _value(config, field)
    if value is not None and value not in DTYPES:
      raise ValueError(f"{field}={value!r} is not a supported dtype; use one of {DTYPES}.")
  profile_steps(_value(config, "profile_steps") or "")
  decay = _value(config, "lr_decay")
  if decay is not None and decay not in steps.DECAYS:
    raise ValueError(f"lr_decay={decay!r} is not a schedule; use one of {sorted(steps.DECAYS)}.")
  mapping = _value(config, "sequence_words")
  if mapping is not None:
    sequence_words.check_mapping(mapping)


def profile_steps(text):
  """(first, last) of a ``profile_steps`` value "first,last" (1 <= first <= last), or None for
  ""; anything else is a ValueError naming the value."""
  if not text:
    return None
  parts = text.split(",")
  if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
    raise ValueError(f"profile_steps={text!r} is not 'first,last'; give two step numbers, "
                     "e.g. --config.profile_steps=100,105.")
  first, last = (int(part) for part in parts)
  if not 1 <= first <= last:
    raise ValueError(f"profile_steps={text!r}: need 1 <= first <= last, e.g. 100,105.")
  return first, last
