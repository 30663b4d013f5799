"""ELECTRA's replaced-token detection: the corruption, the generator's width, a run and the
encoder fine-tuning takes from it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from jaxssl import metrics as metrics_lib
from jaxssl.core import finetune
from jaxssl.core import pretrain
from jaxssl.core import trained
from jaxssl.core.objectives import electra as electra_objective
from jaxssl.models import bert
from jaxssl.models import electra


def test_corruption_marks_exactly_the_tokens_the_generator_changed():
  batch = {
      "input_ids": jnp.array([[2, 10, 11, 12, 3, 0], [2, 20, 21, 3, 0, 0]]),
      "masked_positions": jnp.array([[1, 3], [2, 0]]),
      "masked_labels": jnp.array([[10, 12], [21, 2]]),
      "mlm_weights": jnp.array([[1.0, 1.0], [1.0, 0.0]]),  # row 1's second slot is unused
  }
  # The generator is sure of 10 (the original) at row 0's first slot, of 30 at its second,
  # of 31 at row 1's first, and of 40 at the unused slot.
  logits = jnp.full((2, 2, 50), -1e9).at[0, 0, 10].set(0).at[0, 1, 30].set(0)
  logits = logits.at[1, 0, 31].set(0).at[1, 1, 40].set(0)
  ids, replaced = electra_objective.corrupted(batch, logits, jax.random.key(0))
  np.testing.assert_array_equal(ids, [[2, 10, 11, 30, 3, 0], [2, 20, 31, 3, 0, 0]])
  np.testing.assert_array_equal(replaced, [[0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]])


def test_the_generator_is_a_quarter_as_wide_with_heads_of_the_same_size():
  mini = bert.BertConfig.from_dict({"size": "mini"})
  generator = electra.generator_config(mini, 0.25)
  assert (generator.hidden_size, generator.num_heads, generator.mlp_dim) == (64, 1, 256)
  assert generator.num_layers == mini.num_layers and generator.vocab_size == mini.vocab_size
  config = load_config("bert_pretrain", "objective=electra")
  assert (config.objective, config.nsp, config.generator_size) == ("electra", False, 0.25)


@pytest.mark.parametrize("field, value, message", [
    ("nsp", True, "nsp=True: ELECTRA has no next-sentence prediction; set nsp=False"),
    ("generator_size", 0.0, r"generator_size=0.0 is out of range; set it > 0 and <= 1"),
])
def test_bad_electra_settings_are_one_line_before_anything_is_written(tiny_config, tmp_path, field,
                                                                      value, message):
  tiny_config.update(objective="electra", nsp=False, generator_size=0.25, discriminator_weight=50.0)
  tiny_config[field] = value
  with pytest.raises(ValueError, match=message):
    pretrain.run(tiny_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_electra_pretrains_and_fine_tuning_takes_its_discriminator(tiny_config, tmp_path):
  tiny_config.update(
      objective="electra",
      nsp=False,
      generator_size=0.5,
      discriminator_weight=50.0,
      num_train_steps=30,
      eval_every=30,
      checkpoint_every=30)
  workdir = str(tmp_path / "run")
  pretrain.run(tiny_config, workdir)
  records = metrics_lib.read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  [evaluation] = [r for r in records if r["split"] == "eval"]
  assert train[-1]["rtd_loss"] < train[0]["rtd_loss"]
  # the generator replaces some masked tokens, never more than were masked (15%)
  assert 0 < evaluation["replaced_share"] < 0.16
  assert evaluation["rtd_accuracy"] >= 1 - evaluation["replaced_share"] - 0.01
  _, _, _, graphdef, params = trained.load_trained(workdir)
  discriminator = jax.tree.leaves(params["encoder"])
  config = load_config("bert_finetune", "task=sentiment")
  config.init_from = workdir
  _, encoder_params, _ = finetune.load_encoder(config)
  for ours, theirs in zip(jax.tree.leaves(encoder_params), discriminator, strict=True):
    np.testing.assert_array_equal(ours, theirs)
