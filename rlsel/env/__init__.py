"""The selection environment: a pool clustered into actions, a chosen-examples mask as state, a pluggable reward.

- `types`: `EnvParams` (the fixed pool, static settings and the reward), `EnvState`, `Obs`;
- `observe`: action mask, observation, mask features;
- `rewards`: `RewardFn` and its kinds (proxy restarted or carried through the episode, surrogate, toy, none);
- `core`: `make_params`, `reset`, `step`, `score` (pure; `vmap` over episodes, `jit` end to end);
- `toy`: a synthetic pool with hidden per-cluster values;
- `build`: a real pool -> reward split, clusters, initial proxy, `EnvParams` (imported on its own: it pulls in
  k-means and the data utilities).
"""

from rlsel.env.core import TIMINGS, episode_bound, make_params, reset, resolve_chunk, score, start_counts, step
from rlsel.env.observe import action_mask, mask_features, observe
from rlsel.env.rewards import (IncrementalProxyReward, NoReward, ProxyReward, RewardFn, SurrogateReward, ToyReward,
                               proxy_reward)
from rlsel.env.toy import toy_optimal_return, toy_params
from rlsel.env.types import EnvParams, EnvState, Obs

__all__ = ["TIMINGS", "EnvParams", "EnvState", "IncrementalProxyReward", "NoReward", "Obs", "ProxyReward", "RewardFn",
           "SurrogateReward", "ToyReward", "action_mask", "episode_bound", "make_params", "mask_features", "observe",
           "proxy_reward", "reset", "resolve_chunk", "score", "start_counts", "step", "toy_optimal_return",
           "toy_params"]
