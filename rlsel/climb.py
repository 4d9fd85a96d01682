"""CLIMB-style mixture search over clusters: sample allocations, score a share with the real reward, fit a predictor,
keep the predicted best as the next proposal. `make_search(config, env_params) -> search(key)`, one jit end to end.

An allocation `a [C]` (int32) counts the environment's chunks given to each cluster: it sums to
K = ceil(budget / chunk) and never exceeds a cluster's available chunks (`chunk_caps`), so it meets the budget
exactly (the env cuts the last chunk). It becomes a selection through the environment itself (`play`): the episode
order drawn from a key, round-robin over the allocated clusters, i.e. the first a_c * chunk examples of cluster c.
The same round-robin episode is the demonstration the warm-started PPO clones (`Demo`).

Round k: n samples = Dirichlet around a kept allocation (or, for the exploration share, uniform over the simplex),
discretised to chunks; the predictor's top `score_share` of them (random in round 0) are scored by the real reward
(vmapped, one key per round: common random numbers); the predictor (rlsel/surrogate.py's MLP on mask features) is
refit on every (allocation, score) pair so far; the top `top_k` distinct ones of the samples and the old proposal
by the predictor become the new proposal. The answer is the predictor's best among the really scored allocations
(it smooths the proxy's noise and never returns an allocation the reward has not seen).
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from rlsel import env as env_lib
from rlsel import surrogate as surrogate_lib
from rlsel.errors import require


class Demo(NamedTuple):
  """One played episode, time-major [T, ...]: the observation inputs (taken, step), the action and its validity."""
  taken: jnp.ndarray   # [T, C] counts before the step
  step: jnp.ndarray    # [T]
  action: jnp.ndarray  # [T]
  valid: jnp.ndarray   # [T] the episode had not ended before this step


def num_chunks(params: env_lib.EnvParams) -> int:
  """K: chunks in a full selection (the last one is cut to the budget)."""
  return -(-params.budget // params.chunk)


def chunk_caps(params: env_lib.EnvParams) -> jnp.ndarray:
  """Chunks each cluster can give: full chunks (as the env's action mask allows when the pool has slack), or
  started chunks when full ones cannot reach the budget (these always can: budget <= pool size)."""
  full = params.sizes // params.chunk
  return jnp.where(full.sum() >= num_chunks(params), full, -(-params.sizes // params.chunk)).astype(jnp.int32)


def discretise(w: jnp.ndarray, caps: jnp.ndarray, k: int) -> jnp.ndarray:
  """Mixture weights [C] -> chunk counts [C] summing to k, within caps: each chunk goes to the cluster furthest
  below its share (largest remainder, capacity aware)."""
  def add(_, a):
    deficit = jnp.where(a < caps, w * k - a, -jnp.inf)
    return a.at[jnp.argmax(deficit)].add(1)
  return jax.lax.fori_loop(0, k, add, jnp.zeros(w.shape, jnp.int32))


def features(alloc: jnp.ndarray, params: env_lib.EnvParams) -> jnp.ndarray:
  """Predictor input of allocations [..., C]: the env's mask features of the (uncut) counts."""
  taken = jnp.minimum(alloc * params.chunk, params.sizes)
  return env_lib.mask_features(taken, params)


def play(key: jax.Array, alloc: jnp.ndarray, params: env_lib.EnvParams):
  """Plays an allocation in the environment without scoring it; returns (final EnvState, Demo).

  Each step takes the allocated cluster visited least so far (lowest index on ties): round-robin. Should the
  allocation run out before the budget (a pool without slack), the first allowed cluster fills the rest."""
  chex.assert_rank(alloc, 1)
  quiet = params.replace(reward="toy", values=jnp.zeros_like(params.values))  # cheap steps; scored once below
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
  # The env's own scorer (private there; a public alias in env.py would be tidier).
  return env_lib._score(final.proxy_key, final.taken, final.order, final.rows, params)  # pylint: disable=W0212


def _distinct_priority(allocs: jnp.ndarray, prio: jnp.ndarray) -> jnp.ndarray:
  """-inf for an allocation equal to a higher-priority one (ties: the lower index wins), so top-k are distinct."""
  same = jnp.all(allocs[:, None, :] == allocs[None, :, :], -1)
  n = prio.shape[0]
  i = jnp.arange(n)
  ahead = (prio[None, :] > prio[:, None]) | ((prio[None, :] == prio[:, None]) & (i[None, :] < i[:, None]))
  return jnp.where(jnp.any(same & ahead, -1), -jnp.inf, prio)


def validate(config, params: env_lib.EnvParams):
  cc = config.climb
  require(not params.whole, "climb allocates chunks; use --config.rl.chunk=auto or an integer, not 'cluster'")
  for f in ("iterations", "samples", "top_k", "predictor_hidden", "predictor_steps", "predictor_batch"):
    require(int(cc[f]) >= 1, f"climb.{f}={cc[f]} must be a positive integer")
  require(0.0 < float(cc.score_share) <= 1.0, f"climb.score_share={cc.score_share} must be in (0, 1]")
  require(0.0 <= float(cc.explore_share) <= 1.0, f"climb.explore_share={cc.explore_share} must be in [0, 1]")
  require(float(cc.concentration) > 0 and float(cc.dirichlet_floor) > 0,
          "climb.concentration and climb.dirichlet_floor must be positive")


def make_search(config, params: env_lib.EnvParams, iterations: int = 0):
  """`search(key) -> dict`: allocation [C] (the answer), ranked [R, C] (scored allocations, predicted best first,
  repeats last), scores [R] (their real scores), metrics per round, real_evals. `iterations` overrides the config."""
  validate(config, params)
  cc = config.climb
  rounds = int(iterations) or int(cc.iterations)
  n, top = int(cc.samples), int(cc.top_k)
  n_real = max(1, min(n, int(round(n * float(cc.score_share)))))
  k = num_chunks(params)
  caps = chunk_caps(params)
  c = caps.shape[0]
  hidden, steps, batch = int(cc.predictor_hidden), int(cc.predictor_steps), int(cc.predictor_batch)
  conc, floor, explore = float(cc.concentration), float(cc.dirichlet_floor), float(cc.explore_share)
  feats_of = jax.vmap(lambda a: features(a, params))
  predict = lambda p, a: surrogate_lib.predict(hidden, p, feats_of(a))

  def sample(key, proposal):
    k_par, k_dir, k_uni, k_mix = jax.random.split(key, 4)
    parents = proposal[jax.random.randint(k_par, (n,), 0, top)]
    near = jax.random.dirichlet(k_dir, conc * parents / k + floor)
    e = jax.random.exponential(k_uni, (n, c))  # Dirichlet(1, ..., 1), without a second gamma sampler to compile
    uniform = e / jnp.sum(e, -1, keepdims=True)
    w = jnp.where(jax.random.uniform(k_mix, (n, 1)) < explore, uniform, near)
    return jax.vmap(discretise, in_axes=(0, None, None))(w, caps, k)

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
    sur = surrogate_lib.init(k_sur, 2 * c, hidden, rounds * n_real, float(cc.predictor_lr))
    start = discretise(params.sizes / jnp.sum(params.sizes), caps, k)  # proportional: like a random subset
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
      metrics = {"best_score": scores.max(), "mean_score": scores.mean(), "predictor_loss": loss,
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
  for f in ("iterations", "samples", "top_k", "predictor_hidden", "predictor_steps", "predictor_batch",
            "warm_iterations", "bc_demos", "bc_steps"):
    require_int(c[f], f"climb.{f}", low=1)
  require_number(c.score_share, "climb.score_share", low=0, high=1, low_open=True)
  require_number(c.explore_share, "climb.explore_share", low=0, high=1)
  for f in ("concentration", "predictor_lr", "bc_lr"):
    require_number(c[f], f"climb.{f}", low=0, low_open=True)
  require_number(c.dirichlet_floor, "climb.dirichlet_floor", low=0)
