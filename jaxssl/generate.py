"""Text generation from a pretrained GPT workdir.

    python -m jaxssl.generate --workdir=/tmp/gpt --prompt="The whale" --prompt="Fellow citizens"
    python -m jaxssl.generate --init_from=smollm2 --prompt="The capital of France is"

Prompts run as one ragged batch through the KV-cache decoder (``jaxssl.models.generation``);
generation stops at the document separator or after ``--max_new_tokens``.
"""

import jax
from absl import flags

from jaxssl import cli
from jaxssl.core import trained
from jaxssl.models import generation


def define_flags():
  """The command line's flags (defined only when run as a program, so importing the
  library functions next to another command's module never defines a flag twice)."""
  flags.DEFINE_string("workdir", None, "A GPT pretraining workdir (jaxssl.main).")
  flags.DEFINE_string(
      "init_from", None, "Instead of --workdir: a published decoder, e.g. "
      "smollm2 (see jaxssl.pretrained).")
  flags.DEFINE_multi_string("prompt", None, "Prompt text; repeat for a batch.")
  flags.DEFINE_integer("max_new_tokens", 60, "Tokens to generate at most.")
  flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 is greedy.")
  flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
  flags.DEFINE_float("top_p", 0.95, "Keep the smallest set with this mass (1: all).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.mark_flags_as_required(["prompt"])


def generate_text(workdir, init_from, prompts, *, max_new_tokens, temperature, top_k, top_p, seed):
  """Continuations (text) of ``prompts`` (text) from the GPT in ``workdir`` or the published
  decoder ``init_from`` names (exactly one)."""
  _, graphdef, params, tokenizer, _ = trained.load_decoder(workdir, init_from)
  outputs = generation.generate(
      graphdef,
      params, [tokenizer.encode(prompt) for prompt in prompts],
      max_new_tokens=max_new_tokens,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      stop_tokens=(tokenizer.sep_id,),
      pad_id=tokenizer.pad_id,
      rng=jax.random.key(seed))
  return [tokenizer.decode(tokens) for tokens in outputs]


def main():
  continuations = generate_text(
      flags.FLAGS.workdir,
      flags.FLAGS.init_from,
      flags.FLAGS.prompt,
      max_new_tokens=flags.FLAGS.max_new_tokens,
      temperature=flags.FLAGS.temperature,
      top_k=flags.FLAGS.top_k,
      top_p=flags.FLAGS.top_p,
      seed=flags.FLAGS.seed)
  for prompt, continuation in zip(flags.FLAGS.prompt, continuations):
    print(f"{prompt} → {continuation}")


if __name__ == "__main__":
  cli.run(main, define_flags)
