"""Tests for jaxssl.data: tokenizer, TFDS corpora, BERT sentence-pair batches."""

import json
import lzma
import os
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxssl.data import batching, corpora, pretraining
from jaxssl.data.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

CORPORA_DIR = pathlib.Path(corpora.__file__).parent / "corpora"
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
SPECIAL_IDS = {"cls_id": CLS_ID, "sep_id": SEP_ID, "pad_id": PAD_ID}


def read_corpus_file(name: str) -> list[dict[str, str]]:
  with lzma.open(CORPORA_DIR / f"{name}.jsonl.xz", "rt", encoding="utf-8") as lines:
    return [json.loads(line) for line in lines]


def unique_token_documents(seed: int,
                           num_documents: int,
                           num_sentences: tuple[int, int] = (1, 12),
                           max_sentence_length: int = 20) -> list[list[list[int]]]:
  """Synthetic documents whose token ids count up through the whole corpus.

  A row's tokens then tell exactly where they came from: consecutive ids are consecutive text.
  """
  rng = np.random.default_rng(seed)
  next_id = len(SPECIAL_TOKENS)
  documents = []
  for _ in range(num_documents):
    document = []
    for _ in range(rng.integers(num_sentences[0], num_sentences[1] + 1)):
      length = int(rng.integers(1, max_sentence_length + 1))
      document.append(list(range(next_id, next_id + length)))
      next_id += length
    documents.append(document)
  return documents


def document_starts(documents: list[list[list[int]]]) -> np.ndarray:
  return np.array([document[0][0] for document in documents])


def split_row(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  first_sep, second_sep = np.flatnonzero(row == SEP_ID)
  return row[1:first_sep], row[first_sep + 1:second_sep]


# ---------------------------------------------------------------------------------------------
# Tokenizer


@pytest.fixture(scope="module")
def moby_texts() -> list[str]:
  return [document["text"] for document in read_corpus_file("moby_dick")]


@pytest.fixture(scope="module")
def tokenizer(moby_texts, tmp_path_factory) -> Tokenizer:
  sentences = [s for text in moby_texts for s in pretraining.split_sentences(text)]
  model_path = tmp_path_factory.mktemp("tokenizer") / "moby.model"
  return train_tokenizer(sentences, vocab_size=400, model_path=str(model_path))


def test_special_tokens_take_ids_0_to_4(tokenizer):
  ids = [tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id]
  assert ids == [0, 1, 2, 3, 4]
  assert tokenizer.num_special == 5
  assert tokenizer.vocab_size == 400
  assert [tokenizer.id_to_piece(i) for i in range(5)] == list(SPECIAL_TOKENS)


def test_raw_text_never_produces_special_ids(tokenizer, moby_texts):
  forged = tokenizer.encode("[MASK] [CLS] x [SEP][PAD] [UNK]")
  assert min(forged) >= tokenizer.num_special
  # Byte fallback: characters never seen in training (Chinese, emoji) still avoid [UNK].
  ids = tokenizer.encode_batch(moby_texts[:20] + ["鲸鱼 🐋"])
  assert min(min(document) for document in ids) >= tokenizer.num_special


def test_encode_batch_matches_encode_and_decode_round_trips(tokenizer, moby_texts):
  texts = [text[:300] for text in moby_texts[:10]]
  assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]
  sentence = "Call me Ishmael. Some years ago, never mind how long precisely."
  assert tokenizer.decode(np.array(tokenizer.encode(sentence))) == sentence


def test_train_tokenizer_leaves_only_the_model(tmp_path, moby_texts):
  model_path = tmp_path / "small.model"
  trained = train_tokenizer(moby_texts[0].split("\n\n"), vocab_size=350, model_path=str(model_path))
  assert os.listdir(tmp_path) == ["small.model"]
  assert Tokenizer.load(str(model_path)).encode("whale ship") == trained.encode("whale ship")


def test_vocab_size_too_large_for_corpus_raises(tmp_path):
  with pytest.raises(ValueError, match="vocab_size=5000"):
    train_tokenizer(["a tiny corpus.", "far too small."],
                    vocab_size=5000,
                    model_path=str(tmp_path / "m"))
  assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Sentences and tokenized documents


def test_split_sentences_english():
  text = 'He said, "Go!" Then he left. Pi is 3.14 here?\n\nNew paragraph (a note.) End'
  assert pretraining.split_sentences(text) == [
      'He said, "Go!"',
      "Then he left.",
      "Pi is 3.14 here?",
      "New paragraph (a note.)",
      "End",
  ]


