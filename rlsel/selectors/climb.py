"""The `climb` selector: CLIMB-style mixture search over k-means clusters (rlsel/climb.py) on the RL environment.

select(key, pool, budget): the same reward split, clusters and proxy-rewarded environment as the RL selectors
(`rlsel.selectors.rl.build_env`); a jitted search over chunk allocations; the chosen allocation played in the
environment (episode order from the key) gives exactly `budget` ids. `self.last_info` holds the real proxy
evaluations, the reward-split score of the chosen subset and of a random (stratified) subset, and timings.
"""

import time

import jax
import numpy as np

from rlsel import climb as climb_lib
from rlsel import proxy as proxy_lib
from rlsel.selectors.base import Pool, Selector, register
from rlsel.selectors.basic import numpy_rng
from rlsel.selectors.rl import FAST_COMPILE, build_env


def _search_impl(config, iterations: int, key, env_params):
  """One search; `config` is a FrozenConfigDict (hashable), so equal runs reuse the compiled program."""
  return climb_lib.make_search(config, env_params, iterations)(key)


def _play_impl(key, alloc, env_params):
  return climb_lib.play(key, alloc, env_params)


_JITS = {fast: (jax.jit(_search_impl, static_argnums=(0, 1), compiler_options=FAST_COMPILE if fast else None),
                jax.jit(_play_impl, compiler_options=FAST_COMPILE if fast else None))
         for fast in (False, True)}


def search(config, key, env_params, iterations: int = 0) -> dict:
  """Runs the jitted search (host arrays out); `iterations` overrides `climb.iterations` when > 0."""
  import ml_collections
  fn = _JITS[bool(config.rl.fast_compile)][0]
  rounds = int(iterations) if int(iterations) > 0 else int(config.climb.iterations)  # one compile per round count
  out = fn(ml_collections.FrozenConfigDict(config), rounds, key, env_params)
  return jax.tree.map(np.asarray, jax.block_until_ready(out))


def play(config, key, alloc, env_params):
  """The allocation played in the environment: (final EnvState, Demo)."""
  return _JITS[bool(config.rl.fast_compile)][1](key, alloc, env_params)


def selected_positions(config, key, alloc, env_params, budget: int) -> np.ndarray:
  """Selectable-row positions of an allocation (exactly `budget`; topped up at random only if the env fell short,
  which cannot happen when the pool has slack)."""
  final, _ = play(config, key, alloc, env_params)
  chosen = np.flatnonzero(np.asarray(final.mask))
  if chosen.shape[0] < budget:
    rest = np.setdiff1d(np.arange(env_params.num_rows), chosen)
    chosen = np.concatenate([chosen, numpy_rng(key).choice(rest, budget - chosen.shape[0], replace=False)])
  return np.sort(chosen[:budget])


@register("climb")
class ClimbSelector(Selector):
  """Mixture search over clusters scored by the fine-tuned proxy; see the module docstring."""
  config_sections = ("kmeans", "proxy", "rl", "climb")  # the RL selectors' environment, plus the search

  def select(self, key, pool: Pool, budget: int) -> np.ndarray:
    cfg = self.config
    t0 = time.time()
    k_env, k_search, k_final, k_score = jax.random.split(key, 4)
    params, selectable, sample = build_env(k_env, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes,
                                           budget, tokens=pool.train.input_ids)
    t_env = time.time()
    out = search(cfg, k_search, params)
    t_search = time.time()
    chosen = selected_positions(cfg, k_final, out["allocation"], params, budget)
    score = lambda pos: proxy_lib.score_positions(k_score, params.proxy_spec, params.proxy, pos)
    self.last_info = {
        "real_proxy_evals": int(out["real_evals"]), "reward_score": score(chosen),
        "random_reward_score": score(sample), "search_best_score": float(np.max(out["scores"])),
        "allocation": out["allocation"].tolist(), "num_clusters": int(params.sizes.shape[0]), "chunk": params.chunk,
        "selectable": int(selectable.shape[0]), "reward_split": int(params.proxy.rx.shape[0]),
        "env_seconds": t_env - t0, "search_seconds": t_search - t_env, "select_seconds": time.time() - t0,
        "curves": {k: v.tolist() for k, v in out["metrics"].items() if v.ndim == 1},
    }
    return pool.train.ids[selectable[chosen]]
