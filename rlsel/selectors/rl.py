"""RL selectors `rl_ppo`, `rl_dqn`, `rl_reinforce`: pool -> reward split + clusters -> environment -> agent -> ids.

select(key, pool, budget), steps 1-4 being `rlsel.env.build.build_env`:
  1. carve a stratified, seeded reward split from the pool (`proxy.reward_fraction`); it is never selectable;
  2. standardise the frozen embeddings, k-means the selectable rows into `kmeans.num_clusters` clusters;
  3. fit an initial proxy on a random budget-sized sample for per-cluster loss / entropy features;
  4. build EnvParams and train the agent (one jit);
  5. re-score the greedy episode of the trained policy and the `rl.keep_best` best sampled episodes (distinct ones)
     with `proxy.rescore_keys` fresh proxy keys and return the best mean's ids: exactly `budget` unique ids of
     `pool.train.ids`. With proxy.pick_share > 0 the mean is taken on the pick rows (`EnvParams.pick`), which no
     episode was scored on, instead of the reward split. The training-time score of a sampled episode is biased up
     (it was kept for being high); both are logged per cell, with the random sample re-scored alike and every
     candidate's score on the validation split (`validation_rescore`: what the pick's edge is worth on rows the
     agent never trained against).
`select` returns the ids with their diagnostics: the reward-split score of the chosen subset (and of a random
subset), the number of real proxy evaluations, timings and the training curves. With `RunDirs.logdir` it writes
TensorBoard curves; with `RunDirs.checkpoint_dir` it checkpoints the agent's train state and resumes from it.
"""

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import proxy as proxy_lib
from rlsel.env.build import ENV_SECTIONS, build_pool_env
from rlsel.errors import UserError
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, positions_of, register
from rlsel.selectors.basic import numpy_rng, top_up

def _agent(algo: str):
  if algo == "ppo":
    from rlsel.agents import ppo as mod
  elif algo == "dqn":
    from rlsel.agents import dqn as mod
  elif algo == "reinforce":
    from rlsel.agents import reinforce as mod
  else:
    raise UserError(f"unknown RL algorithm {algo!r}; use rl_ppo, rl_dqn or rl_reinforce")
  return mod


# rl.fast_compile: XLA's backend optimisation off: about half the compile time, a slower run (tiny runs, tests).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _program(algo: str, name: str, config, sharding, env_params, init_params=None):
  kw = {"sharding": sharding}
  if init_params is not None:
    kw["init_params"] = init_params
  return _agent(algo).make_train(config, env_params, name, **kw)


def _train_impl(algo, name, config, sharding, key, env_params, init_params):
  """One training run; `config` is a FrozenConfigDict (hashable), so equal runs reuse the compiled program."""
  return _program(algo, name, config, sharding, env_params, init_params)(key)


def _init_impl(algo, name, config, sharding, key, env_params, init_params):
  return _program(algo, name, config, sharding, env_params, init_params).init(key)


def _segment_impl(algo, name, config, sharding, env_params, carry, updates):
  return _program(algo, name, config, sharding, env_params).segment(carry, updates)


def _finish_impl(algo, name, config, sharding, env_params, carry, metrics):
  return _program(algo, name, config, sharding, env_params).finish(carry, metrics)


def _greedy_impl(hidden: int, size_prior: float, key, net_params, env_params):
  from rlsel.agents import greedy_episode
  return greedy_episode(key, hidden, net_params, env_params, size_prior)


class AgentPrograms(NamedTuple):
  """The compiled agent programs (one set with XLA optimisation, one without: `rl.fast_compile`); the static
  arguments are (algo, name, FrozenConfigDict, episode sharding), or the network width and size prior for
  `greedy`."""
  train: Callable
  greedy: Callable
  init: Callable
  segment: Callable
  finish: Callable


def _jit(fn, static, fast):
  return jax.jit(fn, static_argnums=static, compiler_options=FAST_COMPILE if fast else None)


_PROGRAMS = {fast: AgentPrograms(_jit(_train_impl, (0, 1, 2, 3), fast), _jit(_greedy_impl, (0, 1), fast),
                                 _jit(_init_impl, (0, 1, 2, 3), fast), _jit(_segment_impl, (0, 1, 2, 3), fast),
                                 _jit(_finish_impl, (0, 1, 2, 3), fast))
         for fast in (False, True)}


def programs(config) -> AgentPrograms:
  """The compiled agent programs for `config.rl.fast_compile`."""
  return _PROGRAMS[bool(config.rl.fast_compile)]


def episode_sharding(config):
  """The parallel episodes' layout over every device (None on one device); UserError if num_envs does not divide."""
  if jax.device_count() == 1:
    return None
  from rlsel import sharding as sharding_lib
  mesh = sharding_lib.make_mesh(config)
  sharding_lib.check_divisible(int(config.rl.num_envs), mesh)
  return sharding_lib.batch_sharding(mesh)


class SelectKeys(NamedTuple):
  """The keys an RL selector's `select(key, ...)` derives, in order (other tools rebuild its environment with them)."""
  env: jax.Array      # reward split, clusters, initial proxy
  train: jax.Array    # the agent's training
  greedy: jax.Array   # the trained policy's greedy episode
  score: jax.Array    # proxy scores of the candidates, and the random top-up


