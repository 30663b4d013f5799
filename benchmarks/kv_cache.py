"""Per-token cost of GPT decoding with the KV cache vs re-running the prefix, as output grows.

    python benchmarks/kv_cache.py [--size=mini] [--batch=4] [--prompt_length=16] [--json=PATH]

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

from jaxssl import files
from jaxssl.data import tokenizer as tokenizer_lib
from jaxssl.models import generation
from jaxssl.models import gpt

_SIZE = flags.DEFINE_string("size", "mini", "GPT preset.")
_BATCH = flags.DEFINE_integer("batch", 4, "Prompts per batch.")
_PROMPT_LENGTH = flags.DEFINE_integer("prompt_length", 16, "Tokens per prompt.")
_OUTPUT_LENGTHS = flags.DEFINE_list("output_lengths", ["32", "64", "128", "256", "480"],
                                    "Generated tokens per row.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per point (best is kept).")
_JSON = flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")

# The random prompts number tokens as a jaxssl tokenizer does (no tokenizer is trained here):
# special tokens by their position in SPECIAL_TOKENS, the regular tokens after them.
PAD = tokenizer_lib.PAD_ID
FIRST_REGULAR = tokenizer_lib.FIRST_REGULAR_ID


def best_time(function, repeats):
  function()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def measure(size, batch, prompt_length, output_lengths, repeats):
  """Per-token seconds with the KV cache and re-running the prefix, per output length, as a dict."""
  cfg = gpt.GPTConfig.from_dict({"size": size, "dropout_rate": 0.0})
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  full_forward = jax.jit(lambda params, tokens, segment_ids, positions: nnx.merge(graphdef, params)
                         (tokens, positions, segment_ids)[0][:, -1])
  rng = np.random.default_rng(0)
  prompts = rng.integers(FIRST_REGULAR, cfg.vocab_size, (batch, prompt_length)).tolist()
  rows = []
  for length in output_lengths:
    cached = best_time(
        lambda: generation.generate(  # noqa: B023
            graphdef,
            params,
            prompts,
            max_new_tokens=length,
            pad_id=PAD,
            rng=jax.random.key(0)),
        repeats) / length
    # The uncached path's cost for its last token: one forward over prompt + length tokens.
    tokens, segment_ids, positions = generation.left_pad(prompts, PAD, extra=length)
    rerun = best_time(
        lambda: jax.block_until_ready(
            full_forward(  # noqa: B023
                params, tokens, segment_ids, positions)),
        repeats)
    rows.append({
        "generated_tokens": length,
        "cached_seconds_per_token": cached,
        "rerun_seconds_per_token": rerun,
        "ratio": rerun / cached,
    })
  return {
      "size": size,
      "batch": batch,
      "prompt_length": prompt_length,
      "device_kind": jax.devices()[0].device_kind,
      "rows": rows,
  }


def to_markdown(result):
  """``measure``'s dict as the printed report: the setting, then a Markdown table."""
  lines = [
      f"GPT {result['size']}, batch {result['batch']}, prompt {result['prompt_length']} tokens, "
      f"{result['device_kind']}",
      "| generated tokens | KV cache ms/token | re-run prefix ms/token | ratio |",
      "|---|---|---|---|",
  ]
  for row in result["rows"]:
    lines.append(f"| {row['generated_tokens']} | {row['cached_seconds_per_token'] * 1e3:.2f} "
                 f"| {row['rerun_seconds_per_token'] * 1e3:.2f} | {row['ratio']:.1f}x |")
  return "\n".join(lines)


def main(argv):
  del argv
  result = measure(_SIZE.value, _BATCH.value, _PROMPT_LENGTH.value,
                   [int(length) for length in _OUTPUT_LENGTHS.value], _REPEATS.value)
  print(to_markdown(result))
  if _JSON.value:
    files.write_json(_JSON.value, result)


if __name__ == "__main__":
  app.run(main)
