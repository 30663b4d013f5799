"""Tasks' encoding, scoring and baselines on hand-built examples and outputs (no model)."""

import numpy as np
import pytest
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds

CLS, SEP, PAD = 1, 2, 0
TASKS = catalog.TASKS


class WordTokenizer:
  """One id per whitespace-separated word (10 + its length), offsets in characters."""
  cls_id, sep_id, pad_id = CLS, SEP, PAD

  def encode(self, text):
    return [10 + len(word) for word in text.split()]

  def encode_batch(self, texts):
    return [self.encode(text) for text in texts]

  def encode_with_offsets(self, text):
    ids, offsets, position = [], [], 0
    for word in text.split():
      start = text.index(word, position)
      ids.append(10 + len(word))
      offsets.append((start, start + len(word)))
      position = start + len(word)
    return ids, offsets


def test_empty_texts_and_words_are_counted_skips_not_silent_drops():
  examples = [{
      "text": "good film",
      "label": 1
  }, {
      "text": " ",
      "label": 0
  }, {
      "text": "",
      "label": 0
  }]
  rows = catalog.encode(TASKS["sentiment"], WordTokenizer(), examples, 8, num_labels=2)
  assert rows.skipped == {"empty text": 2}
  assert rows.arrays["input_ids"].shape == (1, 8) and list(rows.arrays["labels"]) == [1]
  tagged = [{"tokens": [], "tags": []}, {"tokens": ["a", "b"], "tags": [3, 4]}]
  rows = catalog.encode(TASKS["pos"], WordTokenizer(), tagged, 8, num_labels=12)
  assert rows.skipped == {"no words": 1} and len(rows.examples) == 1


def test_nothing_usable_is_an_error():
  with pytest.raises(ValueError, match=r"none of the 1 examples could be used .*empty text"):
    catalog.encode(TASKS["sentiment"], WordTokenizer(), [{"text": "", "label": 0}], 8)


def test_a_label_outside_the_label_set_names_the_example():
  examples = [{"sentence": "fine", "label": 1}, {"sentence": "hidden test label", "label": -1}]
  with pytest.raises(ValueError, match=r"glue/sst2 test example 1 has label -1 outside .*0\.\.1"):
    catalog.encode(
        TASKS["sst2"], WordTokenizer(), examples, 8, num_labels=2, where="glue/sst2 test")
  tagged = [{"tokens": ["a", "b"], "tags": [3, 12]}]
  with pytest.raises(ValueError, match=r"has label 12 outside the label set 0\.\.11"):
    catalog.encode(TASKS["pos"], WordTokenizer(), tagged, 8, num_labels=12)


def test_a_dataset_without_the_tasks_features_is_one_line():
  with pytest.raises(ValueError, match=r"tweets train examples have no 'sentence1' feature"):
    catalog.encode(
        TASKS["mrpc"], WordTokenizer(), [{
            "text": "a",
            "label": 1
        }], 8, where="tweets train")


def test_truncated_examples_are_counted():
  examples = [{"text": "a b c d e f g", "label": 1}, {"text": "a b", "label": 0}]
  rows = catalog.encode(TASKS["sentiment"], WordTokenizer(), examples, 6, num_labels=2)
  assert rows.truncated == 1 and not rows.skipped
  pairs = [{"sentence1": "a b c", "sentence2": "d e f", "label": 1}]
  assert catalog.encode(TASKS["paraphrase"], WordTokenizer(), pairs, 7).truncated == 1


def test_tags_go_to_each_words_first_token_and_predictions_come_back_per_word():
  examples = [{"tokens": ["The", "whale", "sank"], "tags": [4, 5, 9]}]
  rows = catalog.encode(TASKS["pos"], WordTokenizer(), examples, 4, num_labels=12)
  # [CLS] The whale sank [SEP] does not fit in 4: "sank" is cut.
  assert rows.truncated == 1
  np.testing.assert_array_equal(rows.arrays["labels"][0], [-100, 4, 5, -100])
  np.testing.assert_array_equal(rows.side["word_index"][0], [-1, 0, 1, -1])
  logits = np.zeros((1, 4, 12))
  logits[0, 1, 4] = logits[0, 2, 7] = 1.0  # right on "The", wrong on "whale"
  assert catalog.score(TASKS["pos"], rows, logits) == {"accuracy": 0.5}


