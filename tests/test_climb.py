"""climb (mixture search over clusters) and rl_ppo_warm (PPO warm-started by behaviour cloning of climb's best)."""

import jax
import numpy as np
import pytest

from rlsel import env
from rlsel.configlib import base_config
from rlsel.env.build import coverage_base
from rlsel.selectors import make, names
from rlsel.selectors import climb
from rlsel.selectors import rl_warm
from tests.conftest import synthetic_pool
from tests.conftest import tiny_rl_config as rl_tiny_config


def _tiny_config():
  c = rl_tiny_config()  # the RL selector tests' tiny pool, clusters, proxy and PPO settings
  c.climb.iterations, c.climb.samples, c.climb.score_share, c.climb.top_k = 3, 16, 0.25, 4
  c.climb.surrogate_hidden, c.climb.surrogate_steps = 16, 20
  c.climb.warm_iterations, c.climb.bc_demos, c.climb.bc_steps = 3, 2, 20  # = iterations: reuses the compiled search
  return c


def _toy_config():
  c = base_config()
  c.rl.hidden, c.rl.fast_compile = 32, True
  c.climb.iterations, c.climb.samples, c.climb.surrogate_steps = 6, 32, 100
  c.climb.bc_steps, c.climb.bc_lr = 300, 1e-2
  return c


@pytest.fixture(scope="module")
def toy():
  return env.toy_params(jax.random.PRNGKey(0), num_clusters=8, cluster_size=12, budget=24, chunk=4)


def _toy_score(params, taken):
  return float(np.dot(np.asarray(params.values), np.asarray(taken)) / params.budget)