def sampled_candidates(top_scores, top_masks) -> tuple:
  """The agent's best sampled episodes as candidates: ({"best_sampled", "sampled_2", ...: positions}, {name: the
  training-time score}), best first, skipping empty slots (-inf) and masks already listed."""
  cands, scores, seen = {}, {}, set()
  for score, mask in zip(np.asarray(top_scores), np.asarray(top_masks)):
    pos = np.flatnonzero(mask)
    if not np.isfinite(score) or pos.tobytes() in seen:
      continue
    seen.add(pos.tobytes())
    name = "best_sampled" if not cands else f"sampled_{len(cands) + 1}"
    cands[name], scores[name] = pos, float(score)
  return cands, scores


def validation_rescore(key, config, env_params, pool: Pool, candidates: dict) -> dict:
  """The candidates re-scored as the final pick is, but with the validation split as the proxy's scoring rows
  instead of the reward split the agent trained against: {name: {"scores", "mean"}}, or {} where that is not
  comparable (the reward already is the validation split, no validation split, the transformer proxy or a PCA'd
  proxy). A search that overfits its reward split's rows shows a gap here that the fresh-key re-score cannot."""
  from rlsel.env.build import standardise
  v = pool.validation
  if (str(config.proxy.reward_source) != "pool" or v is None or len(v) == 0 or env_params.proxy_spec.kind != "head"
      or int(config.proxy.pca_dim) > 0):
    return {}
  data = env_params.proxy.replace(rx=jnp.asarray(standardise(v.embeddings, reference=pool.train.embeddings)),
                                  ry=jnp.asarray(np.asarray(v.labels, np.int32)))
  return proxy_lib.rescore(key, env_params.proxy_spec, data, candidates, int(config.proxy.rescore_keys))


def judge_candidates(key, env_params, candidates: dict, keys: int) -> tuple:
  """(the candidates re-scored on the reward split, the same on the rows that judge the pick): `proxy.rescore`
  with `keys` fresh proxy keys; the second is the first unless proxy.pick_share set rows aside (`EnvParams.pick`)."""
  rescored = proxy_lib.rescore(key, env_params.proxy_spec, env_params.proxy, candidates, keys)
  if env_params.pick is None:
    return rescored, rescored
  return rescored, proxy_lib.rescore(key, env_params.proxy_spec, env_params.pick, candidates, keys)


def select_keys(key) -> SelectKeys:
  return SelectKeys(*jax.random.split(key, 4))


def score_ids(key, env_params, selectable_ids: np.ndarray, ids) -> float:
  """Reward-split score of the proxy fine-tuned on `ids` (selectable pool ids of that environment), for reporting
  the reward-split versus test gap of any subset."""
  try:
    pos = positions_of(selectable_ids, ids)
  except ValueError:
    raise UserError("some ids are not selectable (reward split or outside the pool)") from None
  return proxy_lib.score_positions(key, env_params.proxy_spec, env_params.proxy, np.sort(pos))


