"""The selection environment, pure and functional (gymnax/Jumanji style).

`reset(key, params) -> (state, obs)` and `step(key, state, action, params) -> (state, obs, reward, done, info)`.
An action names a cluster; the step adds that cluster's next `chunk` not-yet-selected examples (in a per-episode
random order) or, with `whole=True`, the whole cluster. The episode ends when exactly `budget` examples are chosen
(the last chunk is cut). Episodes have a fixed length bound `max_steps`; steps after the end are no-ops with zero
reward, so a batch of episodes runs under `vmap` with no auto-reset branch.

Chunk mode masks clusters with fewer than a full chunk left (unless none has a full chunk), which makes every
episode exactly ceil(budget / chunk) steps whenever the pool has slack (see `episode_bound`).

The score behind the reward is pluggable (`EnvParams.reward`): "proxy" (fine-tuned proxy on the reward split),
"surrogate" (the learned MLP on mask features) or "toy" (sum of hidden per-cluster values; `toy_params`).
"""

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlsel import proxy as proxy_lib
from rlsel import surrogate as surrogate_lib
from rlsel.errors import UserError

REWARDS = ("proxy", "surrogate", "toy")
TIMINGS = ("step", "end")


@struct.dataclass
class EnvParams:
  """The fixed pool. Arrays: feats [C, F], sizes [C], order [C, W] (pool rows per cluster, -1 padded),
  values [C] (toy reward only), proxy data, surrogate params. The rest is static."""
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
  reward: str = struct.field(pytree_node=False)
  timing: str = struct.field(pytree_node=False)
  proxy_spec: Optional[proxy_lib.ProxySpec] = struct.field(pytree_node=False, default=None)
  surrogate_hidden: int = struct.field(pytree_node=False, default=0)


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


class Obs(NamedTuple):
  """The dynamic part of the observation; the static cluster features are `EnvParams.feats` (not copied per env)."""
  dyn: jnp.ndarray          # [C, 4] taken/size, left/size, taken/budget, action mask
  glob: jnp.ndarray         # [2] budget left / budget, step / max_steps
  action_mask: jnp.ndarray  # [C] bool


