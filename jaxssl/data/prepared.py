"""A corpus split tokenized once into array_record shards, and read back by later runs.

``documents(...)`` is what pretraining calls: it returns the split as a ``PreparedCorpus``, a
random-access sequence of documents (sentences of token ids) read from disk one document at a
time, from ``<root>/<key>/`` when a run with the same corpus split and tokenizer wrote them
before, else after tokenizing the texts now (with a progress bar) and writing them there. The
key hashes what fixes the result: the dataset name, split, ``text_key`` and ``txt_documents``;
for local files each file's path, size and modification time; for TFDS datasets the prepared
dataset's version; and the tokenizer model file's bytes. A changed file or tokenizer is a new
key, so stale shards are never read; an ``hf:`` dataset is keyed by its name and split only
(delete its directory to read a new revision).

A prepared split is a directory of ``shard-NNNNN.array_record`` files, one record per document
(``encode_document``'s int32 layout), ``unigrams.npy`` (how often each token id occurs, for the
objectives' baselines) and ``index.json`` (counts, shards, the key's inputs).
It is written into a temporary directory and renamed into place whole, so a run stopped while
preparing leaves nothing that a later run would read.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import grain
import numpy as np
from array_record.python import array_record_module
from tqdm import tqdm

from jaxssl.data import pretraining
from jaxssl.data import sources

FORMAT_VERSION = 2  # 2: unigrams.npy
SHARD_BYTES = 256 << 20  # a new shard starts once one holds this many bytes of records
CHUNK_DOCUMENTS = 1000  # documents tokenized per call (one progress-bar update each)
INDEX_FILE = "index.json"
UNIGRAMS_FILE = "unigrams.npy"


def default_root() -> str:
  """Where prepared splits live unless a config says otherwise: ``$JAXSSL_CACHE`` or
  ``~/.cache/jaxssl``, then ``prepared/``."""
  cache = os.environ.get("JAXSSL_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "jaxssl")
  return os.path.join(cache, "prepared")


def encode_document(sentences: Sequence[Sequence[int]]) -> bytes:
  """One record: int32 [S, len_1 .. len_S, the sentences' ids back to back]."""
  lengths = [len(sentence) for sentence in sentences]
  ids = [token for sentence in sentences for token in sentence]
  return np.asarray([len(sentences), *lengths, *ids], np.int32).tobytes()


def decode_document(record: bytes) -> list[np.ndarray]:
  """A document's sentences, int32 arrays (read-only views of ``record``)."""
  values = np.frombuffer(record, np.int32)
  count = int(values[0])
  return np.split(values[count + 1:], np.cumsum(values[1:count])) if count else []


def source_identity(dataset: str, split: str, text_key: str, txt_documents: str,
                    tfds_version: Callable[[], str]) -> dict:
  """What, besides the tokenizer, fixes a prepared split's contents (the key's inputs)."""
  identity = {"dataset": dataset, "split": split, "text_key": text_key}
  if sources.is_external(dataset) and not dataset.startswith(sources.HF_PREFIX):
    identity["txt_documents"] = txt_documents
    identity["files"] = [list(sources.file_identity(path)) for path in sources.local_files(dataset)]
  elif not sources.is_external(dataset):
    identity["version"] = tfds_version()
  return identity


def _key(identity: dict, tokenizer_path: str) -> tuple[str, str]:
  with open(tokenizer_path, "rb") as f:
    tokenizer_sha256 = hashlib.sha256(f.read()).hexdigest()
  text = json.dumps({
      **identity, "tokenizer_sha256": tokenizer_sha256,
      "format": FORMAT_VERSION
  },
                    sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20], tokenizer_sha256


def _write(directory: str, tokenizer, texts: Sequence[str], description: str) -> dict:
  """Tokenizes ``texts`` into shards in ``directory``; their counts for the index."""
  shards, counts = [], {"documents": 0, "sentences": 0, "tokens": 0}
  unigrams = np.zeros(tokenizer.vocab_size, np.int64)
  writer, shard_bytes = None, 0
  with tqdm(total=len(texts), desc=f"prepare {description}", unit="doc") as progress:
    for start in range(0, len(texts), CHUNK_DOCUMENTS):
      chunk = texts[start:start + CHUNK_DOCUMENTS]
      for document in pretraining.tokenize_documents(tokenizer, chunk):
        if writer is None or shard_bytes >= SHARD_BYTES:
          if writer is not None:
            writer.close()
          shards.append({"file": f"shard-{len(shards):05d}.array_record", "documents": 0})
          writer = array_record_module.ArrayRecordWriter(
              os.path.join(directory, shards[-1]["file"]), "group_size:1")
          shard_bytes = 0
        record = encode_document(document)
        writer.write(record)
        shard_bytes += len(record)
        shards[-1]["documents"] += 1
        counts["documents"] += 1
        counts["sentences"] += len(document)
        counts["tokens"] += sum(len(sentence) for sentence in document)
        unigrams += np.bincount(
            np.frombuffer(record, np.int32)[len(document) + 1:], minlength=len(unigrams))
      progress.update(len(chunk))
  if writer is not None:
    writer.close()
  np.save(os.path.join(directory, UNIGRAMS_FILE), unigrams)
  return {**counts, "shards": shards}


class PreparedCorpus(Sequence):
  """A prepared split: ``corpus[i]`` reads document i (a list of sentences of token ids) from
  its shard, so only the documents asked for are ever in memory."""

  def __init__(self, directory: str):
    with open(os.path.join(directory, INDEX_FILE), encoding="utf-8") as f:
      self.index = json.load(f)
    self.directory = directory
    paths = [os.path.join(directory, shard["file"]) for shard in self.index["shards"]]
    self._source = grain.sources.ArrayRecordDataSource(paths) if paths else []

  def __len__(self) -> int:
    return self.index["documents"]

  def __getitem__(self, index: int) -> list[np.ndarray]:
    if not -len(self) <= index < len(self):
      raise IndexError(f"document {index} of {len(self)}")
    return decode_document(self._source[index % len(self)])

  def unigram_counts(self) -> np.ndarray:
    """(vocab_size,) int64: how often each token id occurs in the split."""
    return np.load(os.path.join(self.directory, UNIGRAMS_FILE))


def documents(root: str, identity: dict, tokenizer, texts: Callable[[], Sequence[str]],
              description: str) -> PreparedCorpus:
  """The split's documents → sentences → token ids (``pretraining.tokenize_documents``'s
  result), prepared in ``root`` before, else tokenized from ``texts()`` and written there
  first."""
  key, tokenizer_sha256 = _key(identity, tokenizer.model_path)
  directory = os.path.join(root, key)
  index_path = os.path.join(directory, INDEX_FILE)
  if os.path.exists(index_path):
    with open(index_path, encoding="utf-8") as f:
      index = json.load(f)
    print(f"{description}: reusing {index['documents']:,} documents, {index['tokens']:,} tokens "
          f"prepared in {directory}")
    return PreparedCorpus(directory)
  os.makedirs(root, exist_ok=True)
  temporary = tempfile.mkdtemp(prefix=f".{key}.", dir=root)
  start = time.perf_counter()
  try:
    index = _write(temporary, tokenizer, list(texts()), description)
    index.update(identity=identity, tokenizer_sha256=tokenizer_sha256, format=FORMAT_VERSION)
    with open(os.path.join(temporary, INDEX_FILE), "w", encoding="utf-8") as f:
      json.dump(index, f, indent=1)
    try:
      os.rename(temporary, directory)
    except OSError:  # another process prepared the same split meanwhile: the same contents
      pass
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  seconds = time.perf_counter() - start
  print(f"{description}: prepared {index['documents']:,} documents, {index['tokens']:,} tokens "
        f"in {directory} ({index['tokens'] / seconds:,.0f} tokens/s, reading included)")
  return PreparedCorpus(directory)
