"""LearnAlign for GRPO: warm the policy up with a few GRPO steps on a random subset of the pool, roll out G samples of
candidate prompts there, and score each by learnability-weighted gradient alignment,
score_i = V_i phi_hat_i . mean_j V_j phi_hat_j with V_i = p_i (1 - p_i) (p_i its group success rate) and phi_hat_i the
unit JL-projected policy gradient of its group (`rlsel.selectors.learnalign.learnalign_scores`, O(n d)).
GRPO then trains from the common start on the top N prompts.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from rlsel.errors import require
from rlsel.rlvr import grpo, prompt_grads
from rlsel.selectors import gradients
from rlsel.selectors.learnalign import learnalign_scores


def warmup_grpo(policy, update, optimizer, params0, train, rng: np.random.Generator, key, rlvr_cfg):
  """`learnalign.warmup_steps` GRPO steps on prompts drawn from a random `warmup_fraction` of the pool -> params."""
  la, g = rlvr_cfg.learnalign, rlvr_cfg.grpo
  n_sub = max(g.prompts_per_step, int(round(la.warmup_fraction * len(train))))
  subset = rng.choice(len(train), size=min(n_sub, len(train)), replace=False)
  state = grpo.init_state(params0, optimizer)
  for step in range(la.warmup_steps):
    ids = rng.choice(subset, size=g.prompts_per_step, replace=False)
    state, _, _ = grpo.grpo_step(policy, update, state, params0, train, ids, jax.random.fold_in(key, step), g)
  return state.params


def select(policy, update, optimizer, params0, train, rng: np.random.Generator, key, rlvr_cfg):
  """(top-N pool positions, info dict with the phase timings and the selected prompts' mean success rate)."""
  la, g = rlvr_cfg.learnalign, rlvr_cfg.grpo
  n_cand = min(la.candidates, len(train))
  top_n = int(round(la.top_fraction * n_cand))
  require(top_n >= g.prompts_per_step, f"learnalign keeps {top_n} prompts, fewer than rlvr.grpo.prompts_per_step="
          f"{g.prompts_per_step}; raise rlvr.learnalign.candidates or top_fraction")
  k_warm, k_roll, k_proj = jax.random.split(key, 3)
  t0 = time.perf_counter()
  params = warmup_grpo(policy, update, optimizer, params0, train, rng, k_warm, rlvr_cfg)
  jax.block_until_ready(params)
  t1 = time.perf_counter()
  cand = rng.choice(len(train), size=n_cand, replace=False)
  groups = prompt_grads.rollout_many(policy, params, train, cand, g.group_size, g.prompts_per_step, k_roll)
  p = prompt_grads.success_rates(groups)
  t2 = time.perf_counter()
  projector = gradients.Projector(la.projection_kind, k_proj, la.projection_dim, la.projection_block)
  feats = prompt_grads.prompt_features(policy.module, params, groups, projector, la.grad_batch_prompts, g.adv_eps)
  scores = np.asarray(learnalign_scores(jnp.asarray(feats), jnp.asarray(p)))
  top = gradients.top_k_positions(scores, top_n)
  t3 = time.perf_counter()
  info = {"warmup_grpo_seconds": t1 - t0, "rollout_seconds": t2 - t1, "gradient_seconds": t3 - t2,
          "candidates": int(n_cand), "mean_p_candidates": float(p.mean()), "mean_p_selected": float(p[top].mean())}
  return cand[top], info
