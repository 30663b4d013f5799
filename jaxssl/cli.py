"""What every program (``python -m jaxssl.X``) shares: running under absl with a user's error as
one line and exit status 2, and loading a config by name from the installed package."""

import importlib
import sys

from absl import app
from absl import flags
from absl import logging


def parse_flags(argv):
  """absl's parser, with a bad flag or config override as one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # a config file's error comes with its traceback: keep the end
    print(f"error: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
  except (AttributeError, KeyError) as error:  # config_flags: a field that does not exist
    field = str(error).strip("\"'")
    print(
        f"error: unknown config field {field!r}; the --config file lists every field.",
        file=sys.stderr)
  sys.exit(2)


def run(main, define_flags=None):
  """Runs ``main()`` as a program: ``define_flags()`` first (so importing a program's functions
  beside another program never defines a flag twice), positional arguments refused, the INFO
  logs of orbax and TFDS off unless ``--verbosity`` is given, and a user's error (ValueError,
  FileNotFoundError) printed as ``error: ...`` with exit status 2, no traceback."""
  if define_flags is not None:
    define_flags()

  def absl_main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      main()
    except (ValueError, FileNotFoundError) as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)

  app.run(absl_main, flags_parser=parse_flags)


def load_config(name, arg=None):
  """``configs/<name>.py``'s ``get_config(arg)``, found through the installed package
  (``jaxssl.configs``), so it works from a wheel as from the source tree."""
  return importlib.import_module(f"jaxssl.configs.{name}").get_config(arg)
