"""What every program (``python -m jaxssl.X``) shares: running under absl with a user's error as
one line and exit status 2, and loading a config by name from the installed package."""

import errno
import importlib
import logging as python_logging
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging

from jaxssl.core import trainer

# Where XLA's compiled programs are kept between runs, unless JAX_COMPILATION_CACHE_DIR names
# another place (JAX_ENABLE_COMPILATION_CACHE=false turns it off): a rerun, another seed or
# another job with the same shapes loads its steps instead of compiling them again (a MiniLM
# fine-tuning step takes several seconds per padding bucket to compile on 2 CPU cores).
COMPILATION_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "jaxssl",
    "xla")


def use_compilation_cache():
  """Points JAX's persistent compilation cache at ``COMPILATION_CACHE`` unless the environment
  chose a directory; where that cannot be created, programs are compiled afresh as without it."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  try:
    os.makedirs(COMPILATION_CACHE, exist_ok=True)
  except OSError:
    return
  jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)


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
  except SyntaxError as error:  # a config file that is not Python
    print(
        f"error: {error.filename} line {error.lineno} is not valid Python ({error.msg}); fix "
        "the config file.",
        file=sys.stderr)
  sys.exit(2)


# What to do about a failed read or write, by its error number.
OS_ERROR_FIXES = {
    errno.ENOSPC: "the disk is full: free space (or use another path), then rerun the command; "
                  "a training run resumes from its last checkpoint",
    errno.EDQUOT: "the disk quota is used up: free space, then rerun the command",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit, "
                 "then rerun the command",
    errno.EACCES: "no permission there: use a path you can write to",
    errno.EROFS: "the file system is read-only: use a path you can write to",
}


def os_error_line(error):
  """One line for a failed read or write: what failed, where, and what to do."""
  if error.errno is None:  # a wrapper's message (config_flags): its last line is the cause
    return str(error).strip().splitlines()[-1].strip()
  where = f": {error.filename}" if error.filename else ""
  fix = OS_ERROR_FIXES.get(error.errno, "check the path, then rerun the command")
  return f"{error.strerror}{where}; {fix}."


class _RaisedElsewhere(python_logging.Filter):
  """Drops the ERROR logs (with tracebacks) of orbax's background save threads and of the
  asyncio loop they write with: each failure they log is raised again in the main thread,
  where it becomes the one line of ``run``."""

  def filter(self, record):
    return not (record.levelno >= python_logging.ERROR and
                (record.name == "asyncio" or f"{os.sep}orbax{os.sep}" in record.pathname))


def _quiet_closed_loop_reports(unraisablehook):
  """``sys.unraisablehook`` without the reports of tensorstore write callbacks that arrive
  after a failed checkpoint write closed orbax's event loop: the failure itself is raised
  again in the main thread and becomes the one line of ``run``."""

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      unraisablehook(unraisable)

  return hook


def run(main, define_flags=None):
  """Runs ``main()`` as a program: ``define_flags()`` first (so importing a program's functions
  beside another program never defines a flag twice), positional arguments refused, the INFO
  logs of orbax and TFDS off unless ``--verbosity`` is given, compiled programs cached across
  runs (``use_compilation_cache``), and a user's error (ValueError,
  OSError: a bad value, a missing file, a full disk) printed as ``error: ...`` with exit
  status 2, no traceback (``--verbosity=1``, debug, shows the traceback instead); a run a
  signal stopped (``trainer.Stopped``) ends with its one line and exit status 0."""
  if define_flags is not None:
    define_flags()

  def absl_main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    debug = logging.get_verbosity() >= logging.DEBUG
    if not debug:
      logging.get_absl_handler().addFilter(_RaisedElsewhere())
      sys.unraisablehook = _quiet_closed_loop_reports(sys.unraisablehook)
    use_compilation_cache()
    try:
      main()
    except trainer.Stopped as stopped:  # a checkpoint was saved: the expected end of a signal
      print(stopped)
    except (ValueError, OSError) as error:
      if debug:
        raise
      line = os_error_line(error) if isinstance(error, OSError) else str(error)
      print(f"error: {line}", file=sys.stderr)
      sys.exit(2)

  app.run(absl_main, flags_parser=parse_flags)


def load_config(name, arg=None):
  """``configs/<name>.py``'s ``get_config(arg)``, found through the installed package
  (``jaxssl.configs``), so it works from a wheel as from the source tree."""
  return importlib.import_module(f"jaxssl.configs.{name}").get_config(arg)
