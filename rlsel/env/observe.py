"""What the agent and the scorers see of a selection: the action mask, the observation, the mask features."""

import jax
import jax.numpy as jnp

from rlsel.env.types import EnvParams, Obs


def mask_features(taken: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
  """Compact summary of a selection [2C]: share of each cluster taken, and each cluster's share of the budget."""
  t = taken.astype(jnp.float32)
  return jnp.concatenate([t / jnp.maximum(params.sizes, 1), t / params.budget], -1)


def room(taken: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
  """Examples a step may still add: the budget left (a scalar), or with label quotas each cluster's label's quota
  left [C]."""
  if params.quota is None:
    return params.budget - taken.sum()
  used = jax.ops.segment_sum(taken, params.cluster_label, num_segments=len(params.quota))
  return (jnp.asarray(params.quota, jnp.int32) - used)[params.cluster_label]


def action_mask(taken: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
  """Clusters that may be chosen: examples left (chunk mode: a full chunk left, unless no cluster has one). With
  label quotas, only clusters whose label has quota left, and the full-chunk rule applies within each label."""
  left = params.sizes - taken
  r = room(taken, params)
  any_left = left > 0
  if params.quota is not None:
    any_left = any_left & (r > 0)
  if params.whole:
    return any_left
  need = jnp.maximum(jnp.minimum(params.chunk, r), 1)
  full = left >= need
  if params.quota is None:
    return jnp.where(jnp.any(full), full, any_left)
  full = full & any_left
  label_has_full = jax.ops.segment_max(full.astype(jnp.int32), params.cluster_label,
                                       num_segments=len(params.quota)) > 0
  return jnp.where(label_has_full[params.cluster_label], full, any_left)


def observe(taken: jnp.ndarray, step: jnp.ndarray, params: EnvParams) -> Obs:
  """The observation depends only on (taken, step) and the params, so replay buffers store just those."""
  sizes = jnp.maximum(params.sizes, 1).astype(jnp.float32)
  t = taken.astype(jnp.float32)
  am = action_mask(taken, params)
  dyn = jnp.stack([t / sizes, (params.sizes - taken) / sizes, t / params.budget, am.astype(jnp.float32)], -1)
  glob = jnp.stack([(params.budget - t.sum()) / params.budget, step.astype(jnp.float32) / params.max_steps])
  return Obs(dyn=dyn, glob=glob, action_mask=am)
