"""A pretrained model's WordPiece tokenizer (the one module that imports ``tokenizers``).

It offers the interface of ``jaxssl.data.tokenizer.Tokenizer`` over a Hugging Face
``tokenizer.json``, so a converted checkpoint (``jaxssl.convert.hf_bert``) sees the ids it was
trained on. The file's normalizer does what the model's tokenizer config says (lowercasing,
accent stripping); its truncation and padding settings are switched off, because batching
decides lengths here. Unlike SentencePiece's control symbols, a literal "[MASK]" (or "[CLS]"…)
in text encodes to that special id, exactly as the model's own Hugging Face tokenizer does.
"""

from collections.abc import Sequence
import os

import tokenizers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer:
  """A WordPiece vocabulary whose special tokens are found by their pieces, wherever they are.

  ``num_special`` is the first id of a regular piece: BERT's vocabularies start with [PAD], the
  reserved ``[unusedN]`` pieces and the other special tokens, and ids below it never occur in
  text, which is what the pretraining code relies on when it skips them.
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, model_path: str):
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    missing = [piece for piece in SPECIAL_TOKENS if piece not in vocab]
    if missing:
      raise ValueError(f"{model_path!r} has no {missing} tokens; a BERT WordPiece tokenizer.json "
                       f"must hold all of {SPECIAL_TOKENS}.")
    self._special_ids = {piece: vocab[piece] for piece in SPECIAL_TOKENS}
    first_regular_id = 0
    while _is_reserved(tokenizer.id_to_token(first_regular_id)):
      first_regular_id += 1
    if max(self._special_ids.values()) >= first_regular_id:
      raise ValueError(f"{model_path!r} places special tokens at {self._special_ids}, after its "
                       f"first regular piece (id {first_regular_id}); use a vocabulary that "
                       "starts with them, as BERT's do.")
    self._num_special = first_regular_id
    tokenizer.no_truncation()
    tokenizer.no_padding()
    self._tokenizer = tokenizer
    self._model_path = model_path

  @classmethod
  def load(cls, path: str) -> "WordPieceTokenizer":
    """From a ``tokenizer.json`` file, or a model directory that holds one."""
    if os.path.isdir(path):
      path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"{path!r} does not exist; write it with transformers: "
          "AutoTokenizer.from_pretrained(model_dir).save_pretrained(model_dir).")
    return cls(tokenizers.Tokenizer.from_file(path), path)

  @property
  def model_path(self) -> str:
    """The file it was loaded from, e.g. to copy into a run's workdir."""
    return self._model_path

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def num_special(self) -> int:
    return self._num_special

  @property
  def pad_id(self) -> int:
    return self._special_ids["[PAD]"]

  @property
  def unk_id(self) -> int:
    return self._special_ids["[UNK]"]

  @property
  def cls_id(self) -> int:
    return self._special_ids["[CLS]"]

  @property
  def sep_id(self) -> int:
    return self._special_ids["[SEP]"]

  @property
  def mask_id(self) -> int:
    return self._special_ids["[MASK]"]

  def encode(self, text: str) -> list[int]:
    """The text's ids without [CLS]/[SEP], which the example builders add."""
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes many texts at once on all CPU cores (the library's own thread pool)."""
    encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [encoding.ids for encoding in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    """The text of ``ids``, special tokens left out (as SentencePiece leaves out control ids)."""
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def id_to_piece(self, token_id: int) -> str:
    return self._tokenizer.id_to_token(int(token_id))


def _is_reserved(piece: str | None) -> bool:
  """Special tokens and BERT's ``[unusedN]`` placeholders: bracketed, never produced by text."""
  return piece is not None and piece.startswith("[") and piece.endswith("]") and len(piece) > 2
