"""Hugging Face checkpoint directories on disk: reading their tensors, writing them whole."""

import json
import os
import shutil
import tempfile

import numpy as np
import safetensors.numpy


def read_tensors(directory: str) -> dict[str, np.ndarray]:
  """The checkpoint's tensors by name: ``model.safetensors``, else ``pytorch_model.bin``."""
  safetensors_path = os.path.join(directory, "model.safetensors")
  if os.path.exists(safetensors_path):
    try:
      return safetensors.numpy.load_file(safetensors_path)
    except safetensors.SafetensorError as error:
      raise ValueError(f"{safetensors_path} cannot be read ({error}): it is truncated or damaged; "
                       "copy or download it again.") from None
  torch_path = os.path.join(directory, "pytorch_model.bin")
  if os.path.exists(torch_path):
    import torch  # Only old checkpoints need it, so it is not a dependency of jaxssl.
    state_dict = torch.load(torch_path, map_location="cpu", weights_only=True)
    return {name: tensor.numpy() for name, tensor in state_dict.items()}
  raise FileNotFoundError(f"{directory!r} holds neither model.safetensors nor pytorch_model.bin; "
                          "point at a Hugging Face checkpoint directory.")


def read_config(directory: str) -> dict:
  """The checkpoint's ``config.json``; a file that is not JSON is an error naming it."""
  path = os.path.join(directory, "config.json")
  with open(path, encoding="utf-8") as config_file:
    try:
      return json.load(config_file)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path} is not valid JSON ({error}); copy or download it again.") from None


def check_new_directory(directory: str):
  """Raises ValueError unless ``directory`` is absent or an empty directory (what an export
  writes into); checked before any weight is read."""
  if os.path.isfile(directory):
    raise ValueError(f"{directory!r} is a file; export into a new directory.")
  if os.path.isdir(directory) and os.listdir(directory):
    raise ValueError(f"{directory!r} is not empty; export into a new directory or remove it first.")


def write_checkpoint(directory: str, config: dict, tensors: dict[str, np.ndarray], extra_files=()):
  """Writes config.json, model.safetensors and copies of ``extra_files`` into ``directory``,
  whole or not at all (built beside it, then renamed into place)."""
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  # Written beside the target (same filesystem) so that the final rename is atomic.
  scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.", dir=parent)
  try:
    with open(os.path.join(scratch, "config.json"), "w", encoding="utf-8") as config_file:
      json.dump(config, config_file, indent=2)
    # transformers reads the "format" entry to know the names are PyTorch's.
    weights_path = os.path.join(scratch, "model.safetensors")
    safetensors.numpy.save_file(tensors, weights_path, metadata={"format": "pt"})
    os.chmod(weights_path, 0o644)  # safetensors creates it private, like the directory below
    for path in extra_files:
      shutil.copy(path, scratch)
    os.chmod(scratch, 0o755)  # mkdtemp's directory is private; a checkpoint is meant to be read.
    os.replace(scratch, directory)
  except BaseException:
    shutil.rmtree(scratch, ignore_errors=True)
    raise
