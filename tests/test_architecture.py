"""The shape of the package: imports point one way (programs -> core -> owners of outside
systems), no behaviour switches on a task kind or objective outside the modules that define
them, and a new task kind plugs in at one place."""

import ast
import math
import pathlib

import numpy as np
import pytest

from conftest import ROOT
from test_finetune import small_config
from jaxssl import predict
from jaxssl.core import finetune
from jaxssl.core.tasks import catalog
from jaxssl.core.tasks import heads
from jaxssl.core.tasks import kinds
from jaxssl.data import finetuning

PACKAGE = ROOT / "jaxssl"
# The modules that define the kinds and objectives: the only places that may switch on them.
KIND_DEFINITIONS = ("jaxssl.core.tasks.kinds", "jaxssl.core.objectives")


def module_name(path):
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_program(name):
  """A program is run with ``python -m``: it has a ``__main__`` guard or is a ``__main__``
  module; ``jaxssl.cli`` is the programs' own helper."""
  source = MODULES[name].read_text(encoding="utf-8")
  return name == "jaxssl.cli" or name.endswith("__main__") or "__name__ == \"__main__\"" in source


def imports_of(name):
  """The jaxssl modules ``name`` imports explicitly (``from a.b import c`` names a.b.c when
  that is a module, else a.b), or may import by name (a module that calls ``import_module``
  and spells a jaxssl module's name)."""
  tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith("jaxssl"))
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxssl"):
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        found.add(submodule if submodule in MODULES else node.module)
  if "import_module(" in ast.unparse(tree):  # then any module name it spells may be imported
    found.update(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in MODULES)
  return {module for module in found if module in MODULES} - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_import_graph_has_no_cycle():
  state = {}  # name -> "visiting" | "done"

  def visit(name, path):
    if state.get(name) == "visiting":
      cycle = path[path.index(name):] + [name]
      pytest.fail("import cycle: " + " -> ".join(cycle))
    if state.get(name) == "done":
      return
    state[name] = "visiting"
    for imported in sorted(GRAPH[name]):
      visit(imported, path + [name])
    state[name] = "done"

  for name in sorted(GRAPH):
    visit(name, [])


def test_core_and_owner_modules_import_no_program():
  programs = {name for name in MODULES if is_program(name)}
  assert {"jaxssl.main", "jaxssl.predict", "jaxssl.suite", "jaxssl.cli",
          "jaxssl.convert.__main__"} <= programs
  for name in sorted(set(MODULES) - programs):
    assert not GRAPH[name] & programs, f"{name} imports the program(s) {GRAPH[name] & programs}"


def switch_on_kind(node):
  """Whether ``node`` compares a task kind or objective with a name: ``x.kind == "..."``,
  ``objective in ("bert", ...)``, ``config.get("objective") != "..."``."""
  if not isinstance(node, ast.Compare):
    return False

  def names_kind(expression):
    if isinstance(expression, ast.Attribute):  # numpy's dtype.kind is not a task kind
      return expression.attr in ("kind", "objective") and not (isinstance(
          expression.value, ast.Attribute) and expression.value.attr == "dtype")
    if isinstance(expression, ast.Name):
      return expression.id in ("kind", "objective")
    return (isinstance(expression, ast.Call) and isinstance(expression.func, ast.Attribute) and
            expression.func.attr == "get" and expression.args and
            isinstance(expression.args[0], ast.Constant) and
            expression.args[0].value in ("kind", "objective"))

  def is_name_constant(expression):
    if isinstance(expression, ast.Constant):
      return isinstance(expression.value, str)
    return isinstance(expression, (ast.Tuple, ast.List, ast.Set)) and all(
        isinstance(item, ast.Constant) and isinstance(item.value, str) for item in expression.elts)

  sides = [node.left, *node.comparators]
  return any(map(names_kind, sides)) and any(map(is_name_constant, sides))


def test_no_switch_on_a_kind_or_objective_outside_their_definitions():
  """A comparison that refuses the wrong kind (``if objective != "gpt": raise ...``) decides
  nothing per kind and is allowed; any other comparison with a kind's name is a switch that a
  new kind would have to edit."""
  switches = []
  for name, path in MODULES.items():
    if name.startswith(KIND_DEFINITIONS):
      continue
    tree = ast.parse(path.read_text(encoding="utf-8"))
    refusals = {
        id(node.test) for node in ast.walk(tree) if isinstance(node, ast.If) and
        len(node.body) == 1 and isinstance(node.body[0], ast.Raise) and not node.orelse
    }
    switches += [
        f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
        if switch_on_kind(node) and id(node) not in refusals
    ]
  assert not switches, f"switches on a task kind or objective: {switches}"


def test_the_switch_finder_finds_switches():
  found = lambda source: switch_on_kind(ast.parse(source, mode="eval").body)
  assert found('task.kind == "regression"') and found('objective in ("bert", "gpt")')
  assert found('config.get("objective") != "finetune"')
  assert not found("kind.num_outputs == 2") and not found("x == 'regression'")
  assert not found('value.dtype.kind in "biuf"')


# A toy kind, defined here alone: a text -> whether it has an even number of words. The kind
# computes its own targets, so it reads any dataset with a "text" feature.
def _encode_parity(task, tokenizer, example, options):
  text = example[task.text_keys[0]]
  if not text.strip():
    raise kinds.Skip("empty text")
  row, cut = finetuning.encode_ids(tokenizer, tokenizer.encode(text), None, options.max_seq_length)
  if options.with_targets:
    row["labels"] = np.int32(len(text.split()) % 2 == 0)
  return [row], cut


def _parity_accuracy(task, rows, outputs, options):
  del task, options
  return {"accuracy": float(np.mean(np.argmax(outputs, -1) == rows.arrays["labels"]))}


def _parity_baseline(task, train_rows, dev_rows):
  del task
  majority = np.bincount(train_rows.arrays["labels"], minlength=2).argmax()
  return {"majority_accuracy": float(np.mean(dev_rows.arrays["labels"] == majority))}


TOY_KIND = kinds.TaskKind(
    head=heads.CLASSIFICATION,
    num_outputs=2,
    encode_example=_encode_parity,
    side_keys=(),
    score=_parity_accuracy,
    baseline=_parity_baseline,
    record_fields=lambda task, record: ("text",),
    decode=lambda task, rows, outputs, label_names, options: [{
        "even_words": bool(np.argmax(row))
    } for row in outputs])


@pytest.mark.slow
def test_a_new_task_kind_plugs_in_at_one_place(monkeypatch, tiny_encoder, tfds_dir, tmp_path):
  monkeypatch.setitem(kinds.KINDS, "word_parity", TOY_KIND)
  monkeypatch.setitem(
      catalog.TASKS, "word_parity",
      catalog.Task("jaxssl_sentiment/movie_reviews", "word_parity", ("text",), "label",
                   ("accuracy",)))
  config = small_config(
      tfds_dir,
      "word_parity",
      init_from=tiny_encoder,
      train_split="train[:64]",
      eval_split="validation[:32]",
      max_seq_length=48,
      batch_size=8,
      num_train_steps=3,
      warmup_steps=1,
      log_every=3,
      eval_every=3)
  dev = finetune.run(config, str(tmp_path / "run"))
  assert math.isfinite(dev["loss"]) and 0 <= dev["accuracy"] <= 1
  assert 0.5 <= dev["majority_accuracy"] <= 1
  predictions = predict.Predictor(str(tmp_path / "run")).predict([{"text": "Call me Ishmael"}])
  assert predictions[0].keys() == {"even_words"}
  assert pathlib.Path(tmp_path, "run", "checkpoints").is_dir()
