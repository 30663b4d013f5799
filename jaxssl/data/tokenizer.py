"""SentencePiece unigram tokenizer with BERT's special tokens (the one module that imports it).

The special tokens take ids 0..4. [CLS], [SEP] and [MASK] are SentencePiece *control* symbols:
the encoder never emits them for raw text, so a document containing the string "[MASK]" cannot
forge a mask position. Byte fallback spells out any character missing from the vocabulary as
UTF-8 byte pieces instead of collapsing it to [UNK].
"""

from collections.abc import Iterable, Sequence
import io
import errno
import os
import re
import shutil

import numpy as np
import sentencepiece

from jaxssl import files

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))  # their ids
FIRST_REGULAR_ID = len(SPECIAL_TOKENS)  # the first id of a piece learnt from text
MODEL_FILE = "tokenizer.model"  # The file name ``save`` writes.

# SentencePiece reads at most this many sentences (a random sample) so that training time stays
# bounded on large corpora; 300k sentences are plenty for a vocabulary of a few tens of thousands.
_MAX_TRAINING_SENTENCES = 300_000


class Tokenizer:
  """A trained SentencePiece model whose first five ids are ``SPECIAL_TOKENS``."""

  def __init__(self, processor: sentencepiece.SentencePieceProcessor, model_path: str):
    pieces = tuple(processor.id_to_piece(i) for i in range(len(SPECIAL_TOKENS)))
    if pieces != SPECIAL_TOKENS:
      raise ValueError(f"tokenizer's first pieces are {pieces}, expected {SPECIAL_TOKENS}; "
                       "train it with jaxssl.data.tokenizer.train_tokenizer")
    self._processor = processor
    self._model_path = model_path

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    """The SentencePiece model in ``path``; a missing or unreadable file is a one-line error."""
    if not os.path.isfile(path):
      raise FileNotFoundError(errno.ENOENT, "no SentencePiece model file here", path)
    try:
      return cls(sentencepiece.SentencePieceProcessor(model_file=path), path)
    except RuntimeError as error:  # SentencePiece's report of a file it cannot parse
      raise ValueError(f"{path} is not a SentencePiece model ({error}); give a .model file "
                       "that jaxssl or SentencePiece trained.") from None

  @property
  def model_path(self) -> str:
    """The file it was loaded from, e.g. to copy into a run's workdir."""
    return self._model_path

  def save(self, directory: str):
    """Copies the model file into ``directory`` as ``MODEL_FILE``."""
    target = os.path.join(directory, MODEL_FILE)
    if os.path.abspath(self._model_path) != os.path.abspath(target):  # not already there
      with files.replacing(target) as temporary:
        shutil.copy(self._model_path, temporary)

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  @property
  def num_special(self) -> int:
    return FIRST_REGULAR_ID

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def cls_id(self) -> int:
    return CLS_ID

  @property
  def sep_id(self) -> int:
    return SEP_ID

  @property
  def mask_id(self) -> int:
    return MASK_ID

  def encode(self, text: str) -> list[int]:
    return self._processor.encode(text, out_type=int)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``encode``'s ids and each one's (start, end) characters in ``text``, as extractive QA
    needs to give answers back in the original text.

    SentencePiece gives byte offsets that include the whitespace a piece's "▁" stands for; the
    spans here are in characters and leave that whitespace out (a lone "▁" gets an empty span).
    """
    pieces = self._processor.encode(text, return_type="proto").pieces
    char_of_byte = np.zeros(len(text.encode("utf-8")) + 1, np.int64)  # (bytes + 1,)
    position = 0
    for index, character in enumerate(text):
      width = len(character.encode("utf-8"))
      char_of_byte[position:position + width] = index
      position += width
    char_of_byte[position] = len(text)
    ids, offsets = [], []
    for piece in pieces:
      start, end = int(char_of_byte[piece.begin]), int(char_of_byte[piece.end])
      while start < end and text[start].isspace():
        start += 1
      ids.append(piece.id)
      offsets.append((start, end))
    return ids, offsets

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes many texts at once on all CPU cores (SentencePiece's own thread pool)."""
    return self._processor.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

  def decode(self, ids: Sequence[int]) -> str:
    # SentencePiece rejects numpy integers, which is what batches hold.
    return self._processor.decode([int(i) for i in ids])

  def id_to_piece(self, token_id: int) -> str:
    return self._processor.id_to_piece(int(token_id))


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_path: str) -> Tokenizer:
  """Trains a unigram model on ``texts`` (one sentence each), saves it at ``model_path``, loads it.

  Give sentences, not whole documents: SentencePiece skips any text longer than
  ``max_sentence_length`` bytes (e.g. use ``jaxssl.data.pretraining.split_sentences``).
  """
  model = io.BytesIO()
  try:
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=0.9995,
        byte_fallback=True,
        input_sentence_size=_MAX_TRAINING_SENTENCES,
        shuffle_input_sentence=True,
        max_sentence_length=16384,
        num_threads=2,
        pad_id=PAD_ID,
        pad_piece=PAD,
        unk_id=UNK_ID,
        unk_piece=UNK,
        bos_id=-1,
        eos_id=-1,
        control_symbols=[CLS, SEP, MASK],
        minloglevel=1,
    )
  except RuntimeError as error:
    vocab_size_error = _vocab_size_error(error, vocab_size)
    if vocab_size_error is None:
      raise
    raise vocab_size_error from error
  with files.replacing(model_path) as temporary:  # never a truncated model at model_path
    with open(temporary, "wb") as model_file:
      model_file.write(model.getvalue())
  return Tokenizer.load(model_path)


def _vocab_size_error(error: RuntimeError, vocab_size: int) -> ValueError | None:
  """Turns SentencePiece's vocabulary-size failures into one-line errors that say what to change."""
  message = str(error)
  too_high = re.search(r"Vocabulary size too high.*<= (\d+)", message)
  if too_high:
    return ValueError(
        f"vocab_size={vocab_size} is too large for this corpus (at most {too_high.group(1)}); "
        "lower vocab_size or train on more text")
  too_low = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", message)
  if too_low:
    return ValueError(
        f"vocab_size={vocab_size} cannot hold the special tokens, 256 byte pieces and the "
        f"corpus's characters; use vocab_size >= {too_low.group(1)}")
  return None
