"""Sliding windows: long tagged word lists and long classified texts become overlapping rows,
nothing is cut, and predictions come back per word (per text) from the windows."""

import numpy as np

from jaxssl import predict
from jaxssl.core import finetune
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
from jaxssl.data import corpora
from test_finetune import small_config
from test_finetune_tasks import WordTokenizer

TASKS = catalog.TASKS


def test_every_word_is_tagged_from_the_window_where_it_has_most_context():
  words = [f"w{i}" for i in range(10)]
  examples = [{"tokens": words, "tags": list(range(10))}]
  # Rows of 6 hold windows of 4 words, starting 2 apart: words 0-3, 2-5, 4-7, 6-9.
  rows = catalog.encode(
      TASKS["pos"], WordTokenizer(), examples, 6, num_labels=12, doc_stride=2, sliding_windows=True)
  assert rows.truncated == 0 and len(rows.example_of_row) == 4
  np.testing.assert_array_equal(rows.side["word_index"][1], [-1, 2, 3, 4, 5, -1])
  np.testing.assert_array_equal(rows.arrays["labels"][3], [-100, 6, 7, 8, 9, -100])
  logits = np.zeros((4, 6, 12))
  for row in range(4):
    logits[row, :, row] = 1.0  # every row tags every word with its own number
  # By hand: a word is read from the window where fewer of its neighbours are cut off on its
  # nearer side, the first such window on a tie.
  expected = [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
  decoded = kinds.get("token_classification").decode(TASKS["pos"], rows, logits,
                                                     [f"t{i}" for i in range(12)], None)
  assert decoded[0]["tags"] == [f"t{i}" for i in expected]
  accuracy = catalog.score(TASKS["pos"], rows, logits)["accuracy"]
  assert accuracy == np.mean(np.array(expected) == np.arange(10))
  unwindowed = catalog.encode(TASKS["pos"], WordTokenizer(), examples, 6, num_labels=12)
  assert unwindowed.truncated == 1 and len(unwindowed.example_of_row) == 1


def test_a_long_text_is_classified_by_the_mean_of_its_windows():
  examples = [{"text": " ".join(["a"] * 10), "label": 1}, {"text": "a b", "label": 0}]
  rows = catalog.encode(
      TASKS["sentiment"],
      WordTokenizer(),
      examples,
      6,
      num_labels=2,
      doc_stride=3,
      sliding_windows=True)
  # Windows of 4 tokens, 3 apart: 0-3, 3-6, 6-9 of the long text; the short one is one row.
  np.testing.assert_array_equal(rows.example_of_row, [0, 0, 0, 1])
  assert rows.truncated == 0
  np.testing.assert_array_equal(rows.arrays["labels"], [1, 1, 1, 0])
  logits = np.array([[3.0, 0.0], [0.0, 2.0], [0.0, 2.0], [1.0, 0.0]])  # windows' mean: [1, 4/3]
  assert catalog.score(TASKS["sentiment"], rows, logits)["accuracy"] == 1.0
  decoded = kinds.get("classification").decode(TASKS["sentiment"], rows, logits, ["neg", "pos"],
                                               None)
  expected = np.exp([1.0, 4 / 3]) / np.exp([1.0, 4 / 3]).sum()
  np.testing.assert_allclose(list(decoded[0]["probabilities"].values()), expected)
  baseline = catalog.baseline(TASKS["sentiment"], rows, rows)
  assert baseline["majority_accuracy"] == 0.5  # per example, not per window


def test_of_a_long_pair_the_first_text_keeps_half_the_row_and_the_second_is_windowed():
  pairs = [{"sentence1": "a b c", "sentence2": " ".join(["x"] * 6), "label": 1}]
  rows = catalog.encode(
      TASKS["paraphrase"],
      WordTokenizer(),
      pairs,
      8,
      num_labels=2,
      doc_stride=2,
      sliding_windows=True)
  # 5 text tokens per row: A keeps 2 (1 cut), B windows of 3 tokens at 0, 2, 4 of its 6.
  assert rows.truncated == 1 and len(rows.example_of_row) == 3
  np.testing.assert_array_equal(rows.arrays["segment_ids"][0], [0, 0, 0, 0, 1, 1, 1, 1])


def finetuned(tfds_dir, tiny_encoder, workdir, task):
  config = small_config(
      tfds_dir,
      task,
      init_from=tiny_encoder,
      train_split="train[:32]",
      eval_split="validation[:8]",
      max_seq_length=32,
      doc_stride=16,
      batch_size=8,
      num_train_steps=2,
      learning_rate=1e-3,
      log_every=1,
      eval_every=2,
      checkpoint_every=2)
  finetune.run(config, str(workdir))
  return predict.Predictor(str(workdir))


def windows_by_hand(predictor, ids, window, stride):
  """Each window of ``ids`` run alone through the model: [(first token, logits (n + 2, ...))]."""
  tokenizer, results, start = predictor.tokenizer, [], 0
  while True:
    part = ids[start:start + window]
    row = np.array([[tokenizer.cls_id, *part, tokenizer.sep_id]], np.int32)
    batch = {
        "input_ids": row,
        "segment_ids": np.zeros_like(row),
        "attention_mask": np.ones_like(row)
    }
    outputs, _ = predictor.predict_step(predictor.params, batch)
    results.append((start, np.asarray(outputs)[0]))
    if start + window >= len(ids):
      return results
    start += stride


def test_predict_tags_every_word_of_a_1000_word_document_as_its_windows_do(
    tfds_dir, tiny_encoder, tmp_path):
  predictor = finetuned(tfds_dir, tiny_encoder, tmp_path / "pos", "pos")
  words = []
  for example in corpora.load_examples("jaxssl_pos/brown", "validation[:200]", tfds_dir):
    words += list(example["tokens"])
  words = words[:1000]
  assert len(words) == 1000
  [prediction] = predictor.predict([{"words": words}])
  assert prediction["words"] == words and None not in prediction["tags"]
  # The reference: each word's tag from the window (30 tokens, 16 apart) where its first
  # sub-token has the most tokens on its nearer side.
  word_ids = predictor.tokenizer.encode_batch(words)
  firsts = np.cumsum([len(ids) for ids in word_ids]) - [len(ids) for ids in word_ids]
  ids = [i for word in word_ids for i in word]
  assert len(ids) > 1000
  best = {}
  for start, logits in windows_by_hand(predictor, ids, 30, 16):
    tokens = len(logits) - 2
    for word, first in enumerate(firsts):
      if len(word_ids[word]) and start <= first < start + tokens:
        context = min(first - start, start + tokens - 1 - first)
        if word not in best or context > best[word][0]:
          best[word] = (context, predictor.label_names[int(np.argmax(logits[1 + first - start]))])
  assert len(best) == 1000
  assert prediction["tags"] == [best[word][1] for word in range(1000)]


def test_predict_classifies_a_2000_token_text_by_the_mean_of_its_windows(
    tfds_dir, tiny_encoder, tmp_path):
  predictor = finetuned(tfds_dir, tiny_encoder, tmp_path / "sentiment", "sentiment")
  sentences = [
      example["text"] for example in corpora.load_examples("jaxssl_sentiment/movie_reviews",
                                                           "train[:400]", tfds_dir)
  ]
  text, count = "", 0
  while len(predictor.tokenizer.encode(text)) < 2000:
    text += sentences[count] + " "
    count += 1
  ids = predictor.tokenizer.encode(text)
  [prediction] = predictor.predict([{"text": text}])
  logits = np.mean([out for _, out in windows_by_hand(predictor, ids, 30, 16)], axis=0)
  probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_allclose([prediction["probabilities"][name] for name in predictor.label_names],
                             probabilities,
                             atol=1e-5)
  assert len(ids) >= 2000
