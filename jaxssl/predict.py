"""Predictions of a fine-tuned model (jaxssl.finetune) on new records.

    python -m jaxssl.predict --workdir=/tmp/sentiment --input=in.jsonl --output=out.jsonl

One JSON record per input line, by the run's task kind:

- classification, one text: ``{"text": ...}``; pairs: ``{"text_a": ..., "text_b": ...}``
  -> ``{"label": NAME, "probabilities": {NAME: p, ...}}``;
- regression: the same inputs -> ``{"score": x}``;
- tagging: ``{"words": [...]}`` (or ``{"text": ...}``, split at whitespace)
  -> ``{"words": [...], "tags": [NAME or null, ...]}`` (null: a word cut by max_seq_length);
- extractive QA: ``{"context": ..., "question": ...}``
  -> ``{"answer": TEXT, "start": i, "end": j}``, with ``context[i:j] == answer``.

An input ``id`` is copied to its prediction. Output lines follow input lines one to one; a
record without the fields its task needs, or with an empty text, is an error naming its line,
and nothing is written.

``Predictor.evaluate`` scores the model on a labelled split of any dataset with the task's
features, e.g. an English sentiment model on Chinese sentences (jaxssl.analysis.transfer).
"""

import dataclasses
import json
import os
import sys

import jax
import numpy as np
from absl import app
from absl import flags
from absl import logging
from flax import nnx
from tqdm import tqdm

from jaxssl import checkpoint
from jaxssl import finetune
from jaxssl import finetune_tasks
from jaxssl import heads
from jaxssl import train
from jaxssl.data import corpora
from jaxssl.models import bert


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "A fine-tuning workdir (jaxssl.main with bert_finetune).")
  flags.DEFINE_string("input", None, "JSON Lines file of records to predict.")
  flags.DEFINE_string("output", None, "JSON Lines file to write, one prediction per record.")
  flags.DEFINE_integer("batch_size", 32, "Rows per forward pass.")
  flags.mark_flags_as_required(["workdir", "input", "output"])


