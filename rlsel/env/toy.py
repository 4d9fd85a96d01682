"""The toy pool: reward = sum of hidden per-cluster values (the environment's and the agents' tests, CLIMB's)."""

import jax
import numpy as np

from rlsel.env.core import make_params
from rlsel.env.rewards import ToyReward
from rlsel.env.types import EnvParams


def toy_params(key: jax.Array, num_clusters: int = 8, cluster_size=12, budget: int = 24, chunk: int = 4,
               feat_dim: int = 6, timing: str = "step", whole: bool = False, cluster_labels=None,
               quota=None, base=None) -> EnvParams:
  """A synthetic pool whose score is sum_c value_c * taken_c / budget with hidden random values in [0, 1).

  `cluster_size` is an int or a sequence of C sizes. Features are random and carry no hint of the values, so an
  agent must learn the good clusters from reward alone. `cluster_labels` [C] and `quota` [K] (optional, together):
  each cluster's label and the label quotas of the environment. `base` [C] (optional): a coverage base (`make_params`).
  """
  k_feat, k_val = jax.random.split(key)
  sizes = np.full(num_clusters, cluster_size) if np.isscalar(cluster_size) else np.asarray(cluster_size)
  assign = np.repeat(np.arange(num_clusters), sizes)
  feats = np.asarray(jax.random.normal(k_feat, (num_clusters, feat_dim)))
  values = np.asarray(jax.random.uniform(k_val, (num_clusters,)))
  labels = None if cluster_labels is None else np.asarray(cluster_labels)[assign]
  return make_params(feats=feats, assign=assign, budget=budget, chunk=chunk, whole=whole, reward=ToyReward(),
                     timing=timing, values=values, labels=labels, quota=quota, base=base)


def toy_optimal_return(params: EnvParams) -> float:
  """Best achievable return on a toy pool: take the most valuable clusters first, in allowed steps."""
  values, sizes = np.asarray(params.values), np.asarray(params.sizes)
  left, total = params.budget, 0.0
  for k in np.argsort(-values):
    if params.whole:
      take = min(sizes[k], left)
    else:  # whole chunks only (the action mask hides partial chunks while full ones exist)
      take = min((sizes[k] // params.chunk) * params.chunk, left)
    total += values[k] * take
    left -= take
    if left <= 0:
      break
  return float(total / params.budget)
