"""Output files written whole or not at all: each goes to a temporary file beside its target
(same file system) and is renamed over it, so a crash, a full disk or Ctrl-C never leaves a
half-written file, and an earlier version stays intact until the new one is complete."""

import contextlib
import json
import os


@contextlib.contextmanager
def replacing(path):
  """Yields a temporary path to write; on success it replaces ``path``, on failure it goes."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f"{path}.tmp{os.getpid()}"
  try:
    yield temporary
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_text(path, text):
  with replacing(path) as temporary:
    with open(temporary, "w", encoding="utf-8") as f:
      f.write(text)


def write_json(path, value):
  """``value`` as indented JSON (non-ASCII text kept readable)."""
  write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def save_figure(figure, path, dpi):
  """A matplotlib figure, in the format the extension of ``path`` names."""
  with replacing(path) as temporary:
    figure.savefig(temporary, dpi=dpi, format=os.path.splitext(path)[1][1:])