def test_classification_and_regression_scores():
  examples = [{"text": "x", "label": label} for label in (0, 1, 1, 0)]
  rows = catalog.encode(TASKS["sentiment"], WordTokenizer(), examples, 4, num_labels=2)
  logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # 3 of 4 right
  scores = catalog.score(TASKS["sentiment"], rows, logits)
  assert scores["accuracy"] == 0.75 and scores["f1"] == pytest.approx(2 / 3)
  ratings = [{"text": "x", "rating": rating} for rating in (1.0, 2.0, 3.0)]
  rows = catalog.encode(TASKS["rating"], WordTokenizer(), ratings, 4)
  assert rows.arrays["labels"].dtype == np.float32
  scores = catalog.score(TASKS["rating"], rows, np.array([0.5, 0.7, 3.0]))
  # Pearson by hand: cov 2.5 / (sqrt(2) * sqrt(3.86)); ranks agree exactly.
  assert scores["spearman"] == pytest.approx(1.0)
  assert scores["pearson"] == pytest.approx(2.5 / np.sqrt(2 * 3.86))


def test_baselines_ignore_the_text():

  def rows_of(task, labels, key="label"):
    return catalog.encode(TASKS[task], WordTokenizer(), [{
        "text": "x",
        key: label
    } for label in labels], 4)

  majority = catalog.baseline(TASKS["sentiment"], rows_of("sentiment", [1, 1, 0]),
                              rows_of("sentiment", [1, 0, 0, 0]))
  assert majority["majority_accuracy"] == 0.25 and majority["majority_f1"] == 0.4
  mean = catalog.baseline(TASKS["rating"], rows_of("rating", [1.0, 3.0], "rating"),
                          rows_of("rating", [2.0, 4.0], "rating"))
  assert mean == {"mean_prediction_mse": 2.0}


def qa_example(context, answer, question="Who sailed?"):
  return {
      "question": question,
      "context": context,
      "answers": {
          "text": [answer],
          "answer_start": [context.index(answer) if answer in context else 0]
      }
  }


def test_question_answering_windows_targets_and_decoding():
  context = "w0 w1 w2 w3 w4 Ishmael w6 w7 w8 w9"
  examples = [qa_example(context, "Ishmael"), qa_example("Call me Ahab", "Ahab")]
  # [CLS] q q [SEP] 5 context tokens [SEP]: the 10-token context needs 3 windows at stride 3.
  rows = catalog.encode(TASKS["qa"], WordTokenizer(), examples, 10, doc_stride=3)
  assert list(rows.example_of_row) == [0, 0, 0, 1]
  # Only the second window (context tokens 3..7) holds "Ishmael"; the others point at [CLS].
  assert list(rows.arrays["start_positions"]) == [0, 6, 0, 6]
  assert list(rows.arrays["end_positions"]) == [0, 6, 0, 6]
  start_logits, end_logits = np.zeros((4, 10)), np.zeros((4, 10))
  start_logits[1, 6] = end_logits[1, 6] = 4.0  # "Ishmael" in the second window
  start_logits[2, 4], end_logits[2, 5] = 1.0, 1.0  # a weaker "w6 w7" in the third
  start_logits[3, 4] = end_logits[3, 4] = 2.0  # "Call" for the second example
  spans = kinds.answer_spans(TASKS["qa"], rows, (start_logits, end_logits),
                             kinds.DecodeOptions(n_best=5, max_answer_length=30))
  assert spans == [("Ishmael", 15, 22), ("Call", 0, 4)]
  scores = catalog.score(TASKS["qa"], rows, (start_logits, end_logits))
  assert scores == {"exact_match": 0.5, "f1": 0.5}


def test_question_answering_skips_answers_not_at_their_offset():
  bad = qa_example("Call me Ishmael", "Ishmael")
  bad["answers"]["answer_start"] = [0]
  rows = catalog.encode(TASKS["qa"], WordTokenizer(), [bad, qa_example("a b", "b")], 16)
  assert rows.skipped == {"answer not at its offset in the context": 1}
  assert len(rows.examples) == 1


def test_question_answering_baseline_is_the_most_frequent_answer():
  train = [qa_example("Moses went up", "Moses")] * 2 + [qa_example("Aaron spoke", "Aaron")]
  dev = [qa_example("Moses and Aaron", "Moses"), qa_example("Aaron and Moses", "Aaron")]
  encode = lambda examples: catalog.encode(TASKS["qa"], WordTokenizer(), examples, 16)
  assert catalog.baseline(TASKS["qa"], encode(train), encode(dev)) == {
      "majority_answer_exact_match": 0.5,
      "majority_answer_f1": 0.5
  }


def test_unknown_task_and_dataset_override():
  with pytest.raises(ValueError, match=r"task='nope' is not a fine-tuning task; use one of"):
    catalog.get_task("nope")
  task = catalog.get_task("sentiment", "jaxssl_sentiment/tweets")
  assert task.dataset == "jaxssl_sentiment/tweets" and task.kind == "classification"
  assert set(catalog.OFFLINE_TASKS) <= set(TASKS)
