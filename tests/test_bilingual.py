"""The bilingual pretraining recipe: jaxssl_corpus/bilingual holds the English and the Chinese
documents, and the tokenizer trained on it as pretrain.run trains it encodes both languages
without falling back to [UNK] or to byte pieces for most characters."""

import re

import pytest

from conftest import load_config
from jaxssl.data import corpora
from jaxssl.core import pretrain

HAN = re.compile("[\u4e00-\u9fff]")


def test_corpus_argument_picks_the_dataset_and_vocabulary():
  config = load_config("bert_pretrain", "corpus=bilingual")
  assert (config.dataset, config.vocab_size) == ("jaxssl_corpus/bilingual", 16000)
  assert load_config("bert_pretrain", "corpus=zh").dataset == "jaxssl_corpus/zh"
  assert load_config("bert_pretrain").dataset == "jaxssl_corpus/en"
  with pytest.raises(ValueError, match=r"corpus='fr': use one of \('en', 'zh', 'bilingual'\)"):
    load_config("bert_pretrain", "corpus=fr")
  with pytest.raises(ValueError, match="size=base pretrains on Wikipedia"):
    load_config("bert_pretrain", "size=base,corpus=bilingual")


def test_bilingual_validation_is_the_english_and_chinese_documents(tfds_dir):
  bilingual = corpora.load_texts("jaxssl_corpus/bilingual", "validation", tfds_dir)
  english = corpora.load_texts("jaxssl_corpus/en", "validation", tfds_dir)
  chinese = corpora.load_texts("jaxssl_corpus/zh", "validation", tfds_dir)
  assert sorted(bilingual) == sorted(english + chinese)
  assert english and not any(HAN.search(text) for text in english)
  assert sum(bool(HAN.search(text)) for text in chinese) > 0.9 * len(chinese)


def test_one_vocabulary_encodes_both_languages(tfds_dir, tmp_path):
  config = load_config("bert_pretrain", "corpus=bilingual")
  config.update(data_dir=tfds_dir, vocab_size=3000)
  train_texts = corpora.load_texts(config.dataset, "train[:4%]", tfds_dir)
  tokenizer = pretrain.load_tokenizer(config, str(tmp_path / "run"), lambda: train_texts,
                                      str(tmp_path))
  held_out = corpora.load_texts(config.dataset, "validation", tfds_dir)
  for language, texts in (("en", [t for t in held_out if not HAN.search(t)]),
                          ("zh", [t for t in held_out if HAN.search(t)])):
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode_batch(texts) for i in i]
    unknown = pieces.count("[UNK]")
    byte_pieces = sum(piece.startswith("<0x") for piece in pieces)
    assert unknown == 0, language
    assert byte_pieces < 0.05 * len(pieces), (language, byte_pieces, len(pieces))
  vocabulary = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  assert sum(bool(HAN.search(piece)) for piece in vocabulary) > 1000  # Chinese pieces