def test_climb_selector_meets_budget_with_valid_ids_deterministically():
  assert {"climb", "rl_ppo_warm"} <= set(names())
  pool, budget = synthetic_pool(n=200), 20
  sel = make("climb", _tiny_config())
  ids, info = sel.select(jax.random.PRNGKey(0), pool, budget)
  assert ids.shape == (budget,) and np.unique(ids).shape[0] == budget
  assert np.isin(ids, pool.train.ids).all()
  assert info["real_proxy_evals"] == 3 * 4                      # rounds x round(16 * 0.25)
  assert np.isfinite(info["reward_score"]) and np.isfinite(info["random_reward_score"])
  assert info["select_seconds"] > 0
  assert sum(info["allocation"]) == -(-budget // info["chunk"])  # whole chunks, the last one cut by the env
  means = info["candidate_rescored_mean"]  # the surrogate's best few, re-scored with fresh keys; the best mean wins
  assert 1 <= len(means) <= 4 and info["chosen"] == max(means, key=means.get)
  again = make("climb", _tiny_config()).select(jax.random.PRNGKey(0), pool, budget).ids
  np.testing.assert_array_equal(np.sort(ids), np.sort(again))
  cfg = _tiny_config()
  cfg.proxy.pick_share = 0.5  # the candidates judged on reward rows the search never scored
  info = make("climb", cfg).select(jax.random.PRNGKey(0), pool, budget).info
  judged = info["candidate_pick_mean"]
  assert info["pick_split"] > 0 and set(judged) == set(info["candidate_rescored_mean"])
  assert info["chosen"] == max(judged, key=judged.get)


def test_climb_finds_the_toy_optimum(toy):
  cfg = _toy_config()
  out = climb.search(cfg, jax.random.PRNGKey(1), toy)
  alloc = out["allocation"]
  assert alloc.sum() == climb.num_chunks(toy) and np.all(alloc <= np.asarray(toy.sizes) // toy.chunk)
  final, _ = climb.play_jit(cfg, jax.random.PRNGKey(2), alloc, toy)
  assert int(np.asarray(final.mask).sum()) == toy.budget
  frac = _toy_score(toy, final.taken) / env.toy_optimal_return(toy)
  assert frac >= 0.95, frac
  assert int(out["real_evals"]) == 6 * 8                      # far fewer reward calls than PPO's 16 envs x 30 updates


def test_behaviour_cloning_reproduces_a_demonstration(toy):
  cfg = _toy_config()
  alloc = np.array([[3, 0, 1, 0, 0, 2, 0, 0]], np.int32)     # uneven, so round-robin must track per-cluster counts
  _, demo = climb.play_jit(cfg, jax.random.PRNGKey(0), alloc[0], toy)
  assert np.asarray(demo.action)[np.asarray(demo.valid)].tolist() == [0, 2, 5, 0, 5, 0]
  _, fit = rl_warm.clone(jax.random.PRNGKey(3), cfg, toy, alloc)
  assert float(fit["accuracy"]) > 0.9, fit


def test_rl_ppo_warm_returns_budget_of_unique_valid_ids():
  pool, budget = synthetic_pool(n=200), 20
  c = _tiny_config()
  c.rl.greedy_every = 5  # the greedy episode on the learning curve after the last update
  sel = make("rl_ppo_warm", c)
  ids, info = sel.select(jax.random.PRNGKey(0), pool, budget)
  assert ids.shape == (budget,) and np.unique(ids).shape[0] == budget
  assert np.isin(ids, pool.train.ids).all()
  assert info["climb_real_evals"] == 3 * 4
  assert info["ppo_real_evals"] == (2 * 2 + 1) * info["episode_steps"]  # + the greedy episode on the curve
  assert info["real_proxy_evals"] == info["climb_real_evals"] + info["ppo_real_evals"]
  assert 0.0 <= info["bc_accuracy"] <= 1.0 and np.isfinite(info["reward_score"])


def test_label_quotas_keep_the_pools_label_proportions():
  """rl.label_quotas (label-stratified clusters): climb's allocations give each label exactly the chunks of its
  quota, and its selection holds exactly the pool's label quotas, however skewed the pool (the RL selectors take
  their episodes from the same environment, whose quotas tests/test_env.py checks); without kmeans.stratified it
  is one clear error before any work."""
  from rlsel import validation
  from rlsel.errors import UserError
  from rlsel.selectors.basic import label_quotas
  pool, budget = synthetic_pool(n=240), 30
  pool.train.labels[:] = np.repeat([0, 1, 2], [150, 66, 24])      # skewed: quotas 19, 8, 3 of 30
  cfg = _tiny_config()
  cfg.kmeans.stratified, cfg.rl.label_quotas = True, True
  want = label_quotas(pool.train.labels, budget)[1]
  assert want.tolist() == [19, 8, 3]
  ids = make("climb", cfg).select(jax.random.PRNGKey(1), pool, budget).ids
  assert ids.shape == (budget,) and np.unique(ids).shape == (budget,)
  np.testing.assert_array_equal(np.bincount(pool.train.labels[np.searchsorted(pool.train.ids, ids)], minlength=3), want)
  toy = env.toy_params(jax.random.PRNGKey(0), num_clusters=6, cluster_size=12, budget=24, chunk=4,
                       cluster_labels=[0, 0, 0, 1, 1, 2], quota=(13, 7, 4))
  w = jax.random.dirichlet(jax.random.PRNGKey(2), np.ones(6), (32,))
  allocs = np.asarray(climb.allocations(w, toy))
  assert climb.num_chunks(toy) == 4 + 2 + 1
  np.testing.assert_array_equal(allocs @ np.eye(3)[[0, 0, 0, 1, 1, 2]], np.tile([4, 2, 1], (32, 1)))
  final, _ = climb.play_jit(_toy_config(), jax.random.PRNGKey(3), allocs[0], toy)
  np.testing.assert_array_equal(np.asarray(final.taken) @ np.eye(3)[[0, 0, 0, 1, 1, 2]], [13, 7, 4])
  cfg = _tiny_config()
  cfg.selectors, cfg.rl.label_quotas = ("climb",), True
  with pytest.raises(UserError, match="kmeans.stratified"):
    validation.validate_settings(cfg)


def test_coverage_base_climb_and_rl_ppo():
  """rl.coverage_share: climb allocates only the chunks beyond the base (its caps and features count the base) and
  plays to the budget; rl_ppo returns exactly the budget of unique ids from such episodes, its chunk sized for the
  rest of the budget; the share is checked before any work."""
  from rlsel import validation
  from rlsel.errors import UserError
  toy = env.toy_params(jax.random.PRNGKey(0), num_clusters=8, cluster_size=12, budget=24, chunk=4,
                       base=coverage_base(np.repeat(np.arange(8), 12), 8, 8))
  assert np.asarray(toy.base).tolist() == [1] * 8 and climb.num_chunks(toy) == 4
  np.testing.assert_array_equal(np.asarray(climb.chunk_caps(toy)), [2] * 8)   # (12 - 1) // 4
  w = jax.random.dirichlet(jax.random.PRNGKey(2), np.ones(8), (16,))
  allocs = np.asarray(climb.allocations(w, toy))
  assert np.all(allocs.sum(1) == 4)
  taken = np.asarray(climb.features(allocs[0], toy))[:8] * 12                  # taken / size -> taken
  np.testing.assert_allclose(taken, 1 + 4 * allocs[0], atol=1e-5)
  final, _ = climb.play_jit(_toy_config(), jax.random.PRNGKey(3), allocs[0], toy)
  np.testing.assert_array_equal(np.asarray(final.taken), 1 + 4 * allocs[0])
  pool, budget = synthetic_pool(n=200), 20
  cfg = _tiny_config()
  cfg.rl.coverage_share = 0.5
  ids, info = make("rl_ppo", cfg).select(jax.random.PRNGKey(0), pool, budget)
  assert ids.shape == (budget,) and np.unique(ids).shape[0] == budget and np.isin(ids, pool.train.ids).all()
  assert info["chunk"] == 3 and info["episode_steps"] == 4   # the 10 beyond the base of 10, in the 4 steps asked
  assert info["coverage_base"] == 10
  cfg.selectors, cfg.rl.coverage_share = ("rl_ppo",), 1.0
  with pytest.raises(UserError, match="coverage_share"):
    validation.validate_settings(cfg)
