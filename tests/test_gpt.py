"""The GPT decoder and its sampler, checked as numbers on tiny random models."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxssl.models import generation
from jaxssl.models import gpt

VOCAB = 97
PAD = 0
PROMPTS = [[5, 17, 3, 40, 8, 22], [9, 60], [71, 2, 33, 14]]  # ragged on purpose
STYLES = ["tiny", "llama-tiny"]  # GPT-2 (learned, LayerNorm, GELU, tied) and Llama (GQA)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _logits_at(graphdef, params, tokens, segment_ids, positions, index):
  """(B, V) logits at column ``index`` of a full, uncached forward pass."""
  logits, _ = nnx.merge(graphdef, params)(tokens, positions, segment_ids)
  return logits[:, index]


def generate_without_cache(model_graphdef,
                           params,
                           prompts,
                           *,
                           max_new_tokens,
                           temperature=0.0,
                           top_k=0,
                           top_p=1.0,
                           stop_tokens=(),
                           pad_id,
                           rng):
  """``generate`` without a KV cache: re-runs the whole sequence for every token.

  Slow (quadratic): the reference the cached path is tested against. The
  sequence lives in a fixed (B, P + max_new_tokens) buffer so that it compiles once; causal
  masking keeps the not-yet-generated columns from influencing the logits read.
  """
  cfg = nnx.merge(model_graphdef, params).cfg
  generation.check_request(cfg, prompts, max_new_tokens, temperature, top_k, top_p)
  tokens, segment_ids, positions = generation.left_pad(prompts, pad_id, extra=max_new_tokens)
  prompt_length = tokens.shape[1] - max_new_tokens
  done = np.zeros(len(prompts), bool)
  for step in range(max_new_tokens):
    logits = _logits_at(model_graphdef, params, tokens, segment_ids, positions,
                        prompt_length + step - 1)
    token = np.asarray(
        generation.sample_logits(jax.random.fold_in(rng, step), logits, temperature, top_k, top_p))
    token = np.where(done, pad_id, token)
    tokens[:, prompt_length + step] = token
    done |= np.isin(token, stop_tokens)
    if done.all():
      break
  return generation.until_stop(tokens[:, prompt_length:prompt_length + step + 1], stop_tokens)


def make_model(size, seed=0, **overrides):
  """(graphdef, params) of a random model whose greedy tokens depend on the whole context.

  BERT's 0.02 initialisation gives a near-identity network that mostly repeats its input
  token; noise on every parameter makes the tests sensitive to masks and positions.
  """
  cfg = gpt.GPTConfig.from_dict({
      "size": size,
      "vocab_size": VOCAB,
      "max_position": 64,
      "dropout_rate": 0.0,
      **overrides
  })
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(seed)))
  noise = np.random.default_rng(seed)
  return graphdef, jax.tree.map(
      lambda leaf: leaf + 0.1 * noise.standard_normal(leaf.shape).astype(leaf.dtype), params)


@pytest.fixture(scope="module", params=STYLES)
def model(request):
  return make_model(request.param)


@functools.partial(jax.jit, static_argnums=0)
def run(graphdef, params, tokens, positions, segment_ids=None, cache=None):
  return nnx.merge(graphdef, params)(tokens, positions, segment_ids, cache)


def forward(model, tokens, positions=None, segment_ids=None):
  """Logits (B, T, V) of one uncached pass; positions default to 0, 1, ... in every row."""
  tokens = jnp.asarray(tokens)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(run(*model, tokens, jnp.asarray(positions), segment_ids)[0])


def greedy(model, prompts, generate=generation.generate, **kwargs):
  return generate(
      *model,
      prompts,
      max_new_tokens=kwargs.pop("max_new_tokens", 8),
      pad_id=PAD,
      rng=jax.random.key(0),
      **kwargs)


def test_cached_greedy_tokens_equal_full_recompute(model):
  cached = greedy(model, PROMPTS)
  assert cached == greedy(model, PROMPTS, generate_without_cache)
  assert [len(row) for row in cached] == [8, 8, 8]
  assert len({token for row in cached for token in row}) > 3  # the model is not degenerate


def test_cached_sampling_equals_full_recompute():
  model = make_model("llama-tiny")
  settings = dict(temperature=1.0, top_k=20, top_p=0.9)
  assert (greedy(model, PROMPTS, **settings) == greedy(model, PROMPTS, generate_without_cache,
                                                       **settings))


def test_cache_logits_equal_full_forward(model):
  """Prefill 4 tokens, then feed 3 one at a time: each step's logits match one full pass."""
  tokens = jnp.asarray([[5, 17, 3, 40, 8, 22, 1], [9, 60, 4, 4, 71, 2, 33]])
  positions = jnp.broadcast_to(jnp.arange(7), tokens.shape)
  cache = gpt.init_cache(nnx.merge(*model).cfg, batch_size=2, max_length=10)
  prefill, cache = run(*model, tokens[:, :4], positions[:, :4], cache=cache)
  steps = [prefill]
  for t in range(4, 7):
    logits, cache = run(*model, tokens[:, t:t + 1], positions[:, t:t + 1], cache=cache)
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), forward(model, tokens), atol=1e-5)
  assert int(cache["length"]) == 7
  np.testing.assert_array_equal(cache["segment_ids"], [[1] * 7 + [0] * 3] * 2)