def test_split_sentences_chinese():
  text = "他说：“好。”然后走了！真的吗？是的；再见\n第二行。"
  assert pretraining.split_sentences(text) == ["他说：“好。”", "然后走了！", "真的吗？", "是的；", "再见", "第二行。"]


def test_tokenize_documents_drops_empty_sentences_and_documents(tokenizer):
  documents = pretraining.tokenize_documents(tokenizer,
                                             ["", " \n\n ", "Call me Ishmael. Some years ago."])
  assert documents == [[tokenizer.encode("Call me Ishmael."), tokenizer.encode("Some years ago.")]]


# ---------------------------------------------------------------------------------------------
# Sentence pairs


@pytest.fixture(scope="module")
def synthetic_documents() -> list[list[list[int]]]:
  return unique_token_documents(seed=0, num_documents=300)


@pytest.fixture(scope="module")
def synthetic_instances(synthetic_documents) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1)
  return pretraining.create_pair_instances(synthetic_documents, rng, 32, 0.1, **SPECIAL_IDS)


def check_row_layout(instances: dict[str, np.ndarray], max_seq_length: int) -> None:
  input_ids, segment_ids = instances["input_ids"], instances["segment_ids"]
  assert input_ids.dtype == segment_ids.dtype == instances["next_sentence_labels"].dtype == np.int32
  num_rows = len(instances["next_sentence_labels"])
  assert input_ids.shape == segment_ids.shape == (num_rows, max_seq_length)
  assert np.all(input_ids[:, 0] == CLS_ID)
  assert np.all((input_ids == CLS_ID).sum(axis=1) == 1)
  assert np.all((input_ids == SEP_ID).sum(axis=1) == 2)
  columns = np.arange(max_seq_length)
  for row, segments in zip(input_ids, segment_ids):
    first_sep, second_sep = np.flatnonzero(row == SEP_ID)
    assert first_sep >= 2 and second_sep >= first_sep + 2  # both segments non-empty
    expected_segments = (columns > first_sep) & (columns <= second_sep)
    np.testing.assert_array_equal(segments, expected_segments)
    assert np.all(row[second_sep + 1:] == PAD_ID)
    assert np.all(row[:second_sep] != PAD_ID)