class RLSelector(Selector):
  """Trains an RL agent on the pool's selection environment; see the module docstring."""
  algo = "ppo"
  config_sections = ENV_SECTIONS
  version = 2  # 2: the final pick re-scores the greedy and best sampled episodes with fresh proxy keys (2026-12-02)

  def _train(self, key, env_params, checkpoint_dir) -> tuple:
    """Trains the agent: (the `make_train` output dict, extra diagnostics). Subclasses may add work around it (a
    warm start) and report it in the diagnostics."""
    return self._run_agent(key, env_params, self.name, checkpoint_dir), {}

  def _run_agent(self, key, env_params, name: str, checkpoint_dir=None, init_params=None) -> dict:
    """One jit end to end; with a `checkpoint_dir` (and `rl.checkpoint_every` > 0), the same updates in jitted
    segments with an orbax checkpoint of the whole train state after each, resuming from the latest one."""
    import ml_collections
    cfg = self.config
    jits = _PROGRAMS[bool(cfg.rl.fast_compile)]
    static = (self.algo, name, ml_collections.FrozenConfigDict(cfg), episode_sharding(cfg))
    every, total = int(cfg.rl.checkpoint_every), int(cfg.rl.num_updates)
    if not checkpoint_dir or every <= 0 or every >= total:
      return jits.train(*static, key, env_params, init_params)

    from rlsel import checkpoint as ckpt_lib
    carry = jits.init(*static, key, env_params, init_params)
    shapes = jax.eval_shape(functools.partial(_segment_impl, *static), env_params, carry, jnp.arange(total))[1]
    metrics = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    ckpt = ckpt_lib.Checkpointer(checkpoint_dir, ckpt_lib.fingerprint(
        cfg.rl, cfg.proxy, cfg.kmeans, cfg.climb, name, np.asarray(jax.random.key_data(key)),
        np.asarray(env_params.sizes)))
    done = 0
    restored = ckpt.restore({"carry": ckpt_lib.to_saveable(carry), "metrics": metrics})
    if restored is not None:
      state, meta = restored
      carry, metrics, done = ckpt_lib.from_saveable(state["carry"], carry), state["metrics"], int(meta["updates"])
      metrics = jax.tree.map(np.array, metrics)
      print(f"[{name}] resuming agent training from the checkpoint at update {done}", flush=True)
    while done < total:
      n = min(every, total - done)
      carry, part = jits.segment(*static, env_params, carry, jnp.arange(done, done + n))
      for k, v in part.items():
        metrics[k][done:done + n] = np.asarray(v)
      done += n
      if done < total:
        ckpt.save(done, {"carry": ckpt_lib.to_saveable(carry), "metrics": metrics}, {"updates": done})
        print(f"[{name}] agent checkpoint saved at update {done}", flush=True)
    ckpt.close()
    return jits.finish(*static, env_params, carry, metrics)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    cfg = self.config
    t0 = time.time()
    k_env, k_train, k_greedy, k_score = select_keys(key)
    params, selectable, sample = build_pool_env(k_env, cfg, pool, budget)
    t_env = time.time()
    _agent(self.algo)  # a clear error for an unknown algorithm, before tracing
    greedy_jit = _PROGRAMS[bool(cfg.rl.fast_compile)].greedy
    out, extra = self._train(k_train, params, dirs.checkpoint_dir)
    out = jax.block_until_ready(out)
    t_train = time.time()

    prior = 0.0 if self.algo == "dqn" else float(cfg.rl.size_prior)  # DQN's Q-values take no prior
    final, greedy_return = greedy_jit(int(cfg.rl.hidden), prior, k_greedy, out["params"], params)
    cands, train_scores = sampled_candidates(out["top_scores"], out["top_masks"])
    cands = {"greedy": np.flatnonzero(np.asarray(final.mask)), **cands}
    keys = int(cfg.proxy.rescore_keys)
    rescored, judged = judge_candidates(k_score, params, cands, keys)
    scores = {n: r["scores"][0] for n, r in rescored.items()}
    pick = proxy_lib.best_by_mean(judged)
    chosen = top_up(numpy_rng(k_score), cands[pick], selectable.shape[0], budget)
    ids = pool.train.ids[selectable[chosen]]

    # Diagnostics beside the pick: the random sample re-scored like the candidates, and every one of them scored on
    # the validation split (rows the agent never trained against).
    random_rescored = proxy_lib.rescore(k_score, params.proxy_spec, params.proxy, {"random": np.asarray(sample)},
                                        keys)["random"]["mean"]
    pick_info = {} if params.pick is None else {
        "pick_split": int(params.pick.rx.shape[0]), "candidate_pick_mean": {n: r["mean"] for n, r in judged.items()},
        "random_pick_mean": proxy_lib.rescore(k_score, params.proxy_spec, params.pick,
                                              {"random": np.asarray(sample)}, keys)["random"]["mean"]}
    held = validation_rescore(k_score, cfg, params, pool, {**cands, "random": np.asarray(sample)})
    metrics = {k: np.asarray(v) for k, v in out["metrics"].items()}
    info = {
        "algo": self.algo, "reward": repr(params.reward), "proxy_score": params.proxy_spec.score,
        "reward_source": str(cfg.proxy.reward_source),
        "chosen": pick, "reward_score": scores[pick], "candidate_scores": scores,
        "candidate_rescored_mean": {n: r["mean"] for n, r in rescored.items()},
        "candidate_train_scores": train_scores, "rescore_keys": keys, **pick_info,
        "random_reward_score": proxy_lib.score_positions(k_score, params.proxy_spec, params.proxy, sample),
        "random_rescored_mean": random_rescored,
        "candidate_validation_mean": {n: r["mean"] for n, r in held.items()},  # diagnostics; the pick ignores them
        "greedy_return": float(greedy_return), "real_proxy_evals": int(out["real_evals"]),
        "num_clusters": int(params.sizes.shape[0]), "chunk": params.chunk, "episode_steps": params.max_steps,
        "coverage_base": params.base_total,
        "selectable": int(selectable.shape[0]), "reward_split": int(params.proxy.rx.shape[0]),
        "env_seconds": t_env - t0, "train_seconds": t_train - t_env, "select_seconds": time.time() - t0,
        "curves": {k: [None if isinstance(x, float) and not np.isfinite(x) else x for x in v.tolist()]
                   for k, v in metrics.items()}, **extra,  # None where a curve has no point (greedy_return)
    }
    if dirs.logdir:
      from rlsel import tblog
      tblog.write_curves(dirs.logdir, metrics, prefix=self.name)
      tblog.write_scalars(dirs.logdir, {"reward_score": scores[pick],
                                        "random_reward_score": info["random_reward_score"]}, prefix=self.name)
    return Selection(ids, info)


@register("rl_ppo")
class PPOSelector(RLSelector):
  algo = "ppo"


@register("rl_dqn")
class DQNSelector(RLSelector):
  algo = "dqn"


@register("rl_reinforce")
class ReinforceSelector(RLSelector):
  algo = "reinforce"
