"""Exact match and F1 of extractive answers, as SQuAD v1.1's official evaluation computes them.

The functions follow the official ``evaluate-v1.1.py`` script of SQuAD (Rajpurkar et al. 2016,
https://rajpurkar.github.io/SQuAD-explorer/): answers are compared after ``normalize_answer``,
F1 is over whitespace tokens, and a prediction scores the best it gets against any of the
question's reference answers. They are written out here because the ``evaluate`` package
downloads its metric scripts at run time, which jaxssl must not do; unlike the script, which
prints percentages, scores are fractions in [0, 1].
"""

import collections
from collections.abc import Sequence
import re
import string

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  """Lower case, without ASCII punctuation or the articles a/an/the, spaces collapsed."""
  text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(prediction: str, ground_truth: str) -> float:
  prediction_tokens = normalize_answer(prediction).split()
  ground_truth_tokens = normalize_answer(ground_truth).split()
  common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(ground_truth_tokens)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
  """1.0 if the normalized prediction equals any normalized ground truth, else 0.0."""
  return max(
      float(normalize_answer(prediction) == normalize_answer(truth)) for truth in ground_truths)


def f1(prediction: str, ground_truths: Sequence[str]) -> float:
  """The best token-level F1 (bags of normalized words) of the prediction over the ground truths."""
  return max(_token_f1(prediction, truth) for truth in ground_truths)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
  """Mean ``exact_match`` and ``f1`` over questions; ``answers[i]`` are question i's answers."""
  if len(predictions) != len(answers):
    raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions; give one "
                     "prediction per question")
  if not predictions:
    raise ValueError("no predictions to score; give at least one question")
  unanswerable = [index for index, truths in enumerate(answers) if not truths]
  if unanswerable:
    raise ValueError(f"question {unanswerable[0]} has no reference answer; SQuAD v1.1 scores "
                     "only answerable questions, so drop it")
  return {
      "exact_match": sum(map(exact_match, predictions, answers)) / len(predictions),
      "f1": sum(map(f1, predictions, answers)) / len(predictions),
  }
