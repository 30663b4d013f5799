"""Symbols of a non-language sequence (DNA bases, amino acids) as English words, before
tokenization: Kao & Lee (2021), "Is BERT a cross-disciplinary knowledge learner?", fine-tune an
English BERT on DNA written as "we she he you ...".

The fine-tuning config's ``sequence_words`` picks the mapping:

- ``"words"``: fixed words, Kao & Lee's for DNA (A → we, T → you, C → he, G → she), for
  proteins one common English word per amino acid (and "none" for "-", a position past the
  protein's end), for melodic intervals the first 25 words of ``WORD_POOL``;
- ``"random:SEED"``: each symbol a distinct word of ``WORD_POOL``, drawn with SEED;
- ``"chars"``: the symbols themselves, separated by spaces (a tokenizer sees single letters).

A symbol outside the alphabet raises ``UnknownSymbol``; ``catalog.encode`` counts such examples
as skipped, so none is mapped to ``[UNK]`` silently.
"""

import functools

import numpy as np

# Melodic intervals: a..y for -12..+12 semitones (jaxssl.data.builders.sequences.intervals).
ALPHABETS = {
    "dna": "ACGT",
    "protein": "ACDEFGHIKLMNPQRSTVWY-",
    "intervals": "abcdefghijklmnopqrstuvwxy"
}
FIXED_WORDS = {
    "dna":
        dict(A="we", T="you", C="he", G="she"),
    "protein":
        dict(
            zip(ALPHABETS["protein"], ("apple", "chair", "dog", "river", "green", "house", "light",
                                       "water", "king", "music", "table", "stone", "paper", "bird",
                                       "road", "sun", "tree", "window", "cloud", "bread", "none"))),
}
# Common, distinct English words (each a single token of an English WordPiece vocabulary).
WORD_POOL = ("time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child",
             "world", "school", "state", "family", "student", "group", "country", "problem", "hand",
             "part", "place", "case", "week", "company", "system", "program", "question", "work",
             "government", "number", "night", "point", "home", "room", "mother", "area", "money",
             "story", "fact", "month", "lot", "right", "study", "book", "eye", "job", "word",
             "business", "issue", "side", "kind", "head", "service", "friend", "father", "power",
             "hour", "game", "line", "end")
FIXED_WORDS["intervals"] = dict(zip(ALPHABETS["intervals"], WORD_POOL))  # a..y: 25 words


class UnknownSymbol(ValueError):
  """A sequence holds a symbol its alphabet does not."""


def check_mapping(mapping: str) -> str:
  """``mapping`` if it names one (see the module docstring), else a ValueError."""
  name, _, seed = mapping.partition(":")
  if name in ("words", "chars") and not seed:
    return mapping
  if name == "random" and seed.isdigit():
    return mapping
  raise ValueError(f"sequence_words={mapping!r} is not a mapping; use 'words', 'chars' or "
                   "'random:SEED' (e.g. random:0).")


@functools.lru_cache
def vocabulary(alphabet: str, mapping: str) -> dict[str, str]:
  """{symbol: word} of ``mapping`` over the alphabet named ``alphabet`` (``ALPHABETS``)."""
  symbols = ALPHABETS[alphabet]
  name, _, seed = check_mapping(mapping).partition(":")
  if name == "words":
    return FIXED_WORDS[alphabet]
  if name == "chars":
    return {symbol: symbol for symbol in symbols}
  drawn = np.random.default_rng(int(seed)).choice(len(WORD_POOL), len(symbols), replace=False)
  return {symbol: WORD_POOL[index] for symbol, index in zip(symbols, drawn)}


def to_words(sequence: str, alphabet: str, mapping: str) -> str:
  """``sequence`` as its symbols' words, separated by spaces."""
  words = vocabulary(alphabet, mapping)
  if not set(sequence) <= words.keys():
    raise UnknownSymbol(f"symbols outside the {alphabet} alphabet")
  return " ".join(words[symbol] for symbol in sequence)
