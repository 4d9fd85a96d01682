"""The rl_ppo selector end to end on a synthetic pool: exact budget of unique valid ids, deterministic per seed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel.errors import UserError
from rlsel.selectors import make, names
from rlsel.selectors.base import RunDirs
from rlsel.env.build import build_env
from rlsel.selectors.rl import score_ids, select_keys
from tests.conftest import synthetic_pool, tiny_rl_config


def test_rl_ppo_returns_budget_of_unique_ids_deterministically(tmp_path):
  assert {"rl_ppo", "rl_dqn", "rl_reinforce"} <= set(names())
  pool = synthetic_pool(n=200)
  budget = 20
  c = tiny_rl_config()
  c.rl.greedy_every = 5  # the greedy episode on the learning curve after the last update
  sel = make("rl_ppo", c)
  ids, info = sel.select(jax.random.PRNGKey(0), pool, budget, RunDirs(logdir=str(tmp_path / "tb")))
  assert ids.shape == (budget,) and np.unique(ids).shape[0] == budget
  assert np.isin(ids, pool.train.ids).all()
  # 2 updates x 2 episodes, plus the greedy episode on the learning curve after the last update (rl.greedy_every).
  assert np.isfinite(info["reward_score"]) and info["real_proxy_evals"] == (2 * 2 + 1) * info["episode_steps"]
  assert len(info["curves"]["mean_return"]) == 2
  assert info["reward_source"] == "pool" and info["proxy_score"] == "neg_log_loss"  # which reward the row used
  greedy = info["curves"]["greedy_return"]
  assert greedy[0] is None and np.isfinite(greedy[1])
  assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())
  # The reported reward score is the proxy's on these ids, in the environment select() built for this key.
  keys = select_keys(jax.random.PRNGKey(0))
  params, selectable, _ = build_env(keys.env, tiny_rl_config(), pool.train.embeddings, pool.train.labels,
                                    pool.num_classes, budget, tokens=pool.train.input_ids)
  np.testing.assert_allclose(score_ids(keys.score, params, pool.train.ids[selectable], ids), info["reward_score"],
                             rtol=1e-5)
  again = make("rl_ppo", c).select(jax.random.PRNGKey(0), pool, budget).ids
  np.testing.assert_array_equal(np.sort(ids), np.sort(again))
  # No winner's curse: the greedy episode and the distinct best sampled ones are re-scored with fresh proxy keys and
  # the best mean wins; both the training-time and the re-scored figures are logged.
  means = info["candidate_rescored_mean"]
  assert "greedy" in means and "best_sampled" in means and info["rescore_keys"] == 4
  assert set(info["candidate_train_scores"]) == set(means) - {"greedy"}
  assert info["chosen"] == max(means, key=means.get)
  assert info["candidate_scores"][info["chosen"]] == info["reward_score"]
  assert "pick_split" not in info  # proxy.pick_share = 0: judged on the reward split itself
  # Diagnostics the pick ignores: the random sample re-scored the same way, and every candidate scored on the
  # validation split (rows the agent never trained against), which differ from the reward split's scores.
  held = info["candidate_validation_mean"]
  assert set(held) == set(means) | {"random"} and all(np.isfinite(v) for v in held.values())
  assert np.isfinite(info["random_rescored_mean"]) and held["greedy"] != means["greedy"]


def test_sampled_candidates_skip_empty_slots_and_repeats():
  from rlsel.selectors.rl import sampled_candidates
  masks = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
  cands, scores = sampled_candidates(np.array([0.9, 0.9, 0.5, -np.inf], np.float32), masks)
  assert list(cands) == ["best_sampled", "sampled_2"]
  np.testing.assert_array_equal(cands["sampled_2"], [1, 2])
  assert scores == {"best_sampled": pytest.approx(0.9), "sampled_2": pytest.approx(0.5)}


def test_rescore_averages_fresh_keys_and_scores_equal_sets_once():
  from rlsel import proxy as proxy_lib
  keys = select_keys(jax.random.PRNGKey(1))
  pool = synthetic_pool(n=120)
  params, _, _ = build_env(keys.env, tiny_rl_config(), pool.train.embeddings, pool.train.labels, pool.num_classes,
                           12, tokens=pool.train.input_ids)
  a, b = np.arange(12), np.arange(20, 32)
  out = proxy_lib.rescore(keys.score, params.proxy_spec, params.proxy, {"a": a, "b": b, "a_again": a[::-1]}, 3)
  assert out["a"] == out["a_again"] and len(out["a"]["scores"]) == 3
  assert out["a"]["scores"][0] == pytest.approx(proxy_lib.score_positions(keys.score, params.proxy_spec,
                                                                          params.proxy, a))
  assert len(set(out["a"]["scores"])) == 3  # the keys differ
  assert out["b"]["mean"] == pytest.approx(np.mean(out["b"]["scores"]))
  assert proxy_lib.best_by_mean(out) == ("a" if out["a"]["mean"] >= out["b"]["mean"] else "b")


def test_rl_ppo_with_the_incremental_proxy_and_the_surrogate():
  """The proxy carried through episodes drives PPO, also when some updates roll out on the surrogate (whose episodes
  carry no proxy), and the cell records which reward it used."""
  pool = synthetic_pool(n=200)
  c = tiny_rl_config()
  c.proxy.incremental_steps, c.rl.surrogate_share, c.rl.num_updates = 2, 0.5, 3
  ids, info = make("rl_ppo", c).select(jax.random.PRNGKey(0), pool, 20)
  assert ids.shape == (20,) and np.unique(ids).shape[0] == 20
  assert info["reward"] == "IncrementalProxyReward(steps=2)" and np.isfinite(info["reward_score"])
  assert np.all(np.isfinite(info["curves"]["mean_return"]))
  c.proxy.incremental_steps, c.selectors = -1, ("rl_ppo",)
  with pytest.raises(UserError, match="proxy.incremental_steps"):
    from rlsel.validation import validate_settings
    validate_settings(c)


def test_rl_selector_user_errors():
  pool = synthetic_pool(n=200)
  with pytest.raises(UserError, match="budget"):
    make("rl_ppo", tiny_rl_config()).select(jax.random.PRNGKey(0), pool, 190).ids  # 25% of the pool is the reward split
  c = tiny_rl_config()
  c.proxy.kind = "lstm"
  with pytest.raises(UserError, match="proxy.kind='lstm' is unknown"):
    make("rl_dqn", c).select(jax.random.PRNGKey(0), pool, 20).ids
  c = _transformer_config()
  c.proxy.transformer_layers = 3
  with pytest.raises(UserError, match="transformer_layers=3 must be between 1 and the target's 2 layers"):
    make("rl_dqn", c).select(jax.random.PRNGKey(0), pool, 20).ids


def _transformer_config():
  c = tiny_rl_config()
  c.target.kind, c.target.hidden_size, c.target.num_layers, c.target.num_heads = "tiny", 32, 2, 4
  c.target.intermediate_size = 64
  c.proxy.kind, c.proxy.transformer_layers, c.proxy.learning_rate, c.proxy.batch_size = "transformer", 1, 3e-3, 8
  return c


def test_transformer_proxy_learns_from_tokens_and_drives_the_rl_selector():
  """The transformer proxy (target's first layer on tokens) fine-tunes inside lax.scan and rewards rl_ppo episodes."""
  from rlsel import proxy as proxy_lib
  c = _transformer_config()
  spec = proxy_lib.spec_from_config(c, 3)
  assert spec.kind == "transformer" and spec.bert.num_layers == 1 and not spec.pretrained
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 96).astype(np.int32)
  x = rng.integers(5, 200, (96, 12)).astype(np.int32)
  x[:, 0] = y + 1  # the label is readable from the first token
  x[:, -2:] = 0    # padding, masked out
  data = proxy_lib.ProxyData(x=jnp.asarray(x[:64]), y=jnp.asarray(y[:64]), rx=jnp.asarray(x[64:]),
                             ry=jnp.asarray(y[64:]), init_params=proxy_lib.init_params(jax.random.key(0), spec, 12))
  before = float(proxy_lib.score(spec, data.init_params, data.rx, data.ry))
  after = proxy_lib.score_positions(jax.random.key(1), spec.replace(steps=60),
                                    data, np.arange(64))
  assert np.isfinite(after) and after > before + 0.05, (before, after)

  pool = synthetic_pool(n=200)
  sel = make("rl_ppo", c)
  ids, info = sel.select(jax.random.PRNGKey(0), pool, 20)
  assert ids.shape == (20,) and np.unique(ids).shape[0] == 20 and np.isin(ids, pool.train.ids).all()
  assert np.isfinite(info["reward_score"])


