"""RL selectors `rl_ppo`, `rl_dqn`, `rl_reinforce`: pool -> reward split + clusters -> environment -> agent -> ids.

select(key, pool, budget):
  1. carve a stratified, seeded reward split from the pool (`proxy.reward_fraction`); it is never selectable;
  2. standardise the frozen embeddings, k-means the selectable rows into `kmeans.num_clusters` clusters;
  3. fit an initial proxy on a random budget-sized sample for per-cluster loss / entropy features;
  4. build EnvParams and train the agent (one jit);
  5. score the greedy episode of the trained policy and the best sampled episode with the real proxy (same key)
     and return the better one's ids: exactly `budget` unique ids of `pool.train.ids`.
After select, `self.last_info` holds the reward-split score of the chosen subset (and of a random subset),
the number of real proxy evaluations, timings and the training curves. Set `self.logdir` to write TensorBoard curves.
"""

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel import kmeans as kmeans_lib
from rlsel import proxy as proxy_lib
from rlsel.data.splits import stratified_fractions
from rlsel.errors import UserError, require
from rlsel.selectors.base import Pool, Selector, register
from rlsel.selectors.basic import numpy_rng, stratified_sample

_STD_EPS = 1e-6


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


def standardise(x: np.ndarray, reference: np.ndarray = None) -> np.ndarray:
  """Per-dimension z-scores over sqrt(d) (rows of norm ~1): the proxy trains at one learning rate without blowing up.
  The mean and std are `reference`'s (default: `x`'s own; e.g. the pool's, to put test rows in the proxy's space).
  float32, built in place in one copy of `x` (pools of millions of rows)."""
  x = np.asarray(x, np.float32)
  ref = x if reference is None else np.asarray(reference, np.float32)
  out = x - ref.mean(0)
  out /= ref.std(0) + _STD_EPS
  out /= np.sqrt(x.shape[1])
  return out


def pca(x: np.ndarray, dim: int) -> np.ndarray:
  """Projection on the top `dim` principal components (from the d x d covariance; no n x n array)."""
  xc = x - x.mean(0)
  _, vecs = np.linalg.eigh(xc.T @ xc)
  return (xc @ vecs[:, ::-1][:, :dim]).astype(np.float32)


def build_env(key, config, embeddings: np.ndarray, labels: np.ndarray, num_classes: int, budget: int,
              tokens: np.ndarray = None):
  """Reward split, clusters, initial proxy and EnvParams for a pool. Returns (env_params, selectable positions,
  the random budget-sized sample behind the initial proxy). `tokens` [n, L] (pad 0): needed by the transformer
  proxy, which trains on them; clusters always come from the embeddings."""
  labels = np.asarray(labels, np.int32)
  n = labels.shape[0]
  frac = float(config.proxy.reward_fraction)
  require(0.0 < frac < 1.0, f"proxy.reward_fraction={frac} must be in (0, 1), e.g. --config.proxy.reward_fraction=0.2")
  rng = numpy_rng(key)
  selectable, reward = stratified_fractions(labels, (frac,), int(rng.integers(2**31)))
  require(reward.shape[0] > 0, "the reward split is empty; raise --config.proxy.reward_fraction")
  require(budget <= selectable.shape[0],
          f"the budget of {budget} examples exceeds the {selectable.shape[0]} selectable examples (the reward split "
          f"holds {reward.shape[0]}); lower --config.budget or --config.proxy.reward_fraction")
  x = standardise(embeddings)
  dim = int(config.proxy.pca_dim)
  require(dim >= 0, f"proxy.pca_dim={dim} must be >= 0 (0 = no projection)")
  if 0 < dim < x.shape[1]:
    x = standardise(pca(x, dim))
  sx, rx, sy = jnp.asarray(x[selectable]), jnp.asarray(x[reward]), labels[selectable]
  del x  # from here on only the device copies (shared by k-means and the proxy) hold the pool
  spec = proxy_lib.spec_from_config(config, num_classes)
  px, prx = sx, rx
  if spec.kind == "transformer":
    require(tokens is not None, "proxy.kind='transformer' needs the pool's tokens; this caller passes embeddings only")
    tokens = np.asarray(tokens, np.int32)
    px, prx = jnp.asarray(tokens[selectable]), jnp.asarray(tokens[reward])
  k_km, k_init, k_fit = jax.random.split(key, 3)

  k = int(min(int(config.kmeans.num_clusters), selectable.shape[0]))
  require(k >= 1, f"kmeans.num_clusters={config.kmeans.num_clusters} must be positive")
  if config.kmeans.stratified:
    cents, assign = kmeans_lib.stratified_kmeans(k_km, np.asarray(sx), sy, k, int(config.kmeans.iters),
                                                 int(config.kmeans.batch_size))
  else:
    cents, assign = kmeans_lib.kmeans(k_km, sx, k, int(config.kmeans.iters), int(config.kmeans.batch_size))
  cents, assign = kmeans_lib.compact(np.asarray(assign), np.asarray(cents))

  data = proxy_lib.ProxyData(x=px, y=jnp.asarray(sy), rx=prx, ry=jnp.asarray(labels[reward]),
                             init_params=proxy_lib.init_params(k_init, spec, px.shape[1]))
  sample = stratified_sample(rng, sy, budget)
  init = proxy_lib.fit_initial(k_fit, spec, data, sample, int(config.proxy.init_steps))
  loss, ent = proxy_lib.loss_and_entropy(spec, init, data.x, data.y)
  feats = kmeans_lib.cluster_features(assign, cents, sy, num_classes, np.asarray(loss), np.asarray(ent))
  chunk, whole = env_lib.resolve_chunk(config.rl.chunk, budget, config.rl.episode_steps)
  params = env_lib.make_params(feats=feats, assign=assign, budget=budget, chunk=chunk, whole=whole, reward="proxy",
                               timing=str(config.proxy.reward_timing), proxy_spec=spec, proxy_data=data)
  return params, selectable, sample


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


