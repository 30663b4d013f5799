"""Text corpora from outside the TFDS catalog: local files and Hugging Face datasets.

``dataset`` (a run config field) names one when it is
- a path, a folder or a glob (``**`` recurses) of ``.txt``, ``.jsonl`` and ``.parquet`` files:
  ``.txt`` holds one document per file, or, with ``txt_documents="paragraph"``, one per block
  of lines between blank lines; ``.jsonl`` one JSON object per line, its document in the
  ``text_key`` field; ``.parquet`` a ``text_key`` column of strings;
- ``hf:NAME`` or ``hf:NAME/CONFIG``: the Hugging Face dataset, read by the ``datasets`` package
  (``pip install datasets``), its ``text_key`` field.

A local corpus is one sequence of documents: its files sorted by path, each file's documents in
order (``jaxssl.data.corpora`` slices it as a ``train`` split). Bytes that are not UTF-8, a line
that is not JSON or lacks the field, a file without the column are errors naming the file (and
line).
"""

import functools
import glob
import json
import os
import re

import pyarrow.parquet as pq

SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_DOCUMENTS = ("file", "paragraph")  # what one document of a .txt file is
HF_PREFIX = "hf:"


def is_external(name: str) -> bool:
  """Whether ``name`` is a local path or glob, or an ``hf:`` name, rather than a TFDS name."""
  return (name.startswith(
      (HF_PREFIX, "/", "./", "../", "~")) or name.endswith(SUFFIXES) or name.endswith("/") or
          any(char in name for char in "*?[") or os.path.exists(os.path.expanduser(name)))


def local_files(name: str) -> list[str]:
  """The corpus files a path, folder or glob names, sorted; a ValueError if there are none."""
  pattern = os.path.expanduser(name)
  paths = sorted(glob.glob(pattern, recursive=True))
  files = []
  for path in paths:
    if os.path.isdir(path):
      files += sorted(
          found for found in glob.glob(os.path.join(path, "**", "*"), recursive=True)
          if found.endswith(SUFFIXES) and os.path.isfile(found))
    elif path.endswith(SUFFIXES):
      files.append(path)
    elif pattern == path:  # named explicitly, not matched by a glob
      raise ValueError(f"dataset={name!r} is not a {'/'.join(SUFFIXES)} file; rename it to the "
                       "suffix of its format.")
  files = sorted(set(files))  # "corpus/**" matches the folder and the files in it
  if not files:
    raise ValueError(f"dataset={name!r} matches no {', '.join(SUFFIXES)} file; check the path "
                     "(a folder is searched recursively, a glob may use **).")
  return files


def _decoded(data: bytes, path: str, first_line: int = 1) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = first_line + data[:error.start].count(b"\n")
    raise ValueError(f"{path}:{line}: byte 0x{data[error.start]:02x} is not UTF-8; convert the "
                     "file (e.g. iconv -f latin1 -t utf-8) or remove it.") from None


def _txt_documents(path: str, txt_documents: str) -> list[str]:
  with open(path, "rb") as f:
    text = _decoded(f.read(), path)
  return [text] if txt_documents == "file" else re.split(r"\n\s*\n", text)


def _jsonl_documents(path: str, text_key: str) -> list[str]:
  documents = []
  with open(path, "rb") as f:
    for number, data in enumerate(f, 1):
      line = _decoded(data, path, number)
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}:{number}: not JSON ({error.msg}); fix or remove the line.") from None
      if not isinstance(record, dict) or text_key not in record:
        fields = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path}:{number}: no {text_key!r} field (has {fields}); set "
                         "--config.text_key to the field that holds the text.")
      if not isinstance(record[text_key], str):
        raise ValueError(f"{path}:{number}: {text_key!r} is a {type(record[text_key]).__name__}, "
                         "not a string; set --config.text_key to the field that holds the text.")
      documents.append(record[text_key])
  return documents


def _parquet_documents(path: str, text_key: str) -> list[str]:
  try:
    columns = pq.read_schema(path).names
  except Exception as error:  # pylint: disable=broad-except  # pyarrow's errors vary by fault
    raise ValueError(f"{path}: not a readable Parquet file ({error}).") from None
  if text_key not in columns:
    raise ValueError(f"{path}: no column {text_key!r} (has {columns}); set --config.text_key to "
                     "the column that holds the text.")
  values = pq.read_table(path, columns=[text_key]).column(text_key).to_pylist()
  bad = next((value for value in values if value is not None and not isinstance(value, str)), None)
  if bad is not None:
    raise ValueError(f"{path}: column {text_key!r} holds {type(bad).__name__} values, not "
                     "strings; set --config.text_key to the column that holds the text.")
  return [value for value in values if value is not None]


def local_documents(name: str, text_key: str, txt_documents: str) -> tuple[str, ...]:
  """The documents of the files ``name`` names, in order (``local_files``)."""
  if txt_documents not in TXT_DOCUMENTS:
    raise ValueError(f"txt_documents={txt_documents!r}: use one of {TXT_DOCUMENTS}.")
  return _read_files(
      tuple(file_identity(path) for path in local_files(name)), text_key, txt_documents)


def file_identity(path: str) -> tuple[str, int, int]:
  """(absolute path, size, modification time in ns): a changed file is another identity."""
  stat = os.stat(path)
  return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


# A run reads its train and eval splits from one read; keyed by the files' identities, so a
# file changed since (a second run in the same process) is read again.
@functools.lru_cache(maxsize=2)
def _read_files(files: tuple[tuple[str, int, int], ...], text_key: str,
                txt_documents: str) -> tuple[str, ...]:
  documents = []
  for path, _, _ in files:
    if path.endswith(".txt"):
      documents += _txt_documents(path, txt_documents)
    elif path.endswith(".jsonl"):
      documents += _jsonl_documents(path, text_key)
    else:
      documents += _parquet_documents(path, text_key)
  return tuple(documents)


def clear_cache():
  """Lets go of the texts read so far (a run streams its prepared shards once they exist)."""
  _read_files.cache_clear()


def hf_documents(name: str, split: str, text_key: str) -> list[str]:
  """The ``text_key`` strings of ``split`` (the datasets package's split syntax, which slices
  as TFDS's does) of the ``hf:NAME[/CONFIG]`` dataset ``name``."""
  try:
    import datasets  # pylint: disable=import-outside-toplevel  # an optional dependency
  except ImportError:
    raise ValueError(f"dataset={name!r} needs the datasets package: pip install datasets "
                     "(or pip install 'jaxssl[hf]').") from None
  path, _, config = name[len(HF_PREFIX):].partition("/")
  loaded = datasets.load_dataset(path, config or None, split=split)
  if text_key not in loaded.column_names:
    raise ValueError(f"{name} has no {text_key!r} field (has {loaded.column_names}); set "
                     "--config.text_key to the field that holds the text.")
  texts = [text for text in loaded[text_key] if text is not None]
  bad = next((text for text in texts if not isinstance(text, str)), None)
  if bad is not None:
    raise ValueError(f"{name}: field {text_key!r} holds {type(bad).__name__} values, not "
                     "strings; set --config.text_key to the field that holds the text.")
  return texts