def test_segmented_training_equals_one_jit_and_resumes_after_a_crash(tmp_path, monkeypatch):
  """With a checkpoint folder the agent trains in checkpointed segments: same ids as one jit end to end, and a run
  that dies after its first checkpoint resumes from it and still gives the same ids and training curves."""
  from rlsel import checkpoint as ckpt_lib
  pool = synthetic_pool(n=200)
  c = tiny_rl_config()
  c.rl.num_updates, c.rl.checkpoint_every, c.rl.surrogate_share = 5, 2, 0.5  # surrogate state is in the carry too
  one = make("rl_ppo", c)
  ref, ref_info = one.select(jax.random.PRNGKey(3), pool, 20)
  dirs = RunDirs(checkpoint_dir=str(tmp_path / "agent"))
  seg = make("rl_ppo", c)
  real_save, saves = ckpt_lib.Checkpointer.save, []

  def dying_save(self, step, state, meta):
    real_save(self, step, state, meta)
    saves.append(step)
    if len(saves) == 1:
      raise KeyboardInterrupt("killed after the first checkpoint")

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", dying_save)
  with pytest.raises(KeyboardInterrupt):
    seg.select(jax.random.PRNGKey(3), pool, 20, dirs)
  assert saves == [2]
  resumed = make("rl_ppo", c)
  ids, info = resumed.select(jax.random.PRNGKey(3), pool, 20, dirs)
  assert saves == [2, 4]  # resumed at update 2: the next checkpoint is at 4, not 2 again
  np.testing.assert_array_equal(ids, ref)
  for name, curve in ref_info["curves"].items():  # None where a curve has no point (greedy_return)
    np.testing.assert_allclose(np.asarray(info["curves"][name], float), np.asarray(curve, float), rtol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize("algo", ["rl_dqn"])  # its carry holds the replay buffer
def test_other_agents_resume_from_checkpoint(tmp_path, algo):
  pool = synthetic_pool(n=200)
  c = tiny_rl_config()
  c.rl.num_updates, c.rl.checkpoint_every = 3, 1
  ref = make(algo, c).select(jax.random.PRNGKey(1), pool, 20).ids
  dirs = RunDirs(checkpoint_dir=str(tmp_path / "agent"))
  np.testing.assert_array_equal(make(algo, c).select(jax.random.PRNGKey(1), pool, 20, dirs).ids, ref)
  # the last checkpoint (update 2 of 3) is still there: this run resumes from it
  np.testing.assert_array_equal(make(algo, c).select(jax.random.PRNGKey(1), pool, 20, dirs).ids, ref)


def test_spearman_of_the_proxy_fidelity_benchmark():
  from rlsel.stats import spearman
  assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
  assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)  # ties get average ranks
  assert spearman([1, 1, 1], [1, 2, 3]) is None  # undefined for a constant side


