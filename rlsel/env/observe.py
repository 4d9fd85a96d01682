"""What the agent and the scorers see of a selection: the action mask, the observation, the mask features."""

import jax.numpy as jnp

from rlsel.env.types import EnvParams, Obs


def mask_features(taken: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
  """Compact summary of a selection [2C]: share of each cluster taken, and each cluster's share of the budget."""
  t = taken.astype(jnp.float32)
  return jnp.concatenate([t / jnp.maximum(params.sizes, 1), t / params.budget], -1)


def action_mask(taken: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
  """Clusters that may be chosen: examples left (chunk mode: a full chunk left, unless no cluster has one)."""
  left = params.sizes - taken
  any_left = left > 0
  if params.whole:
    return any_left
  need = jnp.maximum(jnp.minimum(params.chunk, params.budget - taken.sum()), 1)
  full = left >= need
  return jnp.where(jnp.any(full), full, any_left)


def observe(taken: jnp.ndarray, step: jnp.ndarray, params: EnvParams) -> Obs:
  """The observation depends only on (taken, step) and the params, so replay buffers store just those."""
  sizes = jnp.maximum(params.sizes, 1).astype(jnp.float32)
  t = taken.astype(jnp.float32)
  am = action_mask(taken, params)
  dyn = jnp.stack([t / sizes, (params.sizes - taken) / sizes, t / params.budget, am.astype(jnp.float32)], -1)
  glob = jnp.stack([(params.budget - t.sum()) / params.budget, step.astype(jnp.float32) / params.max_steps])
  return Obs(dyn=dyn, glob=glob, action_mask=am)
