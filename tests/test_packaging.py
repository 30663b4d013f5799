"""jaxssl installed as a wheel (``pip install .``, not editable) works outside the source tree:
its configs, shipped data and programs come from the installed package."""

import configparser
import os
import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT


def test_setup_cfg_lists_every_package():
  """setup.cfg names the packages one by one (configs/ installs as jaxssl.configs), so a new
  folder of modules must be added there or a wheel would leave it out."""
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  listed = set(setup["options"]["packages"].split())
  folders = {
      ".".join(init.parent.relative_to(ROOT).parts)
      for init in (ROOT / "jaxssl").rglob("__init__.py")
  }
  assert folders | {"jaxssl.configs"} == listed


@pytest.mark.slow
def test_a_non_editable_install_runs_the_suite(tiny_encoder, tfds_dir, tmp_path):
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  # jaxssl's dependencies come from this test environment, which the new venv sees after its
  # own site-packages (reinstalling jax and torch offline would take minutes); jaxssl itself is
  # built from the source tree and installed into the new venv alone.
  venv_site = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True,
      capture_output=True,
      text=True).stdout.strip()
  with open(os.path.join(venv_site, "test_dependencies.pth"), "w", encoding="utf-8") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps",
                            str(ROOT)],
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert install.returncode == 0, install.stderr[-3000:]

  env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
  where = subprocess.run([
      python, "-c", "import jaxssl, jaxssl.configs; print(jaxssl.__file__, jaxssl.configs.__file__)"
  ],
                         cwd=tmp_path,
                         env=env,
                         check=True,
                         capture_output=True,
                         text=True).stdout.split()
  assert all(path.startswith(venv_site) for path in where), where

  suite = subprocess.run([
      python, "-m", "jaxssl.suite", f"--workdir={tmp_path / 'suite'}", "--tasks=sentiment",
      f"--init_from={tiny_encoder}", "--num_train_steps=2", f"--data_dir={tfds_dir}"
  ],
                         cwd=tmp_path,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=900)
  assert suite.returncode == 0, suite.stderr[-3000:]
  table = (tmp_path / "suite" / "suite.md").read_text(encoding="utf-8")
  assert "| sentiment | accuracy |" in table
