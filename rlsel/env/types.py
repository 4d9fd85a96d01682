"""The environment's data: fixed pool parameters, the per-episode state, and the dynamic observation."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from rlsel import proxy as proxy_lib


@struct.dataclass
class EnvParams:
  """The fixed pool. Arrays: feats [C, F], sizes [C], order [C, W] (pool rows per cluster, -1 padded),
  values [C] (toy reward only), proxy data, surrogate params. The rest is static, the reward included (a hashable
  `rlsel.env.rewards.RewardFn`). `shuffle`: every episode takes a cluster's rows in a fresh random order; False
  keeps `order` (rows ranked by a priority, best first). Label quotas (optional, both or neither): `cluster_label`
  [C], the one label of each cluster's rows, and `quota` (static, K ints), the examples each label may take (summing
  to the budget), so a selection keeps the labels' proportions as the stratified baselines do. `base` [C] (optional):
  examples of each cluster every episode starts with (its first rows in the episode's order, so a fresh random take per
  episode); the actions then spend only the rest of the budget. `base_total` is its sum (static). `pick` (optional,
  proxy.pick_share > 0): the proxy data with rows of the reward split kept from the reward (its rx, ry), on which the
  selector judges its final candidates; the environment never reads it."""
  feats: jnp.ndarray
  sizes: jnp.ndarray
  order: jnp.ndarray
  values: jnp.ndarray
  proxy: Optional[proxy_lib.ProxyData]
  surrogate: Optional[dict]
  num_rows: int = struct.field(pytree_node=False)
  budget: int = struct.field(pytree_node=False)
  chunk: int = struct.field(pytree_node=False)      # max examples one step adds (the biggest cluster if whole)
  whole: bool = struct.field(pytree_node=False)
  max_steps: int = struct.field(pytree_node=False)
  reward: Any = struct.field(pytree_node=False)    # a RewardFn (rlsel/env/rewards.py)
  timing: str = struct.field(pytree_node=False)
  proxy_spec: Optional[proxy_lib.ProxySpec] = struct.field(pytree_node=False, default=None)
  shuffle: bool = struct.field(pytree_node=False, default=True)
  cluster_label: Optional[jnp.ndarray] = None
  quota: Optional[tuple] = struct.field(pytree_node=False, default=None)
  base: Optional[jnp.ndarray] = None
  base_total: int = struct.field(pytree_node=False, default=0)
  pick: Optional[proxy_lib.ProxyData] = None


@struct.dataclass
class EnvState:
  mask: jnp.ndarray        # [N] bool, examples selected so far
  taken: jnp.ndarray       # [C] int32, examples taken per cluster
  step: jnp.ndarray        # int32
  score: jnp.ndarray       # float32, current score of the selection
  init_score: jnp.ndarray  # float32, score of the empty selection
  order: jnp.ndarray       # [C, W] int32, this episode's order within each cluster
  rows: jnp.ndarray        # [R'] int32, reward-split rows scored this episode (a dummy [1] without subsampling)
  proxy_key: jax.Array     # one fine-tune key per episode (common random numbers: less noisy score changes)
  done: jnp.ndarray        # bool
  reward_state: Any = ()   # what the reward carries between steps (the incremental proxy's params); () if nothing


class Obs(NamedTuple):
  """The dynamic part of the observation; the static cluster features are `EnvParams.feats` (not copied per env)."""
  dyn: jnp.ndarray          # [C, 4] taken/size, left/size, taken/budget, action mask
  glob: jnp.ndarray         # [2] budget left / budget, step / max_steps
  action_mask: jnp.ndarray  # [C] bool
