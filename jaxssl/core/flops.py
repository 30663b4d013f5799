"""Model FLOPs of a train step, and the chips' peak rates that model-FLOPs utilisation (MFU)
divides them by.

Model FLOPs per trained token count a train step as 3 forward passes (forward + backward) and
every multiply-add as 2 FLOPs, for a stack of L blocks of width d and MLP width m over rows
of T tokens:
    6 * L * (4 d^2 + 2 d m)     the blocks' weight matrices
  + 12 * L * T * d              attention scores and values (full T x T, as computed)
plus the output projections, counted where they are computed (``output_flops_per_token``).
Embedding lookups, norms, biases and the pooler are left out, as in the PaLM paper's MFU.
"""

# Dense bfloat16 peak FLOP/s per chip from the vendors' datasheets, by a substring of
# ``jax.Device.device_kind`` (first match wins, so the more specific names come first).
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),  # also GH200
    ("B200", 2250e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5", 459e12),  # v5p
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
)


def blocks_flops_per_token(cfg, length):
  """Train FLOPs per token of ``cfg``'s blocks (``num_layers``, ``hidden_size``, ``mlp_dim``)
  over rows of ``length`` tokens."""
  d, m, layers = cfg.hidden_size, cfg.mlp_dim, cfg.num_layers
  return 6 * layers * (4 * d * d + 2 * d * m) + 12 * layers * length * d


def output_flops_per_token(hidden_size, vocab_size, fraction, transform=True):
  """Train FLOPs per token of a vocabulary projection computed at ``fraction`` of the positions
  (1: every position, as a decoder; P / T for BERT's MLM head at P masked positions), after a
  (d, d) transform when ``transform`` (BERT's head)."""
  d = hidden_size
  return 6 * ((d * d if transform else 0) + d * vocab_size) * fraction


def peak_flops(device_kind):
  """The chip's datasheet dense bf16 FLOP/s, or None for a chip not in ``PEAK_BF16_FLOPS``."""
  for name, rate in PEAK_BF16_FLOPS:
    if name in device_kind:
      return rate
  return None
