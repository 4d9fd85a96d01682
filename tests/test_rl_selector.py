"""The rl_ppo selector end to end on a synthetic pool: exact budget of unique valid ids, deterministic per seed."""

import jax
import numpy as np
import pytest

from rlsel.configlib import base_config
from rlsel.errors import UserError
from rlsel.selectors import make, names
from tests.conftest import synthetic_pool


def _tiny_config():
  c = base_config()
  c.kmeans.num_clusters, c.kmeans.iters = 6, 3
  c.proxy.steps, c.proxy.batch_size, c.proxy.init_steps, c.proxy.reward_fraction = 4, 16, 4, 0.25
  c.rl.num_envs, c.rl.num_updates, c.rl.update_epochs, c.rl.num_minibatches = 2, 2, 1, 1
  c.rl.hidden, c.rl.episode_steps, c.rl.log_every, c.rl.fast_compile = 16, 4, 0, True
  c.rl.surrogate_share, c.rl.surrogate_steps = 1.0, 3
  return c


def test_rl_ppo_returns_budget_of_unique_ids_deterministically(tmp_path):
  assert {"rl_ppo", "rl_dqn", "rl_reinforce"} <= set(names())
  pool = synthetic_pool(n=200)
  budget = 20
  sel = make("rl_ppo", _tiny_config())
  sel.logdir = str(tmp_path / "tb")
  ids = sel.select(jax.random.PRNGKey(0), pool, budget)
  assert ids.shape == (budget,) and np.unique(ids).shape[0] == budget
  assert np.isin(ids, pool.train.ids).all()
  info = sel.last_info
  assert np.isfinite(info["reward_score"]) and info["real_proxy_evals"] == 2 * 2 * info["episode_steps"]
  assert len(info["curves"]["mean_return"]) == 2
  assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())
  np.testing.assert_allclose(sel.reward_score(ids), info["reward_score"], rtol=1e-5)
  again = make("rl_ppo", _tiny_config()).select(jax.random.PRNGKey(0), pool, budget)
  np.testing.assert_array_equal(np.sort(ids), np.sort(again))


def test_rl_selector_user_errors():
  pool = synthetic_pool(n=200)
  with pytest.raises(UserError, match="budget"):
    make("rl_ppo", _tiny_config()).select(jax.random.PRNGKey(0), pool, 190)  # 25% of the pool is the reward split
  c = _tiny_config()
  c.proxy.kind = "transformer"
  with pytest.raises(UserError, match="transformer"):
    make("rl_dqn", c).select(jax.random.PRNGKey(0), pool, 20)