def test_balanced_log_loss_is_the_mean_of_class_means():
  from rlsel import proxy as proxy_lib
  spec = proxy_lib.ProxySpec(num_classes=3, hidden=0, steps=1, batch_size=4, learning_rate=0.1,
                             score="balanced_neg_log_loss", reward_subsample=0)
  x = jnp.eye(4, dtype=jnp.float32)[jnp.asarray([0, 1, 1, 1, 2, 3])]
  y = jnp.asarray([0, 1, 1, 1, 2, 2])
  params = proxy_lib.init_params(jax.random.key(0), spec, 4)
  params = jax.tree.map(lambda p: p + 0.3 * jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) / p.size, params)
  per = np.asarray(jax.nn.log_softmax(proxy_lib.logits_fn(spec, params, x)))[np.arange(6), np.asarray(y)]
  want = np.mean([per[[0]].mean(), per[[1, 2, 3]].mean(), per[[4, 5]].mean()])
  assert float(proxy_lib.score(spec, params, x, y)) == pytest.approx(want, rel=1e-5)
  # Weights drop rows (subsampling): class 2 keeps only its second row; a class with no weight is left out.
  w = jnp.asarray([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
  assert float(proxy_lib.score(spec, params, x, y, w)) == pytest.approx(np.mean([per[0], per[1], per[5]]), rel=1e-5)
  w0 = jnp.asarray([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  assert float(proxy_lib.score(spec, params, x, y, w0)) == pytest.approx(
      np.mean([per[[1, 2, 3]].mean(), per[[4, 5]].mean()]), rel=1e-5)
  # The plain score is the mean over rows, so a class with more rows weighs more.
  plain = spec.replace(score="neg_log_loss")
  assert float(proxy_lib.score(plain, params, x, y)) == pytest.approx(per.mean(), rel=1e-5)


def test_confident_within_order_takes_cleaner_rows_from_a_noisy_pool():
  """rl.within_order="confident": every cluster hands out its rows by the out-of-fold probe's probability of the
  given label, so a random policy's episode carries fewer flipped labels than under the random order; a bad value
  is one clear error before any work."""
  from rlsel import env as env_lib, validation
  from tests.test_selectors_baselines import noisy_pool
  pool, flipped = noisy_pool(n=400, flip_rate=0.4, seed=2)
  rates = {}
  reset, step = jax.jit(env_lib.reset), jax.jit(env_lib.step)
  for order in ("random", "confident"):
    cfg = tiny_rl_config()
    cfg.rl.within_order = order
    params, selectable, _ = build_env(jax.random.PRNGKey(3), cfg, pool.train.embeddings, pool.train.labels,
                                      pool.num_classes, 60, tokens=pool.train.input_ids)
    assert params.shuffle == (order == "random")
    taken = []
    for seed in range(3):  # uniform random valid actions until the budget is met
      key = jax.random.PRNGKey(seed)
      state, obs = reset(key, params)
      while not bool(state.done):
        key, ka, ks = jax.random.split(key, 3)
        a = jax.random.categorical(ka, jnp.where(obs.action_mask, 0.0, -1e9))
        state, obs, *_ = step(ks, state, a, params)
      taken.append(flipped[selectable[np.flatnonzero(np.asarray(state.mask))]].mean())
    rates[order] = float(np.mean(taken))
  assert rates["confident"] < 0.6 * rates["random"], rates
  cfg = tiny_rl_config()
  cfg.selectors, cfg.rl.within_order = ("rl_ppo",), "cleanest"
  with pytest.raises(UserError, match="rl.within_order"):
    validation.validate_settings(cfg)


def test_confident_pool_keeps_only_the_surest_rows_selectable():
  """rl.confident_pool = m: the environment's selectable rows are the m x budget rows of highest out-of-fold
  probability of their given label, each class in its pool share, so they carry far fewer flipped labels than the
  pool; 0 keeps every row outside the reward split; a value in (0, 1) is one clear error before any work."""
  from rlsel import validation
  from tests.test_selectors_baselines import noisy_pool
  pool, flipped = noisy_pool(n=400, flip_rate=0.4, seed=2)
  key, budget = jax.random.PRNGKey(3), 40
  cfg = tiny_rl_config()
  _, every, _ = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  cfg.rl.confident_pool = 2.5
  params, kept, sample = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  assert kept.shape == (100,) and params.num_rows == 100 and np.isin(kept, every).all()
  assert np.unique(kept).shape == kept.shape and sample.max() < 100
  shares = np.bincount(pool.train.labels[kept], minlength=pool.num_classes) / 100
  pool_shares = np.bincount(pool.train.labels[every], minlength=pool.num_classes) / every.shape[0]
  np.testing.assert_allclose(shares, pool_shares, atol=0.02)
  assert flipped[kept].mean() < 0.5 * flipped[every].mean(), (flipped[kept].mean(), flipped[every].mean())
  assert params.shuffle  # the filter does not change the within-cluster order
  for bad in (0.5, -1.0):
    cfg = tiny_rl_config()
    cfg.selectors, cfg.rl.confident_pool = ("rl_ppo",), bad
    with pytest.raises(UserError, match="rl.confident_pool"):
      validation.validate_settings(cfg)


def test_confident_pool_noise_scale_keeps_more_of_a_clean_looking_pool():
  """rl.confident_pool_noise_scale = k: the confident pool keeps max(m x budget, (1 - k x flagged share) x rows):
  the m x budget floor where confident learning flags much (heavy noise), more rows where it flags little; the
  larger pool still holds the surest rows first; a scale without the pool, or a negative one, is one clear error."""
  pytest.importorskip("cleanlab")
  from rlsel import validation
  from rlsel.env.build import confident_pool_size, label_confidence
  from rlsel.selectors.coverage import label_issues
  from tests.test_selectors_baselines import noisy_pool
  assert confident_pool_size(1000, 4, 50, 3.0, 0.30) == 200   # 1 - 0.9 = 10% < 4 x budget: the floor
  assert confident_pool_size(1000, 4, 50, 3.0, 0.15) == 550   # 1 - 0.45 = 55% of the rows
  assert confident_pool_size(1000, 4, 50, 0.0, 0.15) == 200   # off: the fixed multiple
  assert confident_pool_size(1000, 30, 50, 3.0, 0.0) == 1000  # never more than the rows
  pool, flipped = noisy_pool(n=400, flip_rate=0.1, seed=2)
  key, budget = jax.random.PRNGKey(3), 20
  cfg = tiny_rl_config()

  def env(p):  # (EnvParams, selectable positions) of pool `p` under cfg's settings now
    params, selectable, _ = build_env(key, cfg, p.train.embeddings, p.train.labels, p.num_classes, budget)
    return params, selectable

  _, every = env(pool)
  cfg.rl.confident_pool = 2.0
  _, fixed = env(pool)
  cfg.rl.confident_pool_noise_scale = 1.5
  params, scaled = env(pool)
  _, probs = label_confidence(jax.random.fold_in(key, 1), cfg, pool.train.embeddings[every], pool.train.labels[every],
                              pool.num_classes)
  share = label_issues(pool.train.labels[every], probs, cfg.selection.clean_filter_by, "test").mean()
  want = int(np.floor((1 - 1.5 * share) * every.shape[0]))
  assert want > fixed.shape[0] == 40, (share, want)
  assert scaled.shape == (want,) and params.num_rows == want
  assert np.isin(fixed, scaled).all()  # the surest rows stay in; the scale only widens the pool
  assert flipped[scaled].mean() < flipped[every].mean()
  heavy, _ = noisy_pool(n=400, flip_rate=0.45, seed=2)  # cleanlab flags much: the floor holds, the same environment
  cfg.rl.confident_pool_noise_scale = 0.0
  base_params, base = env(heavy)
  cfg.rl.confident_pool_noise_scale = 3.0
  same_params, same = env(heavy)
  np.testing.assert_array_equal(same, base)
  for a, b in zip(jax.tree_util.tree_leaves(same_params), jax.tree_util.tree_leaves(base_params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for bad, pool_multiple in ((-1.0, 4.0), (2.0, 0.0)):
    cfg = tiny_rl_config()
    cfg.selectors, cfg.rl.confident_pool_noise_scale, cfg.rl.confident_pool = ("rl_ppo",), bad, pool_multiple
    with pytest.raises(UserError, match="rl.confident_pool_noise_scale"):
      validation.validate_settings(cfg)


def test_drop_label_issues_leaves_confident_learnings_flagged_rows_out():
  """rl.drop_label_issues: the selectable rows are those outside the reward split that `label_clean`'s confident
  learning does not flag (the same out-of-fold probe, selection.clean_filter_by), so far fewer flipped labels; with
  rl.confident_pool the surest rows are taken from what is left; a bad filter setting fails before any work."""
  pytest.importorskip("cleanlab")
  from rlsel.env.build import label_confidence
  from rlsel.selectors.coverage import label_issues
  from tests.test_selectors_baselines import noisy_pool
  pool, flipped = noisy_pool(n=400, flip_rate=0.3, seed=2)
  key, budget = jax.random.PRNGKey(3), 40
  cfg = tiny_rl_config()
  _, every, _ = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  cfg.rl.drop_label_issues = True
  params, kept, _ = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  _, probs = label_confidence(jax.random.fold_in(key, 1), cfg, pool.train.embeddings[every], pool.train.labels[every],
                              pool.num_classes)
  flags = label_issues(pool.train.labels[every], probs, cfg.selection.clean_filter_by, "test")
  assert 0 < flags.sum() < every.shape[0] - budget
  np.testing.assert_array_equal(kept, every[~flags])
  assert params.num_rows == kept.shape[0]
  assert flipped[kept].mean() < 0.6 * flipped[every].mean(), (flipped[kept].mean(), flipped[every].mean())
  cfg.rl.confident_pool = 2.0
  _, both, _ = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  assert both.shape == (80,) and np.isin(both, kept).all()
  from rlsel import validation  # the filter's settings are checked before any work, as label_clean's are
  cfg.selectors, cfg.selection.clean_filter_by = ("random", "climb"), "by_magic"
  with pytest.raises(UserError, match="selection.clean_filter_by"):
    validation.validate_settings(cfg)


def test_trusted_reward_split_keeps_the_rows_a_probe_trusts():
  """proxy.reward_trusted = q: the reward split keeps each class's q share of its rows, those a probe fit on the
  selectable rows is surest carry their given label, so it holds far fewer flipped labels; 1 keeps it whole; a value
  outside (0, 1] is one clear error before any work."""
  from rlsel import validation
  from rlsel.env.build import split_reward, trusted_reward_rows
  from rlsel.selectors.basic import numpy_rng
  from tests.test_selectors_baselines import noisy_pool
  pool, flipped = noisy_pool(n=400, flip_rate=0.4, seed=2)
  key, budget = jax.random.PRNGKey(3), 40
  cfg = tiny_rl_config()
  whole, _, _ = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  cfg.proxy.reward_trusted = 0.5
  half, _, _ = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  assert half.proxy.ry.shape[0] == -(-whole.proxy.ry.shape[0] // 2)
  selectable, reward = split_reward(numpy_rng(key), cfg, pool.train.labels)
  kept = trusted_reward_rows(cfg, pool.train.embeddings, pool.train.labels, selectable, reward, pool.num_classes)
  assert np.isin(kept, reward).all() and np.array_equal(pool.train.labels[kept], np.asarray(half.proxy.ry))
  assert flipped[kept].mean() < 0.5 * flipped[reward].mean(), (flipped[kept].mean(), flipped[reward].mean())
  for bad in (0.0, 1.5):
    cfg = tiny_rl_config()
    cfg.selectors, cfg.proxy.reward_trusted = ("rl_ppo",), bad
    with pytest.raises(UserError, match="proxy.reward_trusted"):
      validation.validate_settings(cfg)


def test_validation_reward_split_is_the_validation_split_and_ranks_a_clean_subset_first():
  """proxy.reward_source='validation': the validation rows, put in the pool's feature space (standardised with the
  pool's statistics, projected on the pool's components), are the reward split and every pool row is selectable. On
  a noisy pool with a clean validation split that reward prefers the clean rows to the flipped ones; thinning it
  (reward_trusted) or an unknown source is one clear error before any work."""
  from rlsel import proxy as proxy_lib
  from rlsel import validation
  from rlsel.env.build import build_pool_env, standardise
  from tests.test_selectors_baselines import noisy_pool
  pool, flipped = noisy_pool(n=400, flip_rate=0.4, seed=2)
  x, y = pool.train.embeddings, pool.train.labels
  centres = np.stack([x[~flipped & (y == c)].mean(0) for c in range(pool.num_classes)])
  rng = np.random.default_rng(7)
  vy = rng.integers(0, pool.num_classes, 150).astype(np.int32)
  pool.validation.labels = vy
  pool.validation.__dict__["embeddings"] = (centres[vy] + rng.normal(size=(150, x.shape[1]))).astype(np.float32)
  cfg = tiny_rl_config()
  cfg.proxy.reward_source = "validation"
  key, budget = jax.random.PRNGKey(3), 40
  params, selectable, _ = build_pool_env(key, cfg, pool, budget)
  np.testing.assert_array_equal(selectable, np.arange(400))
  np.testing.assert_array_equal(np.asarray(params.proxy.ry), vy)
  np.testing.assert_allclose(np.asarray(params.proxy.rx), standardise(pool.validation.embeddings, reference=x),
                             atol=1e-5)
  clean, dirty = np.flatnonzero(~flipped)[:60], np.flatnonzero(flipped)[:60]
  from rlsel.selectors.rl import validation_rescore
  assert validation_rescore(key, cfg, params, pool, {"clean": clean}) == {}  # the reward is the validation split
  scores = [[proxy_lib.score_positions(jax.random.PRNGKey(k), params.proxy_spec, params.proxy, rows)
             for k in range(2)] for rows in (clean, dirty)]
  assert min(scores[0]) > max(scores[1]) + 0.1, scores
  cfg.proxy.pca_dim = 4  # held-out rows follow the pool's projection
  params, _, _ = build_pool_env(key, cfg, pool, budget)
  assert params.proxy.rx.shape == (150, 4) and params.proxy.x.shape == (400, 4)
  for field, bad, match in (("reward_trusted", 0.5, "reward_source='validation'"),
                            ("reward_source", "test", "proxy.reward_source")):
    cfg = tiny_rl_config()
    cfg.selectors, cfg.proxy.reward_source = ("rl_ppo",), "validation"
    cfg.proxy[field] = bad
    with pytest.raises(UserError, match=match):
      validation.validate_settings(cfg)


def test_pick_share_sets_reward_rows_aside_that_judge_only_the_final_pick():
  """proxy.pick_share = s: a stratified s of the reward split leaves the reward for `EnvParams.pick`, the rows the
  final candidates are judged on (no episode was scored on them), while the environment's other draws (selectable
  rows, clusters, the random sample) stay put; the selector picks by the mean there and logs both. 0 keeps today's
  pick; a share outside [0, 1), or one with the validation split as reward, is one clear error before any work."""
  from rlsel import validation
  pool = synthetic_pool(n=200)  # the shapes of the first test's (a shared compilation)
  key, budget = jax.random.PRNGKey(5), 20
  cfg = tiny_rl_config()
  whole, selectable, sample = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes, budget)
  assert whole.pick is None
  cfg.proxy.pick_share = 0.5
  split, selectable2, sample2 = build_env(key, cfg, pool.train.embeddings, pool.train.labels, pool.num_classes,
                                          budget)
  np.testing.assert_array_equal(selectable, selectable2)
  np.testing.assert_array_equal(sample, sample2)
  np.testing.assert_array_equal(np.asarray(whole.sizes), np.asarray(split.sizes))
  rows = lambda d: {tuple(np.round(r, 5)) for r in np.asarray(d.rx)}
  kept, picked = rows(split.proxy), rows(split.pick)
  assert kept.isdisjoint(picked) and kept | picked == rows(whole.proxy)
  counts = [np.bincount(np.asarray(d.ry), minlength=pool.num_classes) for d in (whole.proxy, split.pick)]
  np.testing.assert_allclose(counts[1], counts[0] / 2, atol=1)  # stratified by label
  assert split.pick.x is split.proxy.x  # the pool's rows are shared, not copied

  ids, info = make("rl_ppo", cfg).select(jax.random.PRNGKey(0), pool, budget)
  assert ids.shape == (budget,) and info["pick_split"] == split.pick.rx.shape[0]
  judged = info["candidate_pick_mean"]
  assert set(judged) == set(info["candidate_rescored_mean"]) and info["chosen"] == max(judged, key=judged.get)
  assert judged != info["candidate_rescored_mean"] and np.isfinite(info["random_pick_mean"])
  for field, bad, match in (("pick_share", 1.0, "proxy.pick_share"), ("pick_share", -0.1, "proxy.pick_share"),
                            ("reward_source", "validation", "reward_source='validation'")):
    cfg = tiny_rl_config()
    cfg.selectors, cfg.proxy.pick_share = ("rl_ppo",), 0.5
    cfg.proxy[field] = bad
    with pytest.raises(UserError, match=match):
      validation.validate_settings(cfg)
