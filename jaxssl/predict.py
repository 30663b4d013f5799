"""Predictions of a fine-tuned model (jaxssl.finetune) on new records.

    python -m jaxssl.predict --workdir=/tmp/sentiment --input=in.jsonl --output=out.jsonl

One JSON record per input line, by the run's task kind:

- classification, one text: ``{"text": ...}``; pairs: ``{"text_a": ..., "text_b": ...}``
  -> ``{"label": NAME, "probabilities": {NAME: p, ...}}``; a text longer than max_seq_length
  is read in overlapping windows whose logits are averaged;
- regression: the same inputs -> ``{"score": x}``;
- tagging: ``{"words": [...]}`` (or ``{"text": ...}``, split at whitespace)
  -> ``{"words": [...], "tags": [NAME, ...]}``, one tag per word however long the list: it is
  read in overlapping windows (null only for a run trained with ``sliding_windows=False``: a
  word cut by max_seq_length);
- extractive QA: ``{"context": ..., "question": ...}``
  -> ``{"answer": TEXT, "start": i, "end": j}``, with ``context[i:j] == answer``;
- multiple choice: the dataset's own features, COPA's ``{"premise", "question" ("cause" or
  "effect"), "choice1", "choice2"}``, ReCoRD's ``{"passage", "query" (with "@placeholder"),
  "entities": [...]}`` -> ``{"choice": i, "answer": TEXT, "probabilities": [p, ...]}``.

SuperGLUE's wic, wsc and multirc read features records do not carry (word offsets, spans,
answer groups): score their splits with ``Predictor.evaluate``.

An input ``id`` is copied to its prediction. Output lines follow input lines one to one; a
record without the fields its task needs, or with an empty text, is an error naming its line,
and nothing is written.

``Predictor.evaluate`` scores the model on a labelled split of any dataset with the task's
features, e.g. an English sentiment model on Chinese sentences (jaxssl.analysis.transfer).
"""

import dataclasses
import json

import jax
import numpy as np
from absl import flags
from flax import nnx
from tqdm import tqdm

