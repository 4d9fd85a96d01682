"""CROPI for GRPO: curriculum rounds of off-policy gradient influence.

Once, the behaviour policy pi_beta (the common start) rolls out G samples of a random candidate set of pool prompts
and of the validation prompts. At the start of each of R rounds, at the current checkpoint theta, every prompt's
unclipped GRPO-loss gradient on those offline rollouts (ratio pi_theta / pi_beta) is projected sparsely; a candidate's
influence on a validation subset is the cosine to that subset's mean projected gradient. Validation is cut by
difficulty level (one subset per level), the per-level rankings are merged by reciprocal rank, the top `keep_fraction`
of the candidates is kept and GRPO trains on it for T = steps / R steps before the next re-selection.
"""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlsel.errors import require
from rlsel.rlvr import grpo, prompt_grads
from rlsel.selectors import gradients
from rlsel.selectors.cropi import class_influence, reciprocal_rank_fusion


class Offline(NamedTuple):
  """The behaviour policy's rollouts: candidate pool prompts and validation prompts, with validation subset ids."""
  candidates: np.ndarray    # int64 [n]: pool positions
  train_groups: grpo.Groups
  val_groups: grpo.Groups
  val_subset: np.ndarray    # int32 [m]: validation subset (difficulty level, 0 when unknown)
  num_subsets: int


def collect(policy, params_beta, train, validation, rng: np.random.Generator, key, rlvr_cfg) -> Offline:
  c, g = rlvr_cfg.cropi, rlvr_cfg.grpo
  cand = rng.choice(len(train), size=min(c.candidates, len(train)), replace=False)
  val_ids = np.arange(min(c.validation_size, len(validation)))
  k1, k2 = jax.random.split(key)
  tg = prompt_grads.rollout_many(policy, params_beta, train, cand, g.group_size, g.prompts_per_step, k1)
  vg = prompt_grads.rollout_many(policy, params_beta, validation, val_ids, g.group_size, g.prompts_per_step, k2)
  levels = np.maximum(np.asarray(validation.levels)[val_ids], 0)
  _, subset = np.unique(levels, return_inverse=True)
  return Offline(cand, tg, vg, subset.astype(np.int32), int(subset.max()) + 1)


def kept_per_round(rlvr_cfg, n_candidates: int) -> int:
  """Prompts a round keeps: `keep_fraction` of the candidates."""
  return int(round(rlvr_cfg.cropi.keep_fraction * n_candidates))


def keep_count(rlvr_cfg, n_candidates: int) -> int:
  """`kept_per_round`, checked to cover a GRPO step's prompts."""
  k = kept_per_round(rlvr_cfg, n_candidates)
  require(k >= rlvr_cfg.grpo.prompts_per_step, f"cropi keeps {k} prompts, fewer than rlvr.grpo.prompts_per_step="
          f"{rlvr_cfg.grpo.prompts_per_step}; raise rlvr.cropi.candidates or keep_fraction")
  return k


def make_projector(key, module_params, rlvr_cfg) -> gradients.Projector:
  c = rlvr_cfg.cropi
  kc, kp = jax.random.split(key)
  coords = gradients.sparse_coordinates(kc, prompt_grads.num_params(module_params), c.sparse_coords)
  return gradients.Projector("sparse", kp, c.projection_dim, c.projection_block, coords)


def influence_scores(module, params, offline: Offline, projector: gradients.Projector, rlvr_cfg) -> np.ndarray:
  """Fused reciprocal-rank influence [n candidates] at checkpoint `params` (higher = more useful)."""
  c, g = rlvr_cfg.cropi, rlvr_cfg.grpo
  tf = prompt_grads.prompt_features(module, params, offline.train_groups, projector, c.grad_batch_prompts, g.adv_eps)
  vf = prompt_grads.prompt_features(module, params, offline.val_groups, projector, c.grad_batch_prompts, g.adv_eps)
  infl, use = class_influence(jnp.asarray(tf), jnp.asarray(vf), jnp.asarray(offline.val_subset), offline.num_subsets)
  top_n = max(1, kept_per_round(rlvr_cfg, len(offline.candidates)))
  fused = np.asarray(reciprocal_rank_fusion(infl, use.astype(jnp.float32), float(c.rrf_offset), top_n))
  # A prompt whose rollouts all got the same reward has advantage 0, so no gradient: dropped (never ranked at a
  # cosine of 0 above negatively aligned prompts); kept only if too few prompts are informative.
  return np.where(all_equal_rewards(offline.train_groups), -np.inf, fused)


def all_equal_rewards(groups: grpo.Groups) -> np.ndarray:
  """[n] True where every rollout of a prompt got the same reward (a zero policy gradient)."""
  r = np.asarray(groups.rewards)
  return r.min(axis=1) == r.max(axis=1)


def select_round(module, params, offline: Offline, projector: gradients.Projector, rlvr_cfg):
  """(kept pool positions, seconds, how many kept prompts have all-equal rewards) for one round."""
  t0 = time.perf_counter()
  fused = influence_scores(module, params, offline, projector, rlvr_cfg)
  top = gradients.top_k_positions(fused, keep_count(rlvr_cfg, len(offline.candidates)))
  return (offline.candidates[top], time.perf_counter() - t0,
          int(all_equal_rewards(offline.train_groups)[top].sum()))


def round_starts(steps: int, rounds: int) -> set:
  """Steps at which a round begins: R near-equal rounds of T = steps / R (fewer if steps < R)."""
  rounds = max(1, min(rounds, steps))
  return {int(a[0]) for a in np.array_split(np.arange(steps), rounds)}
