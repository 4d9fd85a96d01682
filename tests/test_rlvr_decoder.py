"""The decoder: KV-cache sampling agrees with the full forward pass; EOS masking; greedy/top-p; RoPE layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel.rlvr import decoder
from rlsel.rlvr.tokenizer import CharTokenizer, left_pad

TOK = CharTokenizer()


def _cfg(interleaved):
  return decoder.DecoderConfig(vocab_size=TOK.vocab_size, width=32, num_layers=2, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64, rope_theta=1e4, rms_eps=1e-5,
                               rope_interleaved=interleaved, init_std=0.5)


@pytest.fixture(scope="module")
def model():
  module, params = decoder.init_params(_cfg(True), jax.random.key(0))
  logprobs = jax.jit(lambda p, *a: decoder.token_logprobs(module, p, *a)[0])
  return module, params, logprobs


def _prompts():
  return left_pad([TOK.encode(p) for p in ["1+2=", "34-5=", "7="]], 8, TOK.pad_id)


def test_cached_sampling_logprobs_match_full_forward_and_eos_masks_the_rest(model):
  module, params, logprobs = model
  ids, mask = _prompts()
  gen = decoder.make_generate(module, 6, 1.0, 1.0, TOK.eos_id, TOK.pad_id)
  saw_eos = False
  for seed in range(3):
    r = jax.device_get(gen(params, ids, mask, jax.random.key(seed)))
    full = np.asarray(logprobs(params, ids, mask, r.tokens))
    m = r.mask
    assert m[:, 0].all()
    np.testing.assert_allclose(r.logprobs[m], full[m], atol=1e-4)
    assert (r.logprobs[~m] == 0).all()
    for row, valid in zip(r.tokens, m):
      n = int(valid.sum())
      assert valid[:n].all() and not valid[n:].any()  # the valid tokens are a prefix
      hit = np.flatnonzero(row[:n] == TOK.eos_id)
      if hit.size:
        saw_eos = True
        assert n == hit[0] + 1 and (row[n:] == TOK.pad_id).all()
  assert saw_eos or m.all()


def test_greedy_generation_picks_the_most_likely_token(model):
  module, params, _ = model
  ids, mask = _prompts()
  greedy = jax.device_get(decoder.make_generate(module, 4, 0.0, 1.0, TOK.eos_id, TOK.pad_id)(
      params, ids, mask, jax.random.key(0)))
  logits, _ = jax.jit(lambda p, *a: decoder.forward(module, p, *a))(params, ids, mask, greedy.tokens)
  m = greedy.mask
  np.testing.assert_array_equal(np.asarray(jnp.argmax(logits, -1))[m], greedy.tokens[m])


def test_sample_token_top_p_and_greedy():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 400))
  np.testing.assert_array_equal(np.asarray(decoder.sample_token(None, logits, 0.0, 1.0)), 0)
  tiny = decoder.sample_token(jax.random.key(0), logits, 1.0, 1e-6)
  np.testing.assert_array_equal(np.asarray(tiny), 0)
  nucleus = np.asarray(decoder.sample_token(jax.random.key(1), logits, 1.0, 0.7))  # keeps {0, 1}: 0.5 < 0.7 <= 0.8
  assert set(np.unique(nucleus)) == {0, 1}
  full = np.asarray(decoder.sample_token(jax.random.key(2), logits, 1.0, 1.0))
  assert set(np.unique(full)) == {0, 1, 2, 3}


def test_left_padding_does_not_change_logprobs(model):
  module, params, logprobs = model
  comp = np.asarray([TOK.encode("42", bos=False)], np.int32)
  a = logprobs(params, *left_pad([TOK.encode("3+4=")], 8, TOK.pad_id), comp)
  b = logprobs(params, *left_pad([TOK.encode("13+4=")], 8, TOK.pad_id), comp)
  c = logprobs(params, *left_pad([TOK.encode("3+4=")], 8, TOK.pad_id)[::-1][::-1], comp)
  np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-6)
  assert not np.allclose(np.asarray(a), np.asarray(b))  # the prompt matters
  short = jax.jit(lambda p, *x: decoder.token_logprobs(module, p, *x)[0])(
      params, *left_pad([TOK.encode("3+4=")], 5, TOK.pad_id), comp)
  np.testing.assert_allclose(np.asarray(a), np.asarray(short), atol=1e-5)


def test_rope_layouts_are_permutations_of_each_other():
  x = jax.random.normal(jax.random.key(0), (1, 3, 2, 8))
  pos = jnp.arange(3)[None]
  perm = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])  # interleaved -> half-split order
  a = decoder.rope(x, pos, 1e4, True)[..., perm]
  b = decoder.rope(x[..., perm], pos, 1e4, False)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
  c = decoder.rope(x, pos, 1e4, False)
  assert not np.allclose(np.asarray(decoder.rope(x, pos, 1e4, True)), np.asarray(c))
