"""Shared fixtures: a prepared TFDS dir, a small tokenizer and tiny BERT run configs."""

import json
import os
import pathlib
import subprocess
import sys
import time

import filelock
import pytest

from jaxssl.cli import load_config
from jaxssl.core import pretrain

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL_CORPUS = "jaxssl_corpus/moby_dick"  # 138 chapters, 1.2 MB: quick to tokenize.
# Tests check numbers, not speed: XLA:CPU compiles in about half the time without LLVM's
# optimisations, and compiling is most of a tiny run. Set for this process before JAX starts;
# subprocesses inherit it, and one that needs more flags extends it (fake_devices), since runs
# whose numbers are compared must compile alike.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


def fake_devices(count):
  """XLA_FLAGS for a subprocess that sees ``count`` CPU devices, compiled as every test compiles."""
  return f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={count}"


def shared_across_workers(tmp_path_factory, worker_id, name, build):
  """``build(directory)``'s JSON result, built once per test session: by the first pytest-xdist
  worker that asks (the others wait, then read it) rather than by each worker."""
  if worker_id == "master":  # not distributed
    return build(tmp_path_factory.mktemp(name))
  root = tmp_path_factory.getbasetemp().parent  # the session's directory, shared by the workers
  result = root / f"{name}.json"
  with filelock.FileLock(str(root / f"{name}.lock")):
    if not result.is_file():
      directory = root / name
      directory.mkdir(exist_ok=True)
      result.write_text(json.dumps(build(directory)))
  return json.loads(result.read_text())


@pytest.fixture(scope="session", autouse=True)
def prepared_cache(tmp_path_factory):
  """Splits tokenized by test runs go to this session's directory, not the user's ~/.cache
  (subprocesses inherit it)."""
  os.environ["JAXSSL_CACHE"] = str(tmp_path_factory.mktemp("jaxssl_cache"))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def tokenizer_path(tfds_dir, tmp_path_factory):
  from jaxssl.data import corpora, pretraining, tokenizer
  texts = corpora.load_texts(SMALL_CORPUS, "train", tfds_dir)
  path = str(tmp_path_factory.mktemp("tokenizer") / "tokenizer.model")
  tokenizer.train_tokenizer((s for t in texts for s in pretraining.split_sentences(t)), 1000, path)
  return path


@pytest.fixture(scope="session")
def tiny_encoder(tfds_dir, tokenizer_path, tmp_path_factory, worker_id):
  """A 2-step jaxssl BERT pretraining workdir (read-only): an encoder that fine-tunes in seconds."""

  def build(workdir):
    config = load_config("bert_pretrain", "size=tiny")
    config.update(
        dataset=SMALL_CORPUS,
        data_dir=tfds_dir,
        tokenizer=tokenizer_path,
        vocab_size=1000,
        max_seq_length=64,
        max_predictions_per_seq=10,
        batch_size=8,
        num_train_steps=2,
        warmup_steps=1,
        checkpoint_every=2,
        eval_batches=1,
        probe_tasks="")
    pretrain.run(config, str(workdir))
    return str(workdir)

  return shared_across_workers(tmp_path_factory, worker_id, "tiny_bert", build)


@pytest.fixture(scope="session")
def random_minilm_encoder():
  """(random 2-layer BertEncoder, MiniLM's WordPiece tokenizer): a real vocabulary on a model
  that runs in milliseconds."""
  from flax import nnx
  from jaxssl import pretrained
  from jaxssl.data import pretrained_tokenizers
  from jaxssl.models import bert
  tokenizer = pretrained_tokenizers.WordPieceTokenizer.load(pretrained.resolve("minilm"))
  cfg = bert.BertConfig(
      vocab_size=tokenizer.vocab_size,
      hidden_size=32,
      num_layers=2,
      num_heads=2,
      mlp_dim=64,
      max_position=64,
      dropout_rate=0.0,
      attention_dropout_rate=0.0)
  return bert.BertEncoder(cfg, nnx.Rngs(0)), tokenizer


@pytest.fixture
def tiny_config(tfds_dir, tokenizer_path):
  return small_bert_config(tfds_dir, tokenizer_path)


def small_bert_config(tfds_dir, tokenizer_path):
  """A BERT run small enough for a few seconds of CPU, on the Moby Dick corpus."""
  config = load_config("bert_pretrain", "size=tiny")
  config.dataset = SMALL_CORPUS
  config.data_dir = tfds_dir
  config.tokenizer = tokenizer_path
  config.vocab_size = 1000
  config.max_seq_length = 64
  config.max_predictions_per_seq = 10
  config.batch_size = 16
  config.num_train_steps = 40
  config.warmup_steps = 4
  config.learning_rate = 2e-3
  config.log_every = 5
  config.eval_every = 20
  config.eval_batches = 2
  config.checkpoint_every = 10
  config.probe_tasks = ""  # tests/test_probes.py runs them
  return config


def config_file(config):
  """(config file name, its argument) whose defaults ``config`` starts from."""
  if config.objective == "finetune":
    return "bert_finetune", f"task={config.task}"
  return "bert_pretrain", "size=tiny"


def config_flags(config):
  """The --config.* command-line overrides that turn the default config into ``config``."""
  default = load_config(*config_file(config))
  flags = []
  for key, value in config.items():
    if hasattr(value, "items"):
      flags += [f"--config.{key}.{k}={v}" for k, v in value.items() if default[key][k] != v]
    elif default[key] != value:
      flags.append(f"--config.{key}={value}")
  return flags


def wait_for_logged_step(workdir, step, timeout=300):
  """Waits until a running job in ``workdir`` has logged ``step`` in metrics.jsonl."""
  metrics_file = pathlib.Path(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and not (metrics_file.exists() and
                                        f'"step": {step}' in metrics_file.read_text()):
    time.sleep(0.05)


def run_main(config, workdir, env=None, extra=(), launcher=(), **popen_kwargs):
  """Starts ``python -m jaxssl.main`` on ``config`` (pretraining or fine-tuning) in a
  subprocess; ``launcher``: a command that runs it (given as its arguments)."""
  name, arg = config_file(config)
  command = [
      *launcher, sys.executable, "-m", "jaxssl.main", f"--config=configs/{name}.py:{arg}",
      f"--workdir={workdir}", *config_flags(config), *extra
  ]
  return subprocess.Popen(
      command,
      cwd=ROOT,
      env={
          **os.environ,
          **(env or {})
      },
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      **popen_kwargs)


def small_gpt_config(tfds_dir, tokenizer_path):
  """A GPT run small enough for a few seconds of CPU, on the Moby Dick corpus."""
  config = load_config("gpt_pretrain", "size=tiny")
  config.dataset = SMALL_CORPUS
  config.data_dir = tfds_dir
  config.tokenizer = tokenizer_path
  config.vocab_size = 1000
  config.max_seq_length = 64
  config.batch_size = 16
  config.num_train_steps = 150
  config.warmup_steps = 15
  config.log_every = 10
  config.eval_every = 75
  config.eval_batches = 4
  config.checkpoint_every = 75
  return config
