"""CLIMB-style mixture search over k-means clusters, and the `climb` selector (one module for the concept).

The search: sample allocations, score a share with the real reward, fit a surrogate, keep the predicted best as the
next proposal. `make_search(config, env_params) -> search(key)` is pure, one jit end to end; `search(config, key,
env_params)` runs it compiled. `play` (pure) and `play_jit` (compiled) turn an allocation into a selection.

An allocation `a [C]` (int32) counts the environment's chunks given to each cluster: it sums to
K = ceil((budget - base) / chunk) (base: `rl.coverage_share`, 0 by default) and never exceeds a cluster's available
chunks (`chunk_caps`), so it meets the budget
exactly (the env cuts the last chunk). Under label quotas (`rl.label_quotas`) each label's clusters share exactly
the chunks of its quota (K is their sum). It becomes a selection through the environment itself (`play`): the
episode order drawn from a key, round-robin over the allocated clusters, i.e. the first a_c * chunk examples of
cluster c.
The same round-robin episode is the demonstration the warm-started PPO clones (`Demo`).

Round k: n samples = Dirichlet around a kept allocation (or, for the exploration share, uniform over the simplex),
discretised to chunks; the surrogate's top `score_share` of them (random in round 0) are scored by the real reward
(vmapped, one key per round: common random numbers); the surrogate (rlsel/surrogate.py's MLP on mask features, as PPO's) is
refit on every (allocation, score) pair so far; the top `top_k` distinct ones of the samples and the old proposal
by the surrogate become the new proposal. The search's answer is the surrogate's best among the really scored
allocations (it smooths the proxy's noise and never returns an allocation the reward has not seen); the selector
re-scores the surrogate's best `climb.rescore_top` of them with `proxy.rescore_keys` fresh proxy keys and keeps the
best mean (no winner's curse), on the pick rows where proxy.pick_share set some aside.

The `climb` selector, select(key, pool, budget): the same reward split, clusters and proxy-rewarded environment as
the RL selectors (`rlsel.env.build.build_env`); a jitted search over chunk allocations; the chosen allocation played in the
environment (episode order from the key) gives exactly `budget` ids. The diagnostics hold the real proxy
evaluations, the reward-split score of the chosen subset and of a random (stratified) subset, and timings.
"""

import time
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel import proxy as proxy_lib
from rlsel import surrogate as surrogate_lib
from rlsel.env.build import ENV_SECTIONS, build_pool_env
from rlsel.errors import require
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register
from rlsel.selectors.basic import numpy_rng, top_up
from rlsel.selectors.rl import FAST_COMPILE, judge_candidates


class Demo(NamedTuple):
  """One played episode, time-major [T, ...]: the observation inputs (taken, step), the action and its validity."""
  taken: jnp.ndarray   # [T, C] counts before the step
  step: jnp.ndarray    # [T]
  action: jnp.ndarray  # [T]
  valid: jnp.ndarray   # [T] the episode had not ended before this step


