"""The environment's dynamics, pure and functional (gymnax/Jumanji style): `make_params`, `reset`, `step`, `score`.

An action names a cluster; the step adds that cluster's next `chunk` not-yet-selected examples (in a per-episode
random order, or best first by a fixed per-row priority when `make_params` is given one) or, with `whole=True`, the
whole cluster. The episode ends when exactly `budget` examples are chosen (the last chunk is cut). Episodes have a
fixed length bound `max_steps`; steps after the end are no-ops with zero reward, so a batch of episodes runs under
`vmap` with no auto-reset branch.

Chunk mode masks clusters with fewer than a full chunk left (unless none has a full chunk), which makes every
episode exactly ceil(budget / chunk) steps whenever the pool has slack (see `episode_bound`).

With a coverage base (`make_params(base=...)`, `rl.coverage_share`), every episode starts with that many examples of
each cluster already chosen (a fresh random take, in proportion to the cluster sizes) and its initial score is the
base's; the actions spend the rest of the budget.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlsel import proxy as proxy_lib
from rlsel.env.observe import action_mask, observe, room
from rlsel.env.rewards import RewardFn
from rlsel.env.types import EnvParams, EnvState
from rlsel.errors import UserError

TIMINGS = ("step", "end")


def episode_bound(sizes: np.ndarray, budget: int, chunk: int, whole: bool, cluster_label: np.ndarray = None,
                  quota: np.ndarray = None) -> int:
  """Steps that always suffice to meet the budget (exact in the usual case); with label quotas, the sum of each
  label's own bound (its clusters, its quota)."""
  sizes = np.asarray(sizes)
  if quota is not None:
    cluster_label = np.asarray(cluster_label)
    return sum(episode_bound(sizes[cluster_label == k], int(q), chunk, whole) for k, q in enumerate(quota) if q > 0)
  if whole:
    return int(np.searchsorted(np.cumsum(np.sort(sizes)), budget) + 1)
  c, n = sizes.shape[0], int(sizes.sum())
  full = -(-budget // chunk)
  # If the pool keeps C*(chunk-1) examples spare, some cluster always has a full chunk left: exactly `full` steps.
  return full if n - budget >= c * (chunk - 1) else full + c


def make_params(*, feats, assign, budget: int, chunk: int, reward: RewardFn, whole: bool = False,
                timing: str = "step", proxy_spec=None, proxy_data=None, values=None,
                surrogate_params=None, priority=None, labels=None, quota=None, base=None) -> EnvParams:
  """Builds EnvParams from cluster features [C, F], the cluster id of each selectable row [N] and the reward.
  `priority` [N] (optional): each cluster hands out its rows by decreasing priority (ties in row order) in every
  episode, instead of a fresh random order per episode. `labels` [N] and `quota` [K] (optional, together): label
  quotas; every cluster's rows must share one label, and each label needs at least its quota of rows. `base` [C]
  (optional, not with quotas): examples of each cluster every episode starts with (`rlsel.env.build.coverage_base`),
  fewer than the budget in all."""
  assign = np.asarray(assign, np.int64)
  feats = np.asarray(feats, np.float32)
  c, n = feats.shape[0], assign.shape[0]
  if not isinstance(reward, RewardFn):
    raise TypeError(f"reward must be a rlsel.env.rewards.RewardFn, got {reward!r}")
  if timing not in TIMINGS:
    raise UserError(f"proxy.reward_timing={timing!r} is unknown; choose one of {', '.join(TIMINGS)}")
  if not 0 < budget <= n:
    raise UserError(f"the budget of {budget} examples must be between 1 and the {n} selectable examples; "
                    "lower --config.budget or --config.proxy.reward_fraction")
  if assign.min() < 0 or assign.max() >= c:
    raise ValueError("cluster ids must lie in [0, C)")
  sizes = np.bincount(assign, minlength=c)
  cluster_label = None
  if (labels is None) != (quota is None):
    raise ValueError("label quotas need both the rows' labels and the quota per label")
  if quota is not None:
    labels, quota = np.asarray(labels, np.int64), np.asarray(quota, np.int64)
    chex.assert_shape(labels, (n,))
    cluster_label = np.zeros(c, np.int64)
    cluster_label[assign] = labels
    if np.any(cluster_label[assign] != labels) or labels.min() < 0 or labels.max() >= quota.shape[0]:
      raise UserError("label quotas need clusters of one label each: add --config.kmeans.stratified=True")
    have = np.bincount(labels, minlength=quota.shape[0])
    if quota.min() < 0 or quota.sum() != budget or np.any(quota > have):
      raise UserError(f"the label quotas {quota.tolist()} must sum to the budget of {budget} and not exceed the "
                      f"selectable rows of each label {have.tolist()}; lower --config.budget or set "
                      "--config.rl.label_quotas=False")
  base_total = 0
  if base is not None:
    base = np.asarray(base, np.int64)
    chex.assert_shape(base, (c,))
    if quota is not None:
      raise UserError("a coverage base (rl.coverage_share) and label quotas (rl.label_quotas) cannot be combined yet")
    if base.min() < 0 or np.any(base > sizes) or base.sum() >= budget:
      raise ValueError(f"a coverage base must take 0..size rows of each cluster and fewer than the budget of {budget} "
                       f"in all, got {int(base.sum())}")
    base_total = int(base.sum())
  if whole:
    chunk = int(sizes.max())
  if chunk < 1:
    raise UserError(f"rl.chunk={chunk} must be a positive number of examples, 'auto' or 'cluster'")
  width = int(sizes.max()) + chunk  # padded so a dynamic slice of `chunk` never clamps
  order = np.full((c, width), -1, np.int32)
  if priority is None:
    by = np.argsort(assign, kind="stable")
  else:
    priority = np.asarray(priority, np.float64)
    chex.assert_shape(priority, (n,))
    if not np.isfinite(priority).all():
      raise ValueError("every row's priority must be finite")
    by = np.lexsort((-priority, assign))  # by cluster, then best first
  starts = np.concatenate([[0], np.cumsum(sizes)])
  for k in range(c):
    order[k, :sizes[k]] = by[starts[k]:starts[k + 1]]
  return EnvParams(
      feats=jnp.asarray(feats), sizes=jnp.asarray(sizes, jnp.int32), order=jnp.asarray(order),
      values=jnp.asarray(np.zeros(c) if values is None else values, jnp.float32),
      proxy=proxy_data, surrogate=surrogate_params, num_rows=n, budget=int(budget), chunk=int(chunk),
      whole=bool(whole), reward=reward,
      max_steps=episode_bound(sizes - (0 if base is None else base), budget - base_total, chunk, whole,
                              cluster_label, quota),
      timing=timing, proxy_spec=proxy_spec, shuffle=priority is None,
      cluster_label=None if quota is None else jnp.asarray(cluster_label, jnp.int32),
      quota=None if quota is None else tuple(int(q) for q in quota),
      base=None if base is None else jnp.asarray(base, jnp.int32), base_total=base_total)


def resolve_chunk(chunk, budget: int, episode_steps: int):
  """Config `rl.chunk` ("auto", an integer, or "cluster") -> (chunk examples, whole). `budget`: what the actions
  spend (the budget less any coverage base)."""
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


def score(state: EnvState, params: EnvParams) -> jnp.ndarray:
  """The reward's score of an episode's current selection (with the episode's proxy key, as its steps use)."""
  return params.reward(state.proxy_key, state.taken, state.order, state.rows, params)


def start_counts(params: EnvParams) -> jnp.ndarray:
  """[C] examples of each cluster an episode starts with: the coverage base, or none."""
  return jnp.zeros(params.sizes.shape, jnp.int32) if params.base is None else params.base


def reset(key: jax.Array, params: EnvParams):
  """A fresh episode: the clusters' rows in a new random order (unless ranked), the base (if any) already chosen."""
  k_perm, k_rows, k_proxy = jax.random.split(key, 3)
  order = params.order
  if params.shuffle:
    u = jnp.where(order >= 0, jax.random.uniform(k_perm, order.shape), 2.0)
    order = jnp.take_along_axis(order, jnp.argsort(u, axis=1), axis=1)
  if params.proxy is not None:
    rows = proxy_lib.reward_rows(k_rows, params.proxy_spec, params.proxy)
  else:
    rows = jnp.zeros((1,), jnp.int32)
  fn = params.reward
  carried = fn.init_state(params)
  taken = start_counts(params)
  mask = jnp.zeros((params.num_rows,), bool)
  if params.base is None:
    s0 = fn.initial(rows, params)
  else:
    first = jnp.arange(order.shape[1])[None, :] < params.base[:, None]
    mask = mask.at[jnp.where(first, order, params.num_rows).ravel()].set(True, mode="drop")
    carried = fn.advance(k_proxy, carried, taken, order, params)
    s0 = fn.current(k_proxy, carried, taken, order, rows, params)
  state = EnvState(mask=mask, taken=taken, step=jnp.zeros((), jnp.int32), score=s0, init_score=s0, order=order,
                   rows=rows, proxy_key=k_proxy, done=jnp.zeros((), bool), reward_state=carried)
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
  r = room(taken, params)
  n_add = jnp.where(ok, jnp.minimum(jnp.minimum(params.chunk, left), r if params.quota is None else r[c]), 0)
  idx = jax.lax.dynamic_slice(state.order[c], (taken[c],), (params.chunk,))
  rows = jnp.where(jnp.arange(params.chunk) < n_add, idx, params.num_rows)
  mask = state.mask.at[rows].set(True, mode="drop")
  taken = taken.at[c].add(n_add)
  done = taken.sum() >= params.budget
  finishing = done & ~state.done
  fn = params.reward
  carried = fn.advance(state.proxy_key, state.reward_state, taken, state.order, params)
  carried = jax.tree.map(lambda new, old: jnp.where(state.done, old, new), carried, state.reward_state)
  current = lambda: fn.current(state.proxy_key, carried, taken, state.order, state.rows, params)
  if params.timing == "end":
    new_score = jax.lax.cond(finishing, current, lambda: state.score)
    reward = jnp.where(finishing, new_score - state.init_score, 0.0)
  else:
    new_score = jnp.where(state.done, state.score, current())
    reward = new_score - state.score
  new = state.replace(mask=mask, taken=taken, step=state.step + 1, score=new_score, done=done, reward_state=carried)
  info = {"added": n_add, "valid": ~state.done, "score": new_score}
  return new, observe(taken, new.step, params), reward.astype(jnp.float32), done, info
