"""Per-token cost of GPT decoding with the KV cache vs re-running the prefix, as output grows.

    python benchmarks/kv_cache.py [--size=mini] [--batch=4] [--prompt_length=16]

With the cache, one decode step runs the model on one new token per row; only attention's
read of the cached keys and values grows with the output. Without it, producing token n
re-runs the whole prompt + n tokens (``generation.generate_without_cache``): the per-token
time grows with n. Both are timed after compilation, best of ``--repeats``, on a random-init model
(timing does not depend on the weights).
"""

import time

import jax
import numpy as np
from absl import app
from absl import flags
from flax import nnx

from jaxssl.models import gpt
from jaxssl.models import generation

_SIZE = flags.DEFINE_string("size", "mini", "GPT preset.")
_BATCH = flags.DEFINE_integer("batch", 4, "Prompts per batch.")
_PROMPT_LENGTH = flags.DEFINE_integer("prompt_length", 16, "Tokens per prompt.")
_OUTPUT_LENGTHS = flags.DEFINE_list("output_lengths", ["32", "64", "128", "256", "480"],
                                    "Generated tokens per row.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per point (best is kept).")


def best_time(function, repeats):
  function()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv):
  del argv
  cfg = gpt.GPTConfig.from_dict({"size": _SIZE.value, "dropout_rate": 0.0})
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  full_forward = jax.jit(lambda params, tokens, segment_ids, positions: nnx.merge(graphdef, params)
                         (tokens, positions, segment_ids)[0][:, -1])
  rng = np.random.default_rng(0)
  prompts = rng.integers(5, cfg.vocab_size, (_BATCH.value, _PROMPT_LENGTH.value)).tolist()
  print(f"GPT {_SIZE.value}, batch {_BATCH.value}, prompt {_PROMPT_LENGTH.value} tokens, "
        f"{jax.devices()[0].device_kind}")
  print("| generated tokens | KV cache ms/token | re-run prefix ms/token | ratio |")
  print("|---|---|---|---|")
  for length in map(int, _OUTPUT_LENGTHS.value):
    cached = best_time(
        lambda: generation.generate(  # noqa: B023
            graphdef,
            params,
            prompts,
            max_new_tokens=length,
            pad_id=0,
            rng=jax.random.key(0)),
        _REPEATS.value) / length
    # The uncached path's cost for its last token: one forward over prompt + length tokens.
    tokens, segment_ids, positions = generation.left_pad(prompts, 0, extra=length)
    rerun = best_time(
        lambda: jax.block_until_ready(
            full_forward(  # noqa: B023
                params, tokens, segment_ids, positions)),
        _REPEATS.value)
    print(f"| {length} | {cached * 1e3:.2f} | {rerun * 1e3:.2f} | {rerun / cached:.1f}x |")


if __name__ == "__main__":
  app.run(main)