def label_chunks(params: env_lib.EnvParams):
  """With label quotas, the chunks each label's quota takes (a static tuple; its last chunk is cut); else None."""
  return None if params.quota is None else tuple(-(-q // params.chunk) for q in params.quota)


def num_chunks(params: env_lib.EnvParams) -> int:
  """K: chunks in a full selection beyond any coverage base (the last one, or each label's last one under quotas, is
  cut)."""
  per = label_chunks(params)
  return -(-(params.budget - params.base_total) // params.chunk) if per is None else sum(per)


def chunk_caps(params: env_lib.EnvParams) -> jnp.ndarray:
  """Chunks each cluster can give: full chunks (as the env's action mask allows when the pool has slack), or
  started chunks when full ones cannot reach the budget (these always can: budget <= pool size); under label
  quotas the same rule within each label. Counted beyond any coverage base."""
  left = params.sizes - env_lib.start_counts(params)
  full = left // params.chunk
  started = -(-left // params.chunk)
  per = label_chunks(params)
  if per is None:
    return jnp.where(full.sum() >= num_chunks(params), full, started).astype(jnp.int32)
  enough = jax.ops.segment_sum(full, params.cluster_label, num_segments=len(per)) >= jnp.asarray(per)
  return jnp.where(enough[params.cluster_label], full, started).astype(jnp.int32)


def discretise(w: jnp.ndarray, caps: jnp.ndarray, k: int, cluster_label: jnp.ndarray = None,
               per_label: tuple = None) -> jnp.ndarray:
  """Mixture weights [C] -> chunk counts [C] summing to k, within caps: each chunk goes to the cluster furthest
  below its share (largest remainder, capacity aware). With `cluster_label` [C] and `per_label` (chunks of each
  label, summing to k), the weights are rescaled to each label's share and no label gets more than its chunks."""
  limits = None
  if per_label is not None:
    limits = jnp.asarray(per_label, jnp.int32)
    mass = jax.ops.segment_sum(w, cluster_label, num_segments=len(per_label))
    w = w / jnp.maximum(mass[cluster_label], 1e-12) * (limits / k)[cluster_label]

  def add(_, a):
    ok = a < caps
    if limits is not None:
      used = jax.ops.segment_sum(a, cluster_label, num_segments=len(per_label))
      ok = ok & (used < limits)[cluster_label]
    deficit = jnp.where(ok, w * k - a, -jnp.inf)
    return a.at[jnp.argmax(deficit)].add(1)
  return jax.lax.fori_loop(0, k, add, jnp.zeros(w.shape, jnp.int32))


def allocations(w: jnp.ndarray, params: env_lib.EnvParams) -> jnp.ndarray:
  """Mixture weights [..., C] -> chunk allocations [..., C] of the environment (`discretise` with its caps, K and
  label quotas)."""
  caps, k = chunk_caps(params), num_chunks(params)
  one = lambda v: discretise(v, caps, k, params.cluster_label, label_chunks(params))
  return one(w) if w.ndim == 1 else jax.vmap(one)(w)


def features(alloc: jnp.ndarray, params: env_lib.EnvParams) -> jnp.ndarray:
  """Predictor input of allocations [..., C]: the env's mask features of the (uncut) counts, any base included."""
  taken = jnp.minimum(env_lib.start_counts(params) + alloc * params.chunk, params.sizes)
  return env_lib.mask_features(taken, params)


def play(key: jax.Array, alloc: jnp.ndarray, params: env_lib.EnvParams):
  """Plays an allocation in the environment without scoring it; returns (final EnvState, Demo).

  Each step takes the allocated cluster visited least so far (lowest index on ties): round-robin. Should the
  allocation run out before the budget (a pool without slack), the first allowed cluster fills the rest."""
  chex.assert_rank(alloc, 1)
  quiet = params.replace(reward=env_lib.NoReward())  # cheap steps; scored once below
  state, obs = env_lib.reset(key, quiet)
  c = alloc.shape[0]
  idx = jnp.arange(c, dtype=jnp.int32)
  big = (params.max_steps + 2) * c

  def one(carry, _):
    state, obs, used = carry
    allowed = obs.action_mask
    want = allowed & (used < alloc)
    prio = jnp.where(want, -(used * c + idx), jnp.where(allowed, -big - idx, -2 * big))
    action = jnp.argmax(prio).astype(jnp.int32)
    nstate, nobs, _, _, _ = env_lib.step(key, state, action, quiet)
    rec = Demo(taken=state.taken, step=state.step, action=action, valid=~state.done)
    return (nstate, nobs, used.at[action].add((~state.done).astype(jnp.int32))), rec

  (final, _, _), demo = jax.lax.scan(one, (state, obs, jnp.zeros((c,), jnp.int32)), None, length=params.max_steps)
  return final, demo


def evaluate(key: jax.Array, alloc: jnp.ndarray, params: env_lib.EnvParams) -> jnp.ndarray:
  """The real reward's score of an allocation: the env's own score of the played selection (one proxy fine-tune)."""
  final, _ = play(key, alloc, params)
  return env_lib.score(final, params)


def _distinct_priority(allocs: jnp.ndarray, prio: jnp.ndarray) -> jnp.ndarray:
  """-inf for an allocation equal to a higher-priority one (ties: the lower index wins), so top-k are distinct."""
  same = jnp.all(allocs[:, None, :] == allocs[None, :, :], -1)
  n = prio.shape[0]
  i = jnp.arange(n)
  ahead = (prio[None, :] > prio[:, None]) | ((prio[None, :] == prio[:, None]) & (i[None, :] < i[:, None]))
  return jnp.where(jnp.any(same & ahead, -1), -jnp.inf, prio)


def check_env(config, params: env_lib.EnvParams) -> None:
  """The search's settings (`validate`) and an environment it can search: chunked, not whole clusters."""
  validate(config)
  require(not params.whole, "climb allocates chunks; use --config.rl.chunk=auto or an integer, not 'cluster'")


def make_search(config, params: env_lib.EnvParams, iterations: int = 0):
  """`search(key) -> dict`: allocation [C] (the answer), ranked [R, C] (scored allocations, predicted best first,
  repeats last), scores [R] (their real scores), metrics per round, real_evals. `iterations` overrides the config."""
  check_env(config, params)
  climb_cfg = config.climb
  rounds = int(iterations) or int(climb_cfg.iterations)
  n, top = int(climb_cfg.samples), int(climb_cfg.top_k)
  n_real = max(1, min(n, int(round(n * float(climb_cfg.score_share)))))
  k = num_chunks(params)
  c = params.sizes.shape[0]
  hidden, steps, batch = int(climb_cfg.surrogate_hidden), int(climb_cfg.surrogate_steps), int(climb_cfg.surrogate_batch)
  conc, floor = float(climb_cfg.concentration), float(climb_cfg.dirichlet_floor)
  explore = float(climb_cfg.explore_share)
  feats_of = jax.vmap(lambda a: features(a, params))
  predict = lambda p, a: surrogate_lib.predict(hidden, p, feats_of(a))

  def sample(key, proposal):
    k_par, k_dir, k_uni, k_mix = jax.random.split(key, 4)
    parents = proposal[jax.random.randint(k_par, (n,), 0, top)]
    near = jax.random.dirichlet(k_dir, conc * parents / k + floor)
    e = jax.random.exponential(k_uni, (n, c))  # Dirichlet(1, ..., 1), without a second gamma sampler to compile
    uniform = e / jnp.sum(e, -1, keepdims=True)
    w = jnp.where(jax.random.uniform(k_mix, (n, 1)) < explore, uniform, near)
    return allocations(w, params)

  def fit(key, sur):
    """Adam on standardised targets (ranking is all that matters; raw proxy scores differ by ~1e-2)."""
    filled = jnp.arange(sur.targets.shape[0]) < sur.count
    mu = jnp.sum(jnp.where(filled, sur.targets, 0.0)) / jnp.maximum(sur.count, 1)
    sd = jnp.sqrt(jnp.sum(jnp.where(filled, (sur.targets - mu) ** 2, 0.0)) / jnp.maximum(sur.count, 1))
    std = sur.replace(targets=(sur.targets - mu) / (sd + 1e-8))
    std, loss = surrogate_lib.train(key, std, steps, batch)
    return std.replace(targets=sur.targets), loss

  def search(key):
    k_sur, k_loop = jax.random.split(key)
    sur = surrogate_lib.init(k_sur, 2 * c, hidden, rounds * n_real, float(climb_cfg.surrogate_lr))
    start = allocations(params.sizes / jnp.sum(params.sizes), params)  # proportional: like a random subset
    proposal = jnp.tile(start[None], (top, 1))
    hist = jnp.zeros((rounds * n_real, c), jnp.int32)

    def one_round(carry, it):
      proposal, sur, hist, rng = carry
      rng, k_samp, k_prio, k_eval, k_fit = jax.random.split(rng, 5)
      cands = sample(k_samp, proposal)
      prio = jnp.where(it == 0, jax.random.uniform(k_prio, (n,)), predict(sur.params, cands))
      _, pick = jax.lax.top_k(_distinct_priority(cands, prio), n_real)
      chosen = cands[pick]
      scores = jax.vmap(evaluate, in_axes=(None, 0, None))(k_eval, chosen, params)
      sur = surrogate_lib.add(sur, feats_of(chosen), scores)
      hist = jax.lax.dynamic_update_slice(hist, chosen, (it * n_real, 0))
      sur, loss = fit(k_fit, sur)
      both = jnp.concatenate([cands, proposal])
      _, keep = jax.lax.top_k(_distinct_priority(both, predict(sur.params, both)), top)
      proposal = both[keep]
      metrics = {"best_score": scores.max(), "mean_score": scores.mean(), "surrogate_loss": loss,
                 "proposal_top": proposal[0]}
      return (proposal, sur, hist, rng), metrics

    (proposal, sur, hist, _), metrics = jax.lax.scan(one_round, (proposal, sur, hist, k_loop), jnp.arange(rounds))
    prio = _distinct_priority(hist, predict(sur.params, hist))
    order = jnp.argsort(-prio)
    return {"allocation": hist[order[0]], "ranked": hist[order], "scores": sur.targets[order],
            "predicted": prio[order], "metrics": metrics, "real_evals": jnp.asarray(rounds * n_real, jnp.int32)}

  return search


def validate(config) -> None:
  """Checks `config.climb` before any work (climb, and rl_ppo_warm's warm start)."""
  from rlsel.errors import require_int, require_number
  c = config.climb
  for f in ("iterations", "samples", "top_k", "rescore_top", "surrogate_hidden", "surrogate_steps", "surrogate_batch",
            "warm_iterations", "bc_demos", "bc_steps"):
    require_int(c[f], f"climb.{f}", low=1)
  require_number(c.score_share, "climb.score_share", low=0, high=1, low_open=True)
  require_number(c.explore_share, "climb.explore_share", low=0, high=1)
  for f in ("concentration", "surrogate_lr", "bc_lr"):
    require_number(c[f], f"climb.{f}", low=0, low_open=True)
  require_number(c.dirichlet_floor, "climb.dirichlet_floor", low=0, low_open=True)


def _search_impl(config, iterations: int, key, env_params):
  """One search; `config` is a FrozenConfigDict (hashable), so equal runs reuse the compiled program."""
  return make_search(config, env_params, iterations)(key)


def _play_impl(key, alloc, env_params):
  return play(key, alloc, env_params)


_JITS = {fast: (jax.jit(_search_impl, static_argnums=(0, 1), compiler_options=FAST_COMPILE if fast else None),
                jax.jit(_play_impl, compiler_options=FAST_COMPILE if fast else None))
         for fast in (False, True)}


def search(config, key, env_params, iterations: int = 0) -> dict:
  """`make_search` compiled and run (host arrays out); `iterations` overrides `climb.iterations` when > 0."""
  import ml_collections
  fn = _JITS[bool(config.rl.fast_compile)][0]
  rounds = int(iterations) if int(iterations) > 0 else int(config.climb.iterations)  # one compile per round count
  out = fn(ml_collections.FrozenConfigDict(config), rounds, key, env_params)
  return jax.tree.map(np.asarray, jax.block_until_ready(out))


def play_jit(config, key, alloc, env_params):
  """`play` compiled (host arrays in): the allocation played in the environment, (final EnvState, Demo)."""
  return _JITS[bool(config.rl.fast_compile)][1](key, alloc, env_params)


def selected_positions(config, key, alloc, env_params, budget: int) -> np.ndarray:
  """Selectable-row positions of an allocation (exactly `budget`; topped up at random only if the env fell short,
  which cannot happen when the pool has slack)."""
  final, _ = play_jit(config, key, alloc, env_params)
  return np.sort(top_up(numpy_rng(key), np.flatnonzero(np.asarray(final.mask)), env_params.num_rows, budget))


@register("climb")
class ClimbSelector(Selector):
  """Mixture search over clusters scored by the fine-tuned proxy; see the module docstring."""
  config_sections = ENV_SECTIONS + ("climb",)  # the RL selectors' environment, plus the search
  version = 2  # 2: the answer is the best mean of the top allocations re-scored with fresh proxy keys (2026-12-02)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    cfg = self.config
    t0 = time.time()
    k_env, k_search, k_final, k_score = jax.random.split(key, 4)
    params, selectable, sample = build_pool_env(k_env, cfg, pool, budget)
    t_env = time.time()
    out = search(cfg, k_search, params)
    t_search = time.time()
    # The surrogate's best few of the really scored allocations, re-scored with fresh proxy keys (no winner's curse).
    ranked, predicted = np.asarray(out["ranked"]), np.asarray(out["predicted"])
    top = [i for i in range(ranked.shape[0]) if np.isfinite(predicted[i])][:int(cfg.climb.rescore_top)] or [0]
    cands = {f"ranked_{i + 1}": selected_positions(cfg, k_final, ranked[i], params, budget) for i in top}
    rescored, judged = judge_candidates(k_score, params, cands, int(cfg.proxy.rescore_keys))
    pick = proxy_lib.best_by_mean(judged)
    chosen, alloc = cands[pick], ranked[top[list(cands).index(pick)]]
    score = lambda pos: proxy_lib.score_positions(k_score, params.proxy_spec, params.proxy, pos)
    info = {
        "real_proxy_evals": int(out["real_evals"]), "reward_score": rescored[pick]["scores"][0],
        "chosen": pick, "candidate_rescored_mean": {n: r["mean"] for n, r in rescored.items()},
        "rescore_keys": int(cfg.proxy.rescore_keys),
        **({} if params.pick is None else {"pick_split": int(params.pick.rx.shape[0]),
                                            "candidate_pick_mean": {n: r["mean"] for n, r in judged.items()}}),
        "random_reward_score": score(sample), "search_best_score": float(np.max(out["scores"])),
        "allocation": alloc.tolist(), "num_clusters": int(params.sizes.shape[0]), "chunk": params.chunk,
        "selectable": int(selectable.shape[0]), "reward_split": int(params.proxy.rx.shape[0]),
        "reward_source": str(cfg.proxy.reward_source), "proxy_score": params.proxy_spec.score,
        "env_seconds": t_env - t0, "search_seconds": t_search - t_env, "select_seconds": time.time() - t0,
        "curves": {k: v.tolist() for k, v in out["metrics"].items() if v.ndim == 1},
    }
    return Selection(pool.train.ids[selectable[chosen]], info)
