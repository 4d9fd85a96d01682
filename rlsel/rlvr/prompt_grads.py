"""Per-prompt policy-gradient features for RLVR prompt selection (LearnAlign, CROPI).

A prompt's feature is the gradient, with respect to all decoder parameters, of the unclipped GRPO loss on its own group
of G rollouts, -mean_rows token-mean(pi_theta / pi_beta * A), where pi_beta is the policy that sampled the rollouts and
A the group-normalised advantage. At theta = beta it is the on-policy policy gradient (LearnAlign); at a later
checkpoint the ratio makes it an off-policy estimate (CROPI). Gradients are flattened and projected with the
projections of `rlsel.selectors.gradients` (dense JL or sparse), one jitted call per batch of prompts.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rlsel.rlvr import grpo
from rlsel.rlvr.decoder import token_logprobs
from rlsel.selectors import gradients


def success_rates(groups: grpo.Groups) -> np.ndarray:
  """p_i: the mean exact-match reward of each prompt's group [n]."""
  return np.asarray(groups.rewards, np.float32).mean(axis=1)


def group_loss(params, module, prompt, prompt_mask, completion, mask, behaviour_logp, advantages):
  """Unclipped GRPO loss of one prompt's G rows: -mean_rows token-mean(exp(logp - behaviour_logp) * A)."""
  logp, _ = token_logprobs(module, params, prompt, prompt_mask, completion)
  obj = jnp.exp(logp - behaviour_logp) * advantages[:, None]
  m = mask.astype(jnp.float32)
  return -jnp.mean(jnp.sum(obj * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))


def num_params(params) -> int:
  return int(ravel_pytree(params)[0].shape[0])


@functools.partial(jax.jit, static_argnames=("module", "kind", "dim", "block", "adv_eps"))
def _features(params, prompt, prompt_mask, completion, mask, behaviour_logp, rewards, key, coords, *, module, kind,
              dim, block, adv_eps):
  """Projected per-prompt gradients [n, dim] for rows grouped [n, G, ...] and rewards [n, G]."""
  chex.assert_rank(rewards, 2)
  adv = grpo.group_advantages(rewards, adv_eps)

  def one(p, pm, c, m, b, a):
    g = jax.grad(group_loss)(params, module, p, pm, c, m, b, a)
    return ravel_pytree(g)[0]

  flat = jax.vmap(one)(prompt, prompt_mask, completion, mask, behaviour_logp, adv)  # [n, P]
  if kind == "sparse":
    return gradients.sparse_project(flat, coords, key, dim, block)
  if kind == "none":
    return flat
  return gradients.dense_project(flat, key, dim, kind, block)


def _grouped(groups: grpo.Groups, rows: np.ndarray):
  """The arrays of the prompts at positions `rows`, reshaped to [len(rows), G, ...]."""
  g = groups.rewards.shape[1]
  take = (rows[:, None] * g + np.arange(g)[None]).reshape(-1)
  out = [np.asarray(a)[take].reshape((len(rows), g) + a.shape[1:]) for a in
         (groups.prompt, groups.prompt_mask, groups.completion, groups.mask, groups.behaviour_logp)]
  return out + [np.asarray(groups.rewards)[rows]]


def prompt_features(module, params, groups: grpo.Groups, projector: gradients.Projector, batch_prompts: int,
                    adv_eps: float) -> np.ndarray:
  """Projected gradients [n, dim] of every prompt in `groups` (fixed-size batches, the last padded, so one compile).

  `projector.kind` "none" returns the raw flattened gradients [n, P] (tests)."""
  n = groups.rewards.shape[0]
  coords = projector.coords if projector.coords is not None else jnp.zeros((1,), jnp.int32)
  out = []
  for s in range(0, n, batch_prompts):
    rows = np.arange(s, min(n, s + batch_prompts))
    padded = np.concatenate([rows, np.full(batch_prompts - len(rows), rows[0])])
    f = _features(params, *_grouped(groups, padded), projector.key, coords, module=module, kind=projector.kind,
                  dim=projector.dim, block=projector.block, adv_eps=float(adv_eps))
    out.append(np.asarray(f)[:len(rows)])
  return np.concatenate(out)


def rollout_many(policy, params, problems, ids, group_size: int, chunk: int, key) -> grpo.Groups:
  """Rollouts of many prompts in fixed chunks of `chunk` prompts (the last padded and trimmed), so the sampler
  compiles once for the GRPO step's shape."""
  ids = np.asarray(ids, np.int64)
  parts = []
  for i, s in enumerate(range(0, len(ids), chunk)):
    part = ids[s:s + chunk]
    padded = np.concatenate([part, np.full(chunk - len(part), part[0])])
    grp = policy.rollout(params, problems, padded, group_size, jax.random.fold_in(key, i))
    keep = len(part) * group_size
    parts.append(grpo.Groups(grp.prompt[:keep], grp.prompt_mask[:keep], grp.completion[:keep], grp.mask[:keep],
                             grp.behaviour_logp[:keep], grp.rewards[:len(part)], grp.prompt_ids[:len(part)]))
  return grpo.concat_groups(parts)
