"""Programs compiled by one run are loaded, not compiled, by the next with the same shapes."""

import os

import pytest

from conftest import run_main


@pytest.mark.slow
def test_a_rerun_loads_every_step_from_the_compilation_cache(tiny_config, tmp_path):
  tiny_config.update(num_train_steps=2, eval_every=2, checkpoint_every=2, log_every=1)
  env = {
      "XDG_CACHE_HOME": str(tmp_path / "cache"),
      "JAX_COMPILATION_CACHE_DIR": "",  # unset: jaxssl's default place
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # tiny programs compile in under 1 s
  }
  cache = tmp_path / "cache" / "jaxssl" / "xla"
  entries = []
  for run in ("first", "second"):
    process = run_main(tiny_config, tmp_path / run, env=env)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    entries.append(sorted(os.listdir(cache)))
  assert any(name.startswith("jit_train_step-") for name in entries[0])
  assert entries[1] == entries[0]  # the second run added nothing: it compiled nothing anew
