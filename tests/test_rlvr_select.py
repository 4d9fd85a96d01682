"""Prompt-selection pieces of the RLVR track: per-prompt policy gradients (LearnAlign, CROPI), CROPI's influence
ranking and round schedule, on a tiny decoder and synthetic rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel import rlvr
from rlsel.rlvr import cropi, decoder, grpo, prompt_grads
from rlsel.selectors import gradients as G
from rlsel.selectors.learnalign import learnalign_scores, learnalign_scores_pairwise

N_PROMPTS, GROUP, P_LEN, N_NEW = 6, 4, 5, 3


@pytest.fixture(scope="module")
def tiny():
  cfg = decoder.DecoderConfig(vocab_size=12, width=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                              mlp_dim=32, rope_theta=10000.0, rms_eps=1e-5, rope_interleaved=False)
  module, params = decoder.init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  rows = N_PROMPTS * GROUP
  prompt = np.repeat(rng.integers(3, 12, (N_PROMPTS, P_LEN)), GROUP, axis=0).astype(np.int32)
  pmask = np.ones((rows, P_LEN), bool)
  comp = rng.integers(3, 12, (rows, N_NEW)).astype(np.int32)
  mask = np.ones((rows, N_NEW), bool)
  mask[::3, -1] = False
  beh = np.asarray(jax.jit(lambda p: decoder.token_logprobs(module, p, prompt, pmask, comp)[0])(params))
  rewards = rng.integers(0, 2, (N_PROMPTS, GROUP)).astype(np.float32)
  rewards[1] = 1.0  # an all-correct group: no advantage, no gradient
  groups = grpo.Groups(prompt, pmask, comp, mask, beh, rewards, np.arange(N_PROMPTS))
  return module, params, groups


def test_prompt_gradients_equal_per_prompt_policy_gradient(tiny):
  module, params, groups = tiny
  raw = prompt_grads.prompt_features(module, params, groups, G.Projector("none", jax.random.key(1), 0, 0), 4, 1e-6)
  assert raw.shape == (N_PROMPTS, prompt_grads.num_params(params))
  adv = grpo.group_advantages(jnp.asarray(groups.rewards), 1e-6)

  @jax.jit
  def pg_grad(p, prompt, pmask, comp, m, a):  # on-policy (theta = beta): -mean_rows token-mean(A grad log pi)
    def loss(q):
      logp, _ = decoder.token_logprobs(module, q, prompt, pmask, comp)
      mf = m.astype(jnp.float32)
      return -jnp.mean(a * jnp.sum(logp * mf, 1) / mf.sum(1))
    return jax.flatten_util.ravel_pytree(jax.grad(loss)(p))[0]

  for i in (0, 3):
    rows = slice(i * GROUP, (i + 1) * GROUP)
    want = pg_grad(params, groups.prompt[rows], groups.prompt_mask[rows], groups.completion[rows], groups.mask[rows],
                   adv[i])
    np.testing.assert_allclose(raw[i], np.asarray(want), rtol=2e-4, atol=1e-6)
  np.testing.assert_array_equal(raw[1], 0.0)
  # LearnAlign's O(n d) score on these features equals its O(n^2) definition; the all-correct prompt scores 0
  p = jnp.asarray(prompt_grads.success_rates(groups))
  got = np.asarray(learnalign_scores(jnp.asarray(raw), p))
  np.testing.assert_allclose(got, np.asarray(learnalign_scores_pairwise(jnp.asarray(raw), p)), rtol=1e-4, atol=1e-9)
  assert got[1] == 0.0


def test_cropi_ranks_the_candidate_that_matches_validation_first(tiny):
  module, params, groups = tiny
  r = rlvr.default_config()
  r.cropi.sparse_coords, r.cropi.projection_dim, r.cropi.projection_block, r.cropi.grad_batch_prompts = 10**6, 64, 512, 4
  val = grpo.Groups(*[a[2 * GROUP:3 * GROUP] if a.shape[0] == N_PROMPTS * GROUP else a[2:3] for a in groups])
  off = cropi.Offline(np.arange(10, 10 + N_PROMPTS), groups, val, np.zeros(1, np.int32), 1)
  proj = cropi.make_projector(jax.random.key(3), params, r)
  fused = cropi.influence_scores(module, params, off, proj, r)
  assert fused.shape == (N_PROMPTS,) and int(np.argmax(fused)) == 2  # candidate 2's group *is* the validation group
  r.grpo.prompts_per_step, r.cropi.keep_fraction = 2, 0.34
  kept, secs, all_equal = cropi.select_round(module, params, off, proj, r)
  assert kept[0] == 12 and len(kept) == 2 and secs > 0
  # A prompt whose rollouts all got the same reward has no gradient: dropped, not ranked at cosine 0.
  flat = np.asarray(groups.rewards).copy()
  flat[2] = flat[2, 0]
  same = grpo.Groups(*[flat if a is groups.rewards else a for a in groups])
  assert cropi.all_equal_rewards(same)[2] and np.isneginf(cropi.influence_scores(module, params, off._replace(
      train_groups=same), proj, r)[2])
  assert 12 not in cropi.select_round(module, params, off._replace(train_groups=same), proj, r)[0]
  # at a later checkpoint the ratio pi_theta / pi_beta reweights the offline rollouts: scores change, still finite
  moved = jax.tree.map(lambda x: x * 1.05, params)
  informative = ~cropi.all_equal_rewards(groups)
  later = cropi.influence_scores(module, moved, off, proj, r)
  assert np.all(np.isfinite(later[informative])) and np.all(np.isneginf(later[~informative]))


def test_cropi_round_starts_split_the_steps():
  assert cropi.round_starts(60, 3) == {0, 20, 40}
  assert cropi.round_starts(10, 3) == {0, 4, 7}
  assert cropi.round_starts(2, 5) == {0, 1}