def test_left_padded_row_generates_as_if_alone(model):
  assert greedy(model, [PROMPTS[1]]) == [greedy(model, PROMPTS)[1]]  # 4 columns of padding


def test_future_tokens_do_not_change_earlier_logits(model):
  tokens = np.array([[5, 17, 3, 40, 8, 22]])
  changed = tokens.copy()
  changed[0, 4] = 61
  before, after = forward(model, tokens), forward(model, changed)
  np.testing.assert_array_equal(before[:, :4], after[:, :4])
  assert np.abs(before[:, 4:] - after[:, 4:]).max() > 1e-3


def test_packed_documents_see_only_themselves(model):
  first, second = [5, 17, 3, 40, 8], [9, 60, 71, 2, 33, 14, 7]
  tokens = [first + second + [PAD, PAD]]
  segment_ids = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 2])
  positions = [list(range(5)) + list(range(7)) + [0, 0]]
  packed = forward(model, tokens, positions, segment_ids)
  np.testing.assert_allclose(packed[:, :5], forward(model, [first]), atol=1e-5)
  np.testing.assert_allclose(packed[:, 5:12], forward(model, [second]), atol=1e-5)
  assert np.isfinite(packed).all()  # padding attends to padding, never to nothing


def test_padding_is_invisible_to_real_tokens(model):
  alone = forward(model, [[5, 17, 3]])
  padded = forward(model, [[PAD, PAD, 5, 17, 3]], [[0, 0, 0, 1, 2]], jnp.asarray([[0, 0, 1, 1, 1]]))
  np.testing.assert_allclose(padded[:, 2:], alone, atol=1e-5)


def test_gqa_equals_multi_head_attention_with_repeated_key_value_heads():
  graphdef, params = make_model("llama-tiny")  # 4 query heads share 2 key/value heads
  mha_graphdef, mha_params = make_model("llama-tiny", num_kv_heads=4)
  cfg = nnx.merge(graphdef, params).cfg
  groups, head_size = cfg.num_heads // cfg.kv_heads, cfg.head_size
  repeat = lambda kernel: jnp.repeat(
      kernel.reshape(-1, cfg.kv_heads, head_size), groups, axis=1).reshape(kernel.shape[0], -1)
  mha_state = nnx.to_pure_dict(params)
  for block in mha_state["blocks"].values():
    for name in ("key", "value"):
      block["attention"][name]["kernel"] = repeat(block["attention"][name]["kernel"])
  nnx.replace_by_pure_dict(mha_params, mha_state)
  tokens = [[5, 17, 3, 40, 8, 22]]
  np.testing.assert_allclose(
      forward((mha_graphdef, mha_params), tokens), forward((graphdef, params), tokens), atol=1e-5)