def test_concatenated_sentences_keep_their_spaces_under_byte_level_bpe():
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  from jaxssl.data import pretrained_tokenizers  # pylint: disable=import-outside-toplevel
  tokens = ["<|endoftext|>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
  bpe = pretrained_tokenizers.ByteLevelBPETokenizer.from_vocab(tokens, [], [0], sep_id=0, pad_id=0)
  [document] = pretraining.tokenize_documents(bpe, ["Call me Ishmael. Some years ago."])
  assert len(document) == 2
  assert bpe.decode([i for sentence in document for i in sentence
                    ]) == ("Call me Ishmael. Some years ago.")


def test_pair_rows_have_bert_layout(synthetic_instances):
  check_row_layout(synthetic_instances, max_seq_length=32)


def test_pair_rows_have_bert_layout_on_real_text(tokenizer, moby_texts):
  documents = pretraining.tokenize_documents(tokenizer, moby_texts[:30])
  instances = pretraining.create_pair_instances(documents, np.random.default_rng(0), 64, 0.1,
                                                **SPECIAL_IDS)
  check_row_layout(instances, max_seq_length=64)
  # Balanced on real text too, though at this tiny vocabulary many sentences fill a row alone
  # (BERT's recipe would give all of those a random B).
  labels = instances["next_sentence_labels"]
  assert len(labels) > 500
  assert abs(labels.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(labels))


def test_next_sentence_labels_are_balanced():
  documents = unique_token_documents(
      seed=0, num_documents=40, num_sentences=(200, 200), max_sentence_length=10)
  instances = pretraining.create_pair_instances(documents, np.random.default_rng(0), 32, 0.0,
                                                **SPECIAL_IDS)
  labels = instances["next_sentence_labels"]
  assert len(labels) > 1500
  assert abs(labels.mean() - 0.5) < 0.04


def test_segment_b_is_the_continuation_or_from_another_document(synthetic_documents,
                                                                synthetic_instances):
  starts = document_starts(synthetic_documents)
  document_of = lambda token: np.searchsorted(starts, token, "right")  # noqa: E731
  max_num_tokens = 32 - 3
  assert 0.3 < synthetic_instances["next_sentence_labels"].mean() < 0.7
  for row, label in zip(synthetic_instances["input_ids"],
                        synthetic_instances["next_sentence_labels"]):
    segment_a, segment_b = split_row(row)
    # Each segment is contiguous text of one document (truncation only trims the ends).
    for segment in (segment_a, segment_b):
      assert np.all(np.diff(segment) == 1)
      assert document_of(segment[0]) == document_of(segment[-1])
    document_a, document_b = document_of(segment_a[0]), document_of(segment_b[0])
    if label == 1:
      assert document_a != document_b
      continue
    assert document_a == document_b and segment_b[0] > segment_a[-1]
    if len(segment_a) + len(segment_b) < max_num_tokens:  # untruncated: nothing in between
      assert segment_b[0] == segment_a[-1] + 1


def test_long_pairs_are_truncated_to_fill_the_row(synthetic_instances):
  used = (synthetic_instances["input_ids"] != PAD_ID).sum(axis=1)
  assert used.max() == 32
  # With short_seq_prob=0.1 most rows aim at the full length; truncation makes many exactly full.
  assert np.mean(used == 32) > 0.3


def test_truncation_matches_berts_token_by_token_loop():

  def bert_truncated_lengths(a_length, b_length, max_num_tokens):
    while a_length + b_length > max_num_tokens:
      if a_length > b_length:
        a_length -= 1
      else:
        b_length -= 1
    return a_length, b_length

  lengths = np.array([(a, b) for a in range(1, 50) for b in range(1, 50)])
  for max_num_tokens in (2, 7, 8, 61):
    zeros = np.zeros(len(lengths), np.int64)
    spans = np.stack([zeros, lengths[:, 0], 100 + zeros, 100 + lengths[:, 1]], axis=1)
    a_start, a_length, b_start, b_length = pretraining._truncate_pairs(
        spans, max_num_tokens, np.random.default_rng(0))
    expected = np.array([bert_truncated_lengths(a, b, max_num_tokens) for a, b in lengths])
    np.testing.assert_array_equal(np.stack([a_length, b_length], 1), expected)
    assert np.all((a_start >= 0) & (a_start + a_length <= lengths[:, 0]))
    assert np.all((b_start >= 100) & (b_start + b_length <= 100 + lengths[:, 1]))


def test_one_document_corpus_pairs_only_real_continuations():
  documents = unique_token_documents(seed=3, num_documents=1, num_sentences=(40, 40))
  instances = pretraining.create_pair_instances(documents, np.random.default_rng(0), 32, 0.1,
                                                **SPECIAL_IDS)
  assert len(instances["next_sentence_labels"]) > 5
  assert np.all(instances["next_sentence_labels"] == 0)
  check_row_layout(instances, max_seq_length=32)


def test_without_nsp_every_b_is_the_continuation(synthetic_documents):
  rng = np.random.default_rng(0)
  instances = pretraining.create_pair_instances(
      synthetic_documents, rng, 32, 0.1, **SPECIAL_IDS, random_next_prob=0.0)
  assert len(instances["next_sentence_labels"]) > 500
  assert np.all(instances["next_sentence_labels"] == 0)
  check_row_layout(instances, max_seq_length=32)


def test_one_sentence_documents_split_the_sentence_for_real_continuations():
  documents = [[list(range(100 * d + 5, 100 * d + 15))] for d in range(200)]
  instances = pretraining.create_pair_instances(documents, np.random.default_rng(0), 32, 0.0,
                                                **SPECIAL_IDS)
  labels = instances["next_sentence_labels"]
  assert len(labels) == 200 and 0.35 < labels.mean() < 0.65
  for row, label in zip(instances["input_ids"], labels):
    segment_a, segment_b = split_row(row)
    same_document = segment_a[0] // 100 == segment_b[0] // 100
    assert same_document == (label == 0)
    if label == 0:  # A and B are the two halves of the one sentence
      np.testing.assert_array_equal(
          np.concatenate([segment_a, segment_b]), documents[row[1] // 100][0])
  one_token = pretraining.create_pair_instances([[[7]]], np.random.default_rng(0), 32, 0.0,
                                                **SPECIAL_IDS)
  assert one_token["input_ids"].shape == (0, 32)


# ---------------------------------------------------------------------------------------------
# Batches


def pair_batches(documents, **overrides) -> batching.StreamBatches:
  options = dict(
      batch_size=8,
      max_seq_length=32,
      short_seq_prob=0.1,
      seed=7,
      window_documents=1000,
      **SPECIAL_IDS)
  return pretraining.pair_batches(documents, **{**options, **overrides})


def take(batches, count: int) -> list[dict[str, np.ndarray]]:
  return [next(batches) for _ in range(count)]


def assert_batches_equal(left, right) -> None:
  assert len(left) == len(right)
  for left_batch, right_batch in zip(left, right):
    assert left_batch.keys() == right_batch.keys()
    for key in left_batch:
      np.testing.assert_array_equal(left_batch[key], right_batch[key])


def test_pair_batches_resume_at_the_next_batch(synthetic_documents):
  documents = synthetic_documents[:60]
  uninterrupted = pair_batches(documents, window_documents=25)  # windows of 25, 25 and 10
  positions = []
  for _ in range(200):
    positions.append(uninterrupted.state())
    next(uninterrupted)
  assert {(p["epoch"], p["window"]) for p in positions} >= {(0, 0), (0, 1), (0, 2), (1, 0)}
  # Resume where the last window of epoch 0 has two batches left: the run crosses into epoch 1.
  last_window = [i for i, p in enumerate(positions) if (p["epoch"], p["window"]) == (0, 2)]
  state = positions[last_window[-2]]
  expected = take(pair_batches(documents, window_documents=25), last_window[-2] + 5)[-5:]

  resumed = pair_batches(documents, window_documents=25)
  resumed.restore(state)
  assert_batches_equal(take(resumed, 5), expected)
  assert resumed.state()["epoch"] == 1


def test_pair_batches_draw_new_pairs_each_epoch(synthetic_documents):
  batches = pair_batches(synthetic_documents[:60])
  first_epoch = [next(batches)]
  while batches.state()["epoch"] == 0:
    first_epoch.append(next(batches))
  second_epoch_first_batch = first_epoch.pop()
  assert batches.state() == {"epoch": 1, "window": 0, "batch": 1}
  assert len(first_epoch) > 5
  assert not np.array_equal(first_epoch[0]["input_ids"], second_epoch_first_batch["input_ids"])
  for batch in first_epoch:
    assert batch["input_ids"].shape == (8, 32)
    np.testing.assert_array_equal(batch["example_weights"], np.ones(8, np.float32))


class RecordingDocuments(list):
  """A corpus that records which documents were read."""

  def __init__(self, documents):
    super().__init__(documents)
    self.read = set()

  def __getitem__(self, index):
    self.read.add(index)
    return super().__getitem__(index)


def test_processes_read_disjoint_documents_that_together_cover_the_corpus(synthetic_documents):
  # Every token of document d is 100 + d, so a row's tokens name the documents it came from.
  documents = [[[100 + d] * len(sentence)
                for sentence in document]
               for d, document in enumerate(synthetic_documents[:40])]
  corpora = [RecordingDocuments(documents) for _ in range(2)]
  per_process = [
      pair_batches(corpus, window_documents=7, process_index=i, process_count=2)
      for i, corpus in enumerate(corpora)
  ]
  seen = [set(), set()]
  for index, batches in enumerate(per_process):
    for batch in take(batches, 40):
      assert batch["input_ids"].shape[0] == 4  # half the global batch of 8
      seen[index].update(int(t) - 100 for t in batch["input_ids"].ravel() if t >= 100)
  assert corpora[0].read.isdisjoint(corpora[1].read)
  assert corpora[0].read | corpora[1].read == set(range(40))
  assert seen[0] <= corpora[0].read and seen[1] <= corpora[1].read
  assert len(seen[0]) > 15 and len(seen[1]) > 15


def test_fixed_batches_are_repeatable_and_keep_every_pair(synthetic_documents):
  documents = synthetic_documents[:20]
  options = dict(batch_size=16, max_seq_length=32, short_seq_prob=0.1, seed=3, **SPECIAL_IDS)
  batches = pretraining.fixed_pair_batches(documents, **options)
  assert_batches_equal(batches, pretraining.fixed_pair_batches(documents, **options))

  rng = np.random.default_rng(3)  # what fixed_pair_batches draws from seed=3
  instances = pretraining.create_pair_instances(documents, rng, 32, 0.1, **SPECIAL_IDS)
  num_pairs = len(instances["input_ids"])
  weights = np.concatenate([batch["example_weights"] for batch in batches])
  assert len(batches) == -(-num_pairs // 16) and weights.sum() == num_pairs
  assert num_pairs % 16, "choose documents whose pairs do not fill whole batches"
  padding_rows = batches[-1]["input_ids"][batches[-1]["example_weights"] == 0]
  assert len(padding_rows) and np.all(padding_rows == PAD_ID)

  halves = [
      pretraining.fixed_pair_batches(documents, **options, process_index=i, process_count=2)
      for i in range(2)
  ]
  np.testing.assert_array_equal(
      np.concatenate([halves[0][-1]["input_ids"], halves[1][-1]["input_ids"]]),
      batches[-1]["input_ids"])
  assert len(pretraining.fixed_pair_batches(documents, **options, num_batches=1)) == 1


def test_too_small_corpora_raise(synthetic_documents):
  with pytest.raises(ValueError, match="batch_size=8"):
    pair_batches([])
  with pytest.raises(ValueError, match="batch_size=10000"):
    pair_batches(synthetic_documents[:5], batch_size=10000)
  with pytest.raises(ValueError, match="raise window_documents"):
    pair_batches(synthetic_documents, window_documents=1)
  with pytest.raises(ValueError, match="process_count=3"):
    pair_batches(synthetic_documents, process_count=3)
  with pytest.raises(ValueError, match="no examples"):
    pretraining.fixed_pair_batches([],
                                   batch_size=8,
                                   max_seq_length=32,
                                   short_seq_prob=0.1,
                                   seed=0,
                                   **SPECIAL_IDS)


# ---------------------------------------------------------------------------------------------
# TFDS corpora


@pytest.fixture(scope="module")
def tfds_data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize(
    "config, files",
    [
        ("moby_dick", ("moby_dick",)),
        ("en", ("moby_dick", "sotu", "web_bible")),
        ("zh", ("libreoffice_help_zh_cn", "libreoffice_help_zh_tw", "peoples_daily_199801")),
    ],
)
def test_builder_splits_are_disjoint_and_cover_every_document(tfds_data_dir, config, files):
  name = f"jaxssl_corpus/{config}"
  train_ids = corpora.load_texts(name, "train", tfds_data_dir, text_key="id")
  validation_ids = corpora.load_texts(name, "validation", tfds_data_dir, text_key="id")
  source_documents = [document for file in files for document in read_corpus_file(file)]

  assert not set(train_ids) & set(validation_ids)
  assert sorted(train_ids + validation_ids) == sorted(
      document["id"] for document in source_documents)
  expected_validation = sum(max(1, round(0.02 * len(read_corpus_file(file)))) for file in files)
  assert len(validation_ids) == expected_validation
  assert "tensorflow" not in sys.modules  # array_record + data sources: no TensorFlow needed

  if config == "en":
    moby_dick = corpora.load_texts("jaxssl_corpus/moby_dick", "validation", tfds_data_dir, "id")
    assert set(moby_dick) <= set(validation_ids)  # a file splits the same in every config
    texts = corpora.load_texts(name, "validation", tfds_data_dir)
    by_id = {document["id"]: document["text"] for document in source_documents}
    assert sorted(texts) == sorted(by_id[i] for i in validation_ids)
    assert len(corpora.load_texts(name, "train[:3]", tfds_data_dir)) == 3


def test_catalog_datasets_use_the_same_path(tmp_path):
  # TFDS's mock serves random records offline; this checks name lookup, text_key and decoding.
  with tfds.testing.mock_data(num_examples=5):
    sst2 = corpora.load_texts("glue/sst2", "train", str(tmp_path), text_key="sentence")
    wikipedia = corpora.load_texts("wikipedia/20230601.en", "train", str(tmp_path))
  assert len(sst2) == len(wikipedia) == 5
  assert all(isinstance(text, str) and text.strip() for text in sst2 + wikipedia)


@pytest.mark.parametrize(
    "name, split, text_key, named",
    [
        ("no_such_dataset", "train", "text", "'no_such_dataset'"),
        ("jaxssl_corpus/fr", "train", "text", "'jaxssl_corpus/fr'"),
        ("jaxssl_corpus/en", "test", "text", "'test'"),
        ("jaxssl_corpus/en", "train", "body", "'body'"),
    ],
)
def test_load_texts_rejects_bad_input(tfds_data_dir, name, split, text_key, named):
  with pytest.raises(ValueError, match=named) as error:
    corpora.load_texts(name, split, tfds_data_dir, text_key=text_key)
  assert "\n" not in str(error.value)


def test_load_texts_rejects_a_corpus_without_text(tmp_path):

  def empty_source(*args, **kwargs):
    del args, kwargs
    return [{"text": b""}, {"text": b"  \n"}]

  with tfds.testing.mock_data(as_data_source_fn=empty_source):
    with pytest.raises(ValueError, match="no non-empty 'text'"):
      corpora.load_texts("lm1b", "train", str(tmp_path))
