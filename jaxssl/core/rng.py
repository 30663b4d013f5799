"""Named PRNG streams.

Every random draw of a run comes from ``key(seed)`` folded with its stream's number, so no two
uses share a stream: parameter initialisation never sees the keys that mask or drop out at a
training step, and the head of a fine-tuning run never those of its encoder.
"""

import jax

# Stream name -> the number folded into the run's key. Never renumber: it would change runs.
STREAMS = {
    "params": 1,  # model initialisation
    "train": 2,  # the per-step key of the train loop, folded with the step number
    "eval": 3,  # the per-batch key of evaluation (BERT's masks), folded with the batch index
    "head": 4,  # a fine-tuning head's initialisation
    "masking": 5,  # inside a step: which tokens BERT masks
    "dropout": 6,  # inside a step: dropout masks
    "sampling": 7,  # inside a step: the tokens ELECTRA's generator samples
}


def stream(key, name):
  """``key`` (a run's key, or a step's) folded into the stream ``name``."""
  return jax.random.fold_in(key, STREAMS[name])


def run_key(seed, name):
  """The key of stream ``name`` for a run seeded with ``seed``."""
  return stream(jax.random.key(seed), name)