from jaxssl import cli
from jaxssl import files
from jaxssl import metrics as metrics_lib
from jaxssl import workdir as workdir_lib
from jaxssl.core import finetune
from jaxssl.core import steps
from jaxssl.core import trained
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import kinds
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
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} is out of range; set it >= 1.")
    self.config = workdir_lib.read_config(workdir)
    if self.config.get("objective") != "finetune":
      raise ValueError(f"workdir {workdir} holds a {self.config.get('objective')!r} run; "
                       "jaxssl.predict needs a fine-tuning workdir (configs/bert_finetune.py).")
    self.task = catalog.get_task(self.config.task, self.config.get("dataset", ""))
    self.kind = kinds.get(self.task.kind)
    encoder_cfg = workdir_lib.read_model_config(workdir, bert.BertConfig)
    self.label_names = workdir_lib.read_labels(workdir)
    self.tokenizer = workdir_lib.load_tokenizer(workdir)
    self.batch_size = batch_size
    head = self.kind.head
    graphdef, abstract_encoder = nnx.split(
        nnx.eval_shape(lambda: bert.BertEncoder(encoder_cfg, nnx.Rngs(0))))
    num_outputs = self.kind.num_outputs or len(self.label_names)
    abstract_params = {
        "encoder":
            abstract_encoder,
        "head":
            jax.eval_shape(
                lambda: head.init(jax.random.key(0), encoder_cfg.hidden_size, num_outputs)),
    }
    optimizer, _ = steps.make_optimizer(self.config)
    abstract_state = jax.eval_shape(lambda params: steps.fresh_state(params, optimizer),
                                    abstract_params)
    saved = finetune.checkpoints(workdir, self.task)
    self.step, state = trained.restore_on_one_device(workdir, abstract_state, saved.best_step)
    if (saved.latest_step < self.config.num_train_steps and
        not finetune.stopped_early(metrics_lib.read_metrics(workdir))):
      print(f"note: the run in {workdir} stopped at step {saved.latest_step} of "
            f"{self.config.num_train_steps}; predicting with its best checkpoint so far (step "
            f"{self.step}). Rerun its training command to finish it.")
    self.params = state.params
    self.predict_step = finetune.make_predict_step(finetune.make_forward(graphdef, head, 0.0))
    self.decode_options = kinds.DecodeOptions(self.config.n_best, self.config.max_answer_length)

  def examples_of(self, records, where="record"):
    """The records as the task's examples (its dataset's feature names); errors name the record."""
    examples = []
    for number, record in enumerate(records, 1):
      fields = self.kind.record_fields(self.task, record)
      missing = [field for field in fields if field not in record]
      if missing:
        raise ValueError(f"{where} {number} has no {missing[0]!r}; a {self.config.task} model "
                         f"reads records with {list(fields)}.")
      for field in fields:  # "words" and "entities" are lists of strings, the others strings
        value = record[field]
        if field in ("words", "entities"):
          wanted = "a list of strings"
          valid = isinstance(value, list) and all(isinstance(word, str) for word in value)
        else:
          wanted, valid = "a string", isinstance(value, str)
        if not valid:
          raise ValueError(f"{where} {number}: {field!r} is {json.dumps(value)[:40]}; give "
                           f"{wanted}.")
      values = [record[field] for field in fields]
      if any(not value or (isinstance(value, str) and not value.strip()) for value in values):
        raise ValueError(
            f"{where} {number} has an empty {fields[0] if len(fields) == 1 else fields}"
            "; give it text or leave the record out.")
      example = dict(zip(self.task.text_keys, self.kind.record_values(fields, values)))
      if self.task.prepare is not None:
        try:
          self.task.prepare(example)
        except KeyError:
          raise ValueError(f"a {self.config.task} model reads inputs derived from "
                           f"{self.task.dataset}'s own features (word offsets, spans, answer "
                           "groups), which records do not carry; score a split of it with "
                           "jaxssl.predict.Predictor(workdir).evaluate(dataset, split).") from None
      examples.append(example)
    return examples

  def predict(self, records, where="record", progress=False):
    """One prediction dict per record (see the module docstring)."""
    examples = self.examples_of(records, where)
    rows = catalog.encode(
        self.task,
        self.tokenizer,
        examples,
        self.config.max_seq_length,
        with_targets=False,
        doc_stride=self.config.doc_stride,
        sliding_windows=self.config.get("sliding_windows", False),
        max_question_length=self.config.max_question_length,
        sequence_words=self.config.get("sequence_words", "words"),
        where=where)
    if rows.skipped:  # every record was checked above, so only text without a token lands here
      raise ValueError(f"{sum(rows.skipped.values())} {where}s encode to no token "
                       f"({rows.skipped}); give them words the tokenizer knows.")
    with tqdm(
        total=len(rows.example_of_row), desc="predict", unit="row", disable=not progress) as bar:
      outputs, _ = finetune.run_model(self.predict_step, self.params, rows.arrays, self.batch_size,
                                      bar, self.kind.token_outputs)
    predictions = self.kind.decode(self.task, rows, outputs, self.label_names, self.decode_options)
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
    rows = catalog.encode(
        task,
        self.tokenizer,
        examples,
        self.config.max_seq_length,
        num_labels=len(self.label_names) if self.label_names is not None else None,
        doc_stride=self.config.doc_stride,
        sliding_windows=self.config.get("sliding_windows", False),
        max_question_length=self.config.max_question_length,
        sequence_words=self.config.get("sequence_words", "words"),
        where=f"{dataset} {split}")
    outputs, _ = finetune.run_model(
        self.predict_step,
        self.params,
        rows.arrays,
        self.batch_size,
        token_outputs=self.kind.token_outputs)
    return self.kind.score(task, rows, outputs, self.decode_options)


def read_records(path):
  """The JSON objects of a JSON Lines file; a bad line is an error naming it."""
  records = []
  with open(path, "rb") as lines:
    for number, raw_line in enumerate(lines, 1):
      try:
        line = raw_line.decode("utf-8")
      except UnicodeDecodeError as error:
        raise ValueError(f"{path} line {number} is not UTF-8 (byte {error.object[error.start]:#x} "
                         f"at column {error.start + 1}); save the file as UTF-8.") from None
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
  files.write_text(path,
                   "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def main():
  workdir_lib.check_writable(flags.FLAGS.output, "--output", directory=False)
  records = read_records(flags.FLAGS.input)
  predictor = Predictor(flags.FLAGS.workdir, flags.FLAGS.batch_size)
  predictions = predictor.predict(records, f"{flags.FLAGS.input} record", progress=True)
  write_records(flags.FLAGS.output, predictions)
  print(f"Wrote {len(predictions)} predictions to {flags.FLAGS.output}")


if __name__ == "__main__":
  cli.run(main, define_flags)