def episode_bound(sizes: np.ndarray, budget: int, chunk: int, whole: bool) -> int:
  """Steps that always suffice to meet the budget (exact in the usual case)."""
  sizes = np.asarray(sizes)
  if whole:
    return int(np.searchsorted(np.cumsum(np.sort(sizes)), budget) + 1)
  c, n = sizes.shape[0], int(sizes.sum())
  full = -(-budget // chunk)
  # If the pool keeps C*(chunk-1) examples spare, some cluster always has a full chunk left: exactly `full` steps.
  return full if n - budget >= c * (chunk - 1) else full + c


def make_params(*, feats, assign, budget: int, chunk: int, whole: bool = False, reward: str = "proxy",
                timing: str = "step", proxy_spec=None, proxy_data=None, values=None, surrogate_params=None,
                surrogate_hidden: int = 0) -> EnvParams:
  """Builds EnvParams from cluster features [C, F] and the cluster id of each selectable row [N]."""
  assign = np.asarray(assign, np.int64)
  feats = np.asarray(feats, np.float32)
  c, n = feats.shape[0], assign.shape[0]
  if reward not in REWARDS:
    raise UserError(f"env reward {reward!r} is unknown; choose one of {', '.join(REWARDS)}")
  if timing not in TIMINGS:
    raise UserError(f"proxy.reward_timing={timing!r} is unknown; choose one of {', '.join(TIMINGS)}")
  if not 0 < budget <= n:
    raise UserError(f"the budget of {budget} examples must be between 1 and the {n} selectable examples; "
                    "lower --config.budget or --config.proxy.reward_fraction")
  if assign.min() < 0 or assign.max() >= c:
    raise ValueError("cluster ids must lie in [0, C)")
  sizes = np.bincount(assign, minlength=c)
  if whole:
    chunk = int(sizes.max())
  if chunk < 1:
    raise UserError(f"rl.chunk={chunk} must be a positive number of examples, 'auto' or 'cluster'")
  width = int(sizes.max()) + chunk  # padded so a dynamic slice of `chunk` never clamps
  order = np.full((c, width), -1, np.int32)
  by = np.argsort(assign, kind="stable")
  starts = np.concatenate([[0], np.cumsum(sizes)])
  for k in range(c):
    order[k, :sizes[k]] = by[starts[k]:starts[k + 1]]
  return EnvParams(
      feats=jnp.asarray(feats), sizes=jnp.asarray(sizes, jnp.int32), order=jnp.asarray(order),
      values=jnp.asarray(np.zeros(c) if values is None else values, jnp.float32),
      proxy=proxy_data, surrogate=surrogate_params, num_rows=n, budget=int(budget), chunk=int(chunk),
      whole=bool(whole), max_steps=episode_bound(sizes, budget, chunk, whole), reward=reward, timing=timing,
      proxy_spec=proxy_spec, surrogate_hidden=int(surrogate_hidden))


def resolve_chunk(chunk, budget: int, episode_steps: int):
  """Config `rl.chunk` ("auto", an integer, or "cluster") -> (chunk examples, whole)."""
  s = str(chunk).strip().lower()
  if s == "cluster":
    return 1, True
  if s == "auto":
    if int(episode_steps) < 1:
      raise UserError(f"rl.episode_steps={episode_steps} must be a positive integer")
    return max(1, -(-budget // int(episode_steps))), False
  try:
    k = int(s)
  except ValueError:
    raise UserError(f"rl.chunk={chunk!r} must be 'auto', 'cluster' or a positive integer") from None
  if k < 1:
    raise UserError(f"rl.chunk={chunk!r} must be 'auto', 'cluster' or a positive integer")
  return k, False


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


def _draw_selected(taken, order):
  """A sampler of uniformly drawn selected rows, from counts and the episode order (O(log C) per draw)."""
  cs = jnp.cumsum(taken)
  total = jnp.maximum(cs[-1], 1)

  def draw(key, shape):
    u = jax.random.randint(key, shape, 0, total)
    c = jnp.searchsorted(cs, u, side="right")
    j = u - (cs[c] - taken[c])
    return order[c, j]

  return draw


def _score(key, taken, order, rows, params: EnvParams):
  """Score of the selection described by `taken` under the params' reward kind."""
  if params.reward == "toy":
    return jnp.dot(params.values, taken.astype(jnp.float32)) / params.budget
  if params.reward == "surrogate":
    return surrogate_lib.predict(params.surrogate_hidden, params.surrogate, mask_features(taken, params))
  draw = _draw_selected(taken, order)
  return proxy_lib.evaluate(key, params.proxy_spec, params.proxy, draw, rows)


def _initial_score(rows, params: EnvParams):
  if params.reward == "toy":
    return jnp.zeros((), jnp.float32)
  return proxy_lib.reward_score(params.proxy_spec, params.proxy.init_params, params.proxy, rows)


def reset(key: jax.Array, params: EnvParams):
  k_perm, k_rows, k_proxy = jax.random.split(key, 3)
  valid = params.order >= 0
  u = jnp.where(valid, jax.random.uniform(k_perm, params.order.shape), 2.0)
  order = jnp.take_along_axis(params.order, jnp.argsort(u, axis=1), axis=1)
  if params.proxy is not None:
    rows = proxy_lib.reward_rows(k_rows, params.proxy_spec, params.proxy)
  else:
    rows = jnp.zeros((1,), jnp.int32)
  s0 = _initial_score(rows, params)
  c = params.sizes.shape[0]
  state = EnvState(mask=jnp.zeros((params.num_rows,), bool), taken=jnp.zeros((c,), jnp.int32),
                   step=jnp.zeros((), jnp.int32), score=s0, init_score=s0, order=order, rows=rows,
                   proxy_key=k_proxy, done=jnp.zeros((), bool))
  return state, observe(state.taken, state.step, params)


def step(key: jax.Array, state: EnvState, action: jnp.ndarray, params: EnvParams):
  """Adds the chosen cluster's next chunk; reward = change in score ("step") or final - initial ("end").

  The proxy fine-tune uses the episode's `proxy_key` (drawn at reset), so within an episode the score is a fixed
  function of the selected set; `key` is accepted for the gymnax signature and future stochastic rewards."""
  del key
  chex.assert_rank(action, 0)
  c = action
  taken = state.taken
  left = params.sizes[c] - taken[c]
  ok = action_mask(taken, params)[c] & ~state.done
  n_add = jnp.where(ok, jnp.minimum(jnp.minimum(params.chunk, left), params.budget - taken.sum()), 0)
  idx = jax.lax.dynamic_slice(state.order[c], (taken[c],), (params.chunk,))
  rows = jnp.where(jnp.arange(params.chunk) < n_add, idx, params.num_rows)
  mask = state.mask.at[rows].set(True, mode="drop")
  taken = taken.at[c].add(n_add)
  done = taken.sum() >= params.budget
  finishing = done & ~state.done
  if params.timing == "end":
    new_score = jax.lax.cond(finishing, lambda: _score(state.proxy_key, taken, state.order, state.rows, params),
                             lambda: state.score)
    reward = jnp.where(finishing, new_score - state.init_score, 0.0)
  else:
    new_score = jnp.where(state.done, state.score, _score(state.proxy_key, taken, state.order, state.rows, params))
    reward = new_score - state.score
  new = state.replace(mask=mask, taken=taken, step=state.step + 1, score=new_score, done=done)
  info = {"added": n_add, "valid": ~state.done, "score": new_score}
  return new, observe(taken, new.step, params), reward.astype(jnp.float32), done, info


# ---------------------------------------------------------------------------------------------------------------------
# The toy pool: reward = sum of hidden per-cluster values (tests here, and CLIMB in issue 8, reuse it).

def toy_params(key: jax.Array, num_clusters: int = 8, cluster_size=12, budget: int = 24, chunk: int = 4,
               feat_dim: int = 6, timing: str = "step", whole: bool = False) -> EnvParams:
  """A synthetic pool whose score is sum_c value_c * taken_c / budget with hidden random values in [0, 1).

  `cluster_size` is an int or a sequence of C sizes. Features are random and carry no hint of the values, so an
  agent must learn the good clusters from reward alone.
  """
  k_feat, k_val = jax.random.split(key)
  sizes = np.full(num_clusters, cluster_size) if np.isscalar(cluster_size) else np.asarray(cluster_size)
  assign = np.repeat(np.arange(num_clusters), sizes)
  feats = np.asarray(jax.random.normal(k_feat, (num_clusters, feat_dim)))
  values = np.asarray(jax.random.uniform(k_val, (num_clusters,)))
  return make_params(feats=feats, assign=assign, budget=budget, chunk=chunk, whole=whole, reward="toy",
                     timing=timing, values=values)


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
