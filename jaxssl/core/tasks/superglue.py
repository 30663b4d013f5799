"""SuperGLUE's examples (TFDS ``super_glue/*`` features) as the inputs of jaxssl's task kinds:
each function maps one example to the example plus the features its kind reads, as
``catalog.Task.prepare``. Each task is a sentence pair for a [CLS] head, or one pair per choice;
a word or span the task asks about is marked in its text (the SuperGLUE paper's BERT baseline
read those tokens' vectors instead).
"""

# WiC's word and WSC's noun phrase between these, WSC's pronoun between PRONOUN_MARKS.
WORD_MARKS = ("*", "*")
PRONOUN_MARKS = ("#", "#")


def _marked(text, start, end, marks):
  """``text`` with ``text[start:end]`` between the marks (the positions clipped to the text)."""
  start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
  return f"{text[:start]}{marks[0]}{text[start:end]}{marks[1]}{text[end:]}"


def _word_start(words, index):
  """The character offset of word ``index`` of ``words``, a text split at single spaces."""
  return sum(len(word) + 1 for word in words[:index])


def wic(example):
  """Word in Context: the target word marked in both sentences (character offsets start/end)."""
  return {
      **example, "marked1":
          _marked(example["sentence1"], example["start1"], example["end1"], WORD_MARKS),
      "marked2":
          _marked(example["sentence2"], example["start2"], example["end2"], WORD_MARKS)
  }


def wsc(example):
  """Winograd schema: does the pronoun (span 2) refer to the noun phrase (span 1)? Both marked in
  the text at their word indices."""
  words = example["text"].split(" ")
  spans = sorted([(example["span1_index"], example["span1_text"], WORD_MARKS),
                  (example["span2_index"], example["span2_text"], PRONOUN_MARKS)],
                 reverse=True)  # the later span first, so the earlier one's offset holds
  text = example["text"]
  for index, span, marks in spans:
    start = _word_start(words, index)
    text = _marked(text, start, start + len(span), marks)
  return {**example, "marked": text}


def multirc(example):
  """MultiRC: is this answer to the question about the paragraph right? The question and the
  answer as text B; the question's answers form a group (its exact match)."""
  idx = example["idx"]
  return {
      **example, "question_answer": f"{example['question']} {example['answer']}",
      "group": f"{idx['paragraph']}/{idx['question']}"
  }


def copa(example):
  """Choice of Plausible Alternatives: the premise and its question ("cause" or "effect") as the
  context of each of the two choices."""
  context = f"{example['premise']} What was the {example['question']} of this?"
  choices = [example["choice1"], example["choice2"]]
  return {**example, "choices": [(context, choice) for choice in choices], "choice_names": choices}


def record(example):
  """ReCoRD: the query with each candidate entity in its @placeholder, against the passage; the
  chosen entity is scored against every gold answer text."""
  entities = list(example["entities"])
  return {
      **example, "choices": [(example["passage"], example["query"].replace("@placeholder", entity))
                             for entity in entities],
      "choice_names": entities
  }


def as_rte(example):
  """AX-b's sentence1/sentence2 as RTE's premise/hypothesis (AX-g has RTE's names already): the
  diagnostics are evaluated with a model fine-tuned on RTE."""
  if "sentence1" in example:
    return {**example, "premise": example["sentence1"], "hypothesis": example["sentence2"]}
  return example