def test_num_kv_heads_equal_to_num_heads_is_multi_head_attention():
  grouped = gpt.GPTConfig.from_dict({"size": "llama-tiny"})  # 4 query, 2 key/value heads
  shapes = lambda cfg: jax.tree.map(
      jnp.shape, nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: gpt.GPT(cfg, nnx.Rngs(0))))))
  explicit = shapes(dataclasses.replace(grouped, num_kv_heads=4))
  assert explicit == shapes(dataclasses.replace(grouped, num_kv_heads=None))
  assert explicit["blocks"][0]["attention"]["key"]["kernel"] == (128, 128)
  assert shapes(grouped)["blocks"][0]["attention"]["key"]["kernel"] == (128, 64)
  cache = gpt.init_cache(grouped, batch_size=3, max_length=16)
  assert len(cache["layers"]) == 2
  assert cache["layers"][0]["key"].shape == (3, 2, 16, 32)  # (B, K, S, H)


def test_rotary_scores_depend_only_on_position_differences():
  keys = jax.random.split(jax.random.key(0), 2)
  q, k = (jax.random.normal(key, (1, 1, 2, 64)) for key in keys)  # (B, T, N, H)
  score = lambda i, j: jnp.sum(
      gpt.apply_rotary(q, jnp.array([[i]]), 10000.0) * gpt.apply_rotary(
          k, jnp.array([[j]]), 10000.0),
      axis=-1)
  np.testing.assert_allclose(score(7, 3), score(107, 103), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(score(0, 0), jnp.sum(q * k, axis=-1), rtol=1e-5, atol=1e-5)
  assert np.abs(score(7, 3) - score(3, 7)).max() > 1e-2  # the order of the pair matters
  half = gpt.apply_rotary(q, jnp.array([[1]]), 10000.0)  # rotate_half: pairs i and i + H/2
  np.testing.assert_allclose(
      half[..., 0], q[..., 0] * np.cos(1) - q[..., 32] * np.sin(1), rtol=1e-5)


def test_every_parameter_has_logical_axes_and_param_dtype():
  for size in STYLES:
    cfg = gpt.GPTConfig.from_dict({"size": size, "param_dtype": "bfloat16", "dtype": "bfloat16"})
    model = nnx.eval_shape(lambda: gpt.GPT(cfg, nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    for path, spec in jax.tree.leaves_with_path(nnx.get_partition_spec(params)):
      assert spec is not None and len(spec) > 0, path
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("bfloat16")}


def test_cache_may_be_narrower_than_compute():
  model = make_model("llama-tiny")
  cache = gpt.init_cache(nnx.merge(*model).cfg, batch_size=1, max_length=8, dtype="bfloat16")
  tokens, positions = jnp.asarray([[5, 17, 3]]), jnp.arange(3)[None]
  logits, cache = run(*model, tokens, positions, cache=cache)
  assert logits.dtype == jnp.float32 and cache["layers"][1]["value"].dtype == jnp.bfloat16
  np.testing.assert_allclose(logits, forward(model, tokens), atol=0.05)


SAMPLING_LOGITS = jnp.asarray([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0])
DRAWS = 20_000


def draw(**settings):
  logits = jnp.broadcast_to(SAMPLING_LOGITS, (DRAWS, SAMPLING_LOGITS.size))
  samples = generation.sample_logits(jax.random.key(1), logits, **settings)
  return np.bincount(np.asarray(samples), minlength=SAMPLING_LOGITS.size) / DRAWS


def test_temperature_zero_is_argmax():
  logits = jax.random.normal(jax.random.key(0), (16, VOCAB))
  np.testing.assert_array_equal(
      generation.sample_logits(jax.random.key(1), logits), np.argmax(logits, axis=-1))


def test_top_k_never_samples_outside_the_k_largest():
  frequencies = draw(temperature=1.0, top_k=3)
  assert frequencies[3:].sum() == 0
  expected = np.asarray(jax.nn.softmax(SAMPLING_LOGITS[:3]))
  np.testing.assert_allclose(frequencies[:3], expected, atol=0.02)


def test_top_p_samples_the_renormalised_nucleus():
  probs = np.asarray(jax.nn.softmax(SAMPLING_LOGITS))
  frequencies = draw(temperature=1.0, top_p=0.75)
  nucleus = int(np.searchsorted(np.cumsum(probs), 0.75)) + 1  # smallest prefix with mass >= p
  assert nucleus == 3  # 0.40 + 0.24 + 0.15 = 0.79
  assert frequencies[nucleus:].sum() == 0
  np.testing.assert_allclose(
      frequencies[:nucleus], probs[:nucleus] / probs[:nucleus].sum(), atol=0.02)
  assert draw(temperature=1.0, top_p=0.01)[0] == 1.0  # always at least the top token


def test_higher_temperature_means_higher_entropy():
  entropy = lambda p: -np.sum(p[p > 0] * np.log(p[p > 0]))
  entropies = [entropy(draw(temperature=t)) for t in (0.5, 1.0, 2.0)]
  assert entropies[0] < entropies[1] < entropies[2]
  exact = entropy(np.asarray(jax.nn.softmax(SAMPLING_LOGITS)))
  assert abs(entropies[1] - exact) < 0.02


def test_stop_tokens_end_rows_early_while_others_continue():
  model = make_model("llama-tiny")
  full = greedy(model, PROMPTS)
  stop = next(t for t in full[0][1:] if t not in full[1])  # ends row 0, never row 1
  stopped = greedy(model, PROMPTS, stop_tokens=(stop,))
  for row, whole in zip(stopped, full):
    assert row == (whole[:whole.index(stop)] if stop in whole else whole)
  assert 0 < len(stopped[0]) < 8 and stopped[1] == full[1]
  assert stopped == greedy(model, PROMPTS, generate_without_cache, stop_tokens=(stop,))
  first_tokens = tuple({row[0] for row in full})
  assert greedy(model, PROMPTS, stop_tokens=first_tokens) == [[], [], []]


@pytest.mark.parametrize("prompts, kwargs, names", [
    ([], {}, "prompts=[]"),
    ([[5], []], {}, "prompts[1]"),
    ([[5, VOCAB]], {}, "prompts[0]"),
    ([[5] * 65], {}, "max_position=64"),
    ([[5] * 60], {
        "max_new_tokens": 8
    }, "max_new_tokens=8"),
    ([[5]], {
        "max_new_tokens": 0
    }, "max_new_tokens=0"),
    ([[5]], {
        "temperature": -1.0
    }, "temperature=-1.0"),
    ([[5]], {
        "top_k": -2
    }, "top_k=-2"),
    ([[5]], {
        "top_k": VOCAB + 1
    }, f"top_k={VOCAB + 1}"),
    ([[5]], {
        "top_p": 0.0
    }, "top_p=0.0"),
    ([[5]], {
        "top_p": 1.5
    }, "top_p=1.5"),
])
def test_bad_requests_name_the_value(prompts, kwargs, names):
  graphdef, params = make_model("tiny")
  with pytest.raises(ValueError, match=re.escape(names)):
    generation.generate(
        graphdef,
        params,
        prompts,
        **{
            "max_new_tokens": 4,
            **kwargs
        },
        pad_id=PAD,
        rng=jax.random.key(0))


@pytest.mark.parametrize("fields, names", [
    ({
        "size": "huge"
    }, "model.size='huge'"),
    ({
        "norm": "batchnorm"
    }, "model.norm='batchnorm'"),
    ({
        "num_heads": 4,
        "num_kv_heads": 3
    }, "num_kv_heads=3"),
    ({
        "hidden_size": 100,
        "num_heads": 3
    }, "hidden_size=100"),
    ({
        "positions": "rotary",
        "head_dim": 7
    }, "even head size"),
])
def test_bad_configs_name_the_value(fields, names):
  with pytest.raises(ValueError, match=re.escape(names)):
    gpt.GPTConfig.from_dict(fields)


def test_replace_keeps_derived_sizes_in_step():
  cfg = dataclasses.replace(gpt.GPTConfig.from_dict({"size": "tiny"}), num_heads=4)
  assert (cfg.kv_heads, cfg.head_size) == (4, 32)
