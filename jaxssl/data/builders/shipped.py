"""What the builders of data shipped with jaxssl share: an array_record builder base, the
package's data folders, reading their xz-compressed JSON Lines, and splitting records by a hash
of their id."""

import hashlib
import json
import lzma
import pathlib

import tensorflow_datasets as tfds

CORPORA_DIR = pathlib.Path(__file__).parents[1] / "corpora"
TASKS_DIR = pathlib.Path(__file__).parents[1] / "tasks"
SENTIMENT_LABELS = ("negative", "positive")


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder for data shipped with the package, written as array_record."""

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    # TFDS defaults to tfrecord, which needs TensorFlow to write and cannot be read randomly.
    super().__init__(file_format=file_format, **kwargs)


def read_records(path: pathlib.Path) -> list[dict]:
  with lzma.open(path, "rt", encoding="utf-8") as lines:
    return [json.loads(line) for line in lines]


def split_by_hash(records: list[dict], held_out: dict[str, float]) -> dict[str, list[dict]]:
  """Records by split: ``held_out`` maps a split to its fraction, the rest go to train.

  Ids ordered by hash fill each held-out split in turn with round(fraction * N) records (at
  least one): stable across runs and machines, and independent of the file's order.
  """
  by_hash = sorted(records, key=lambda r: hashlib.sha256(r["id"].encode("utf-8")).hexdigest())
  splits = {}
  for split, fraction in held_out.items():
    size = max(1, round(fraction * len(records)))
    splits[split], by_hash = by_hash[:size], by_hash[size:]
  return {"train": by_hash, **splits}