def _greedy_impl(hidden: int, key, net_params, env_params):
  from rlsel.agents import greedy_episode
  return greedy_episode(key, hidden, net_params, env_params)


class _Jits(NamedTuple):
  train: Callable
  greedy: Callable
  init: Callable
  segment: Callable
  finish: Callable


def _jit(fn, static, fast):
  return jax.jit(fn, static_argnums=static, compiler_options=FAST_COMPILE if fast else None)


_JITS = {fast: _Jits(_jit(_train_impl, (0, 1, 2, 3), fast), _jit(_greedy_impl, 0, fast),
                     _jit(_init_impl, (0, 1, 2, 3), fast), _jit(_segment_impl, (0, 1, 2, 3), fast),
                     _jit(_finish_impl, (0, 1, 2, 3), fast))
         for fast in (False, True)}


def episode_sharding(config):
  """The parallel episodes' layout over every device (None on one device); UserError if num_envs does not divide."""
  if jax.device_count() == 1:
    return None
  from rlsel import sharding as sharding_lib
  mesh = sharding_lib.make_mesh(config)
  sharding_lib.check_divisible(int(config.rl.num_envs), mesh)
  return sharding_lib.batch_sharding(mesh)


class RLSelector(Selector):
  """Trains an RL agent on the pool's selection environment; see the module docstring."""
  algo = "ppo"
  config_sections = ("kmeans", "proxy", "rl")
  logdir = None
  checkpoint_dir = None  # set (by the harness) to save the agent's train state every `rl.checkpoint_every` updates

  def _train(self, key, env_params) -> dict:
    """Trains the agent: the `make_train` output dict. Subclasses may add work around it (a warm start)."""
    return self._run_agent(key, env_params, self.name)

  def _run_agent(self, key, env_params, name: str, init_params=None) -> dict:
    """One jit end to end; with `checkpoint_dir` (and `rl.checkpoint_every` > 0), the same updates in jitted
    segments with an orbax checkpoint of the whole train state after each, resuming from the latest one."""
    import ml_collections
    cfg = self.config
    jits = _JITS[bool(cfg.rl.fast_compile)]
    static = (self.algo, name, ml_collections.FrozenConfigDict(cfg), episode_sharding(cfg))
    every, total = int(cfg.rl.checkpoint_every), int(cfg.rl.num_updates)
    if not self.checkpoint_dir or every <= 0 or every >= total:
      return jits.train(*static, key, env_params, init_params)

    from rlsel import checkpoint as ckpt_lib
    carry = jits.init(*static, key, env_params, init_params)
    shapes = jax.eval_shape(functools.partial(_segment_impl, *static), env_params, carry, jnp.arange(total))[1]
    metrics = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    ckpt = ckpt_lib.Checkpointer(self.checkpoint_dir, ckpt_lib.fingerprint(
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

  def select(self, key, pool: Pool, budget: int) -> np.ndarray:
    cfg = self.config
    t0 = time.time()
    k_env, k_train, k_greedy, k_score = jax.random.split(key, 4)
    params, selectable, sample = build_env(k_env, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes,
                                           budget, tokens=pool.train.input_ids)
    t_env = time.time()
    _agent(self.algo)  # a clear error for an unknown algorithm, before tracing
    greedy_jit = _JITS[bool(cfg.rl.fast_compile)].greedy
    out = jax.block_until_ready(self._train(k_train, params))
    t_train = time.time()

    final, greedy_return = greedy_jit(int(cfg.rl.hidden), k_greedy, out["params"], params)
    cands = {"greedy": np.flatnonzero(np.asarray(final.mask))}
    if np.isfinite(float(out["best_score"])):
      cands["best_sampled"] = np.flatnonzero(np.asarray(out["best_mask"]))
    scores = {n: proxy_lib.score_positions(k_score, params.proxy_spec, params.proxy, p) for n, p in cands.items()}
    pick = max(scores, key=scores.get)
    chosen = cands[pick]
    if chosen.shape[0] < budget:  # only if an episode could not meet the budget (cannot happen with slack)
      rest = np.setdiff1d(np.arange(selectable.shape[0]), chosen)
      chosen = np.concatenate([chosen, numpy_rng(k_score).choice(rest, budget - chosen.shape[0], replace=False)])
    ids = pool.train.ids[selectable[chosen[:budget]]]
    self._scoring = (params, pool.train.ids[selectable], k_score)

    metrics = {k: np.asarray(v) for k, v in out["metrics"].items()}
    self.last_info = {
        "algo": self.algo, "chosen": pick, "reward_score": scores[pick], "candidate_scores": scores,
        "random_reward_score": proxy_lib.score_positions(k_score, params.proxy_spec, params.proxy, sample),
        "greedy_return": float(greedy_return), "real_proxy_evals": int(out["real_evals"]),
        "num_clusters": int(params.sizes.shape[0]), "chunk": params.chunk, "episode_steps": params.max_steps,
        "selectable": int(selectable.shape[0]), "reward_split": int(params.proxy.rx.shape[0]),
        "env_seconds": t_env - t0, "train_seconds": t_train - t_env, "select_seconds": time.time() - t0,
        "curves": {k: v.tolist() for k, v in metrics.items()},
    }
    if self.logdir:
      from rlsel import tblog
      tblog.write_curves(self.logdir, metrics, prefix=self.name)
      tblog.write_scalars(self.logdir, {"reward_score": scores[pick],
                                        "random_reward_score": self.last_info["random_reward_score"]},
                          prefix=self.name)
    return ids


  def reward_score(self, ids) -> float:
    """Reward-split score of the proxy fine-tuned on the given ids (selectable pool ids of the last select call),
    for reporting the reward-split versus test gap of any subset."""
    require(getattr(self, "_scoring", None) is not None, "call select() before reward_score()")
    params, sel_ids, key = self._scoring
    order = np.argsort(sel_ids)
    ids = np.asarray(ids, np.int64)
    where = np.clip(np.searchsorted(sel_ids, ids, sorter=order), 0, sel_ids.shape[0] - 1)
    pos = order[where]
    require(np.array_equal(sel_ids[pos], ids), "some ids are not selectable (reward split or outside the pool)")
    return proxy_lib.score_positions(key, params.proxy_spec, params.proxy, np.sort(pos))


@register("rl_ppo")
class PPOSelector(RLSelector):
  algo = "ppo"


@register("rl_dqn")
class DQNSelector(RLSelector):
  algo = "dqn"


@register("rl_reinforce")
class ReinforceSelector(RLSelector):
  algo = "reinforce"