class Predictor:
  """A fine-tuned model loaded from its workdir: ``predict(records) -> predictions``."""

  def __init__(self, workdir, batch_size=32):
    self.config = train.load_run_config(workdir)
    if self.config.get("objective") != "finetune":
      raise ValueError(f"workdir {workdir} holds a {self.config.get('objective')!r} run; "
                       "jaxssl.predict needs a fine-tuning workdir (configs/bert_finetune.py).")
    self.task = finetune_tasks.get_task(self.config.task, self.config.get("dataset", ""))
    with open(os.path.join(workdir, train.MODEL_CONFIG_FILE), encoding="utf-8") as f:
      encoder_cfg = bert.BertConfig(**json.load(f))
    with open(os.path.join(workdir, finetune.LABELS_FILE), encoding="utf-8") as f:
      self.label_names = json.load(f)
    self.tokenizer = train.load_workdir_tokenizer(workdir)
    self.batch_size = batch_size
    head = heads.HEADS[self.task.kind]
    graphdef, abstract_encoder = nnx.split(
        nnx.eval_shape(lambda: bert.BertEncoder(encoder_cfg, nnx.Rngs(0))))
    num_outputs = len(self.label_names or []) or finetune.HEAD_OUTPUTS[self.task.kind]
    abstract_params = {
        "encoder":
            abstract_encoder,
        "head":
            jax.eval_shape(
                lambda: head.init(jax.random.key(0), encoder_cfg.hidden_size, num_outputs)),
    }
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpointer = checkpoint.Checkpointer(workdir, keep=1)
    step = checkpointer.latest_step()
    if step is None:
      raise ValueError(f"workdir {workdir} has no fine-tuned parameters yet; let its run finish.")
    self.params, _ = checkpointer.restore(
        step, train.placed(abstract_params, jax.tree.map(lambda _: device, abstract_params)))
    checkpointer.close()
    forward = finetune.make_forward(graphdef, head, 0.0)
    self.predict_step = jax.jit(lambda params, batch: (forward(params, batch, None), {}))

  def examples_of(self, records, where="record"):
    """The records as the task's examples (its dataset's feature names); errors name the record."""
    kind, keys = self.task.kind, self.task.text_keys
    examples = []
    for number, record in enumerate(records, 1):
      if kind == "question_answering":
        fields = ("question", "context")
      elif kind == "token_classification":
        fields = ("words",) if "words" in record else ("text",)
      else:
        fields = ("text",) if len(keys) == 1 else ("text_a", "text_b")
      missing = [field for field in fields if not isinstance(record.get(field), (str, list))]
      if missing:
        raise ValueError(f"{where} {number} has no {missing[0]!r}; a {self.config.task} model "
                         f"reads records with {list(fields)}.")
      values = [record[field] for field in fields]
      if fields == ("text",) and kind == "token_classification":
        values = [record["text"].split()]
      if any(not value or (isinstance(value, str) and not value.strip()) for value in values):
        raise ValueError(
            f"{where} {number} has an empty {fields[0] if len(fields) == 1 else fields}"
            "; give it text or leave the record out.")
      examples.append(dict(zip(keys, values)))
    return examples

  def predict(self, records, where="record", progress=False):
    """One prediction dict per record (see the module docstring)."""
    examples = self.examples_of(records, where)
    rows = finetune_tasks.encode(
        self.task,
        self.tokenizer,
        examples,
        self.config.max_seq_length,
        with_targets=False,
        doc_stride=self.config.doc_stride,
        max_question_length=self.config.max_question_length,
        where=where)
    if rows.skipped:  # every record was checked above, so only text without a token lands here
      raise ValueError(f"{sum(rows.skipped.values())} {where}s encode to no token "
                       f"({rows.skipped}); give them words the tokenizer knows.")
    with tqdm(
        total=len(rows.example_of_row), desc="predict", unit="row", disable=not progress) as bar:
      outputs, _ = finetune.run_model(self.predict_step, self.params, rows.arrays, self.batch_size,
                                      bar)
    predictions = self._decode(rows, outputs)
    for record, prediction in zip(records, predictions):
      if "id" in record:
        prediction["id"] = record["id"]
    return predictions

  def evaluate(self, dataset, split, data_dir=None):
    """The run's task metrics on the labelled ``split`` of ``dataset``, which need not be the
    one it was fine-tuned on (e.g. an English sentiment model on 'jaxssl_sentiment_zh': zero-shot
    cross-lingual transfer). Class labels are matched to the model's by name, not by number."""
    task = dataclasses.replace(self.task, dataset=dataset)
    examples = corpora.load_examples(dataset, split, data_dir)
    if self.label_names is not None:
      names = corpora.label_names(dataset, data_dir, task.label_key)
      unknown = sorted(set(names) - set(self.label_names))
      if unknown:
        raise ValueError(f"{dataset} has labels {unknown} that the model does not predict "
                         f"({self.label_names}); evaluate on a dataset with its label set.")
      model_label = np.array([self.label_names.index(name) for name in names])
      examples = [{
          **example, task.label_key: model_label[example[task.label_key]].tolist()
      } for example in examples]
    rows = finetune_tasks.encode(
        task,
        self.tokenizer,
        examples,
        self.config.max_seq_length,
        num_labels=len(self.label_names) if self.label_names is not None else None,
        doc_stride=self.config.doc_stride,
        max_question_length=self.config.max_question_length,
        where=f"{dataset} {split}")
    outputs, _ = finetune.run_model(self.predict_step, self.params, rows.arrays, self.batch_size)
    return finetune_tasks.score(task, rows, outputs, self.config.n_best,
                                self.config.max_answer_length)

  def _decode(self, rows, outputs):
    kind = self.task.kind
    if kind == "question_answering":
      spans = finetune_tasks.answer_spans(self.task, rows, outputs, self.config.n_best,
                                          self.config.max_answer_length)
      return [{"answer": text, "start": start, "end": end} for text, start, end in spans]
    if kind == "regression":
      return [{"score": float(value)} for value in outputs]
    if kind == "classification":
      probabilities = jax.nn.softmax(outputs, axis=-1)  # (N, C)
      return [{
          "label": self.label_names[int(np.argmax(p))],
          "probabilities": dict(zip(self.label_names, map(float, p)))
      } for p in np.asarray(probabilities)]
    tag_ids = finetune_tasks.predicted_classes(self.task, outputs)  # (N, L)
    predictions = []
    for example, word_index, row_tags in zip(rows.examples, rows.word_index, tag_ids):
      words = list(example[self.task.text_keys[0]])
      tags = [None] * len(words)
      for position in np.flatnonzero(word_index >= 0):
        tags[word_index[position]] = self.label_names[row_tags[position]]
      predictions.append({"words": words, "tags": tags})
    return predictions


def read_records(path):
  """The JSON objects of a JSON Lines file; a bad line is an error naming it."""
  records = []
  with open(path, encoding="utf-8") as lines:
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{path} line {number} is not JSON ({error.msg}); write one JSON "
                         "object per line.") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path} line {number} is not a JSON object; write one object per line.")
      records.append(record)
  if not records:
    raise ValueError(f"{path} holds no records; write one JSON object per line.")
  return records


def write_records(path, records):
  """Writes JSON Lines all at once (a temporary file renamed), so a failed run leaves none."""
  temporary = path + ".tmp"
  with open(temporary, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
  os.replace(temporary, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    records = read_records(flags.FLAGS.input)
    predictor = Predictor(flags.FLAGS.workdir, flags.FLAGS.batch_size)
    predictions = predictor.predict(records, f"{flags.FLAGS.input} record", progress=True)
    write_records(flags.FLAGS.output, predictions)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"Wrote {len(predictions)} predictions to {flags.FLAGS.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
