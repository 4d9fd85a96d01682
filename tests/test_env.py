"""The selection environment on a jitted step: invariants of the mask, the action mask, the budget and the reward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel import env, proxy
from rlsel.configlib import base_config
from rlsel.env.build import coverage_base
from rlsel.env.rewards import draw_selected


_STEP = jax.jit(env.step)
_RESET = jax.jit(env.reset)
_ACT = jax.jit(lambda key: tuple(jax.random.split(key, 3)))
_SAMPLE = jax.jit(lambda key, mask: jax.random.categorical(key, jnp.where(mask, 0.0, -1e9)))


def _proxy_params(timing="step", chunk=3, whole=False, subsample=0, reward=None, base=None):
  """A tiny proxy-rewarded pool: 90 selectable rows in 5 uneven clusters, a 30-row reward split."""
  rng = np.random.default_rng(0)
  c = base_config()
  c.proxy.steps, c.proxy.batch_size, c.proxy.reward_subsample = 3, 8, subsample
  spec = proxy.spec_from_config(c, 2)
  x = rng.normal(size=(120, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  data = proxy.ProxyData(jnp.asarray(x[:90]), jnp.asarray(y[:90]), jnp.asarray(x[90:]), jnp.asarray(y[90:]),
                         proxy.init_params(jax.random.PRNGKey(0), spec, 8))
  assign = np.repeat(np.arange(5), [4, 11, 20, 25, 30])
  feats = rng.normal(size=(5, 4))
  return env.make_params(feats=feats, assign=assign, budget=20, chunk=chunk, whole=whole,
                         reward=reward or env.ProxyReward(), timing=timing, proxy_spec=spec, proxy_data=data,
                         base=None if base is None else coverage_base(assign, 5, base))


def _run_episode(params, seed, extra_steps=2):
  """A random valid-action episode through a jitted step that must trace once; returns per-step records."""
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, state, action):
    return env.step(key, state, action, params)

  key = jax.random.PRNGKey(seed)
  state, obs = _RESET(key, params)
  recs = []
  for t in range(params.max_steps + extra_steps):
    key, ka, ks = _ACT(key)
    a = _SAMPLE(ka, obs.action_mask)
    prev, prev_obs = state, obs
    state, obs, r, done, info = step(ks, state, a)
    recs.append((prev, prev_obs, a, state, r, done, info))
  return recs


@pytest.mark.parametrize("case", ["toy_chunks", "proxy_chunks", "proxy_whole", "incremental_chunks", "proxy_base"])
def test_step_invariants(case):
  if case == "proxy_base":  # a coverage base of 8 of the 20: the actions spend 12, in ceil(12 / 3) steps
    params = _proxy_params(base=8)
    assert params.base_total == 8 and params.max_steps == 4
  elif case == "toy_chunks":  # uneven sizes that are not multiples of the chunk
    params = env.toy_params(jax.random.PRNGKey(3), num_clusters=5, cluster_size=[3, 5, 7, 9, 14], budget=22, chunk=4)
  elif case == "incremental_chunks":
    params = _proxy_params(reward=env.IncrementalProxyReward(2))
  else:
    params = _proxy_params(whole=case == "proxy_whole")
  recs = _run_episode(params, seed=1)
  sizes = np.asarray(params.sizes)
  finished_at = None
  for t, (prev, prev_obs, a, state, r, done, info) in enumerate(recs):
    m0, m1 = np.asarray(prev.mask), np.asarray(state.mask)
    assert np.all(m1 >= m0)                                   # the mask only grows
    assert m1.sum() == np.asarray(state.taken).sum()          # no example selected twice
    assert m1.sum() <= params.budget
    assert np.all(np.asarray(state.taken) <= sizes)
    am = np.asarray(prev_obs.action_mask)
    left = sizes - np.asarray(prev.taken)
    assert not np.any(am & (left == 0))                       # an exhausted cluster cannot be chosen
    assert np.isfinite(float(r))
    if bool(done) and finished_at is None:
      finished_at = t
      assert m1.sum() == params.budget                        # the budget is met exactly
    if finished_at is not None and t > finished_at:
      assert float(r) == 0.0 and np.array_equal(m0, m1)       # steps after the end change nothing
  assert finished_at is not None and finished_at < params.max_steps
  if case != "proxy_whole":
    assert finished_at == params.max_steps - 1                # chunk mode: exactly ceil(budget / chunk) steps


def test_selected_rows_belong_to_the_chosen_cluster_and_exhausted_action_is_a_noop():
  params = env.toy_params(jax.random.PRNGKey(0), num_clusters=3, cluster_size=4, budget=12, chunk=4)
  order = np.asarray(params.order)
  state, obs = _RESET(jax.random.PRNGKey(1), params)
  state, obs, r, done, _ = _STEP(jax.random.PRNGKey(2), state, jnp.int32(1), params)
  rows = np.flatnonzero(np.asarray(state.mask))
  assert set(rows) == set(order[1, :4])
  assert not bool(obs.action_mask[1])
  state2, _, r2, _, _ = _STEP(jax.random.PRNGKey(3), state, jnp.int32(1), params)  # exhausted: no-op
  assert np.array_equal(np.asarray(state2.mask), np.asarray(state.mask)) and float(r2) == 0.0


def test_episode_order_is_random_per_episode():
  params = env.toy_params(jax.random.PRNGKey(0), num_clusters=3, cluster_size=4, budget=12, chunk=4)
  orders = [np.asarray(_RESET(jax.random.PRNGKey(s), params)[0].order) for s in range(4)]
  for o in orders:  # each row is a permutation of that cluster's rows
    np.testing.assert_array_equal(np.sort(o[:, :4], 1), np.sort(np.asarray(params.order)[:, :4], 1))
  assert len({o.tobytes() for o in orders}) > 1


def test_priority_order_hands_out_each_clusters_best_rows_first_in_every_episode():
  rng = np.random.default_rng(4)
  assign = np.repeat(np.arange(3), [5, 6, 7])
  priority = rng.random(18)
  params = env.make_params(feats=np.zeros((3, 2)), assign=assign, budget=9, chunk=3, reward=env.ToyReward(),
                           priority=priority)
  assert not params.shuffle
  order = np.asarray(params.order)
  for k, size in enumerate([5, 6, 7]):
    rows = order[k, :size]
    assert set(rows) == set(np.flatnonzero(assign == k)) and np.all(np.diff(priority[rows]) <= 0)
  for seed in range(3):  # no per-episode shuffle: the first step of cluster 2 takes its three best rows
    state, _ = _RESET(jax.random.PRNGKey(seed), params)
    np.testing.assert_array_equal(np.asarray(state.order), order)
    state, *_ = _STEP(jax.random.PRNGKey(9), state, jnp.int32(2), params)
    best = np.flatnonzero(assign == 2)[np.argsort(-priority[assign == 2])[:3]]
    assert set(np.flatnonzero(np.asarray(state.mask))) == set(best)
  with pytest.raises(ValueError, match="finite"):
    env.make_params(feats=np.zeros((3, 2)), assign=assign, budget=9, chunk=3, reward=env.ToyReward(),
                    priority=np.full(18, np.nan))


def test_end_reward_and_subsample():
  params = _proxy_params(timing="end", subsample=10)
  recs = _run_episode(params, seed=2, extra_steps=0)
  rewards = np.array([float(r) for *_, r, _, _ in recs])
  assert np.all(rewards[:-1] == 0.0) and np.isfinite(rewards[-1])
  last = recs[-1][3]
  assert last.rows.shape == (10,)
  np.testing.assert_allclose(rewards.sum(), float(last.score - last.init_score), rtol=1e-5)


@pytest.mark.parametrize("timing", ["step", "end"])
def test_incremental_proxy_continues_its_fine_tune(timing):
  """The carried proxy is exactly `proxy.train` applied step after step from the untrained proxy; steps after the end
  leave it alone; the return telescopes to the final score, which is the carried proxy's reward-split score."""
  params = _proxy_params(timing=timing, reward=env.IncrementalProxyReward(2))
  recs = _run_episode(params, seed=3)
  carried = proxy.start(params.proxy_spec, params.proxy)
  for prev, _, _, state, _, _, _ in recs:
    if bool(prev.done):
      chex.assert_trees_all_equal(state.reward_state, prev.reward_state)
      continue
    key = jax.random.fold_in(prev.proxy_key, jnp.sum(state.taken))
    carried = proxy.train(key, params.proxy_spec, params.proxy, carried, draw_selected(state.taken, state.order), 2)
    chex.assert_trees_all_close(state.reward_state.params, carried.params, rtol=1e-5, atol=1e-6)
  last = recs[-1][3]
  expected = proxy.reward_score(params.proxy_spec, carried.params, params.proxy, last.rows)
  np.testing.assert_allclose(float(last.score), float(expected), rtol=1e-5)
  total = sum(float(r) for *_, r, _, _ in recs)
  np.testing.assert_allclose(total, float(last.score - last.init_score), rtol=1e-4, atol=1e-6)
  assert float(last.score) != float(last.init_score)  # the proxy did learn


def test_toy_return_telescopes_to_score():
  params = env.toy_params(jax.random.PRNGKey(4))
  recs = _run_episode(params, seed=0, extra_steps=0)
  total = sum(float(r) for *_, r, _, _ in recs)
  last = recs[-1][3]
  expected = float(np.dot(np.asarray(params.values), np.asarray(last.taken)) / params.budget)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert total <= env.toy_optimal_return(params) + 1e-6


def test_bad_chunk_is_a_user_error():
  from rlsel.errors import UserError
  with pytest.raises(UserError):
    env.resolve_chunk("lots", 10, 4)
  assert env.resolve_chunk("cluster", 10, 4) == (1, True)
  assert env.resolve_chunk("auto", 10, 4) == (3, False)


# Label quotas: 6 clusters of uneven sizes, labels 0, 0, 1, 1, 1, 2; quotas that are not multiples of the chunk.
_QUOTA_SIZES, _QUOTA_LABELS = [5, 9, 4, 7, 12, 6], [0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize("whole,quota", [(False, (7, 9, 3)), (False, (0, 13, 6)), (True, (7, 9, 3))])
def test_label_quotas_hold_in_every_episode(whole, quota):
  """(0, 13, 6): a label left out, and label 2 takes all 6 rows of its one cluster (a partial chunk must follow)."""
  params = env.toy_params(jax.random.PRNGKey(5), num_clusters=6, cluster_size=_QUOTA_SIZES, budget=sum(quota),
                          chunk=4, whole=whole, cluster_labels=_QUOTA_LABELS, quota=quota)
  labels = np.asarray(_QUOTA_LABELS)
  for seed in range(4):
    recs = _run_episode(params, seed=seed)
    for prev, prev_obs, a, state, r, done, info in recs:
      per_label = np.bincount(labels, weights=np.asarray(state.taken), minlength=3)
      assert np.all(per_label <= np.asarray(quota))              # no label ever passes its quota
      am = np.asarray(prev_obs.action_mask)
      full = np.bincount(labels, weights=np.asarray(prev.taken), minlength=3) >= np.asarray(quota)
      assert not np.any(am & full[labels])                       # a label whose quota is met cannot be chosen
    last = recs[-1][3]
    assert bool(last.done) and np.asarray(last.mask).sum() == params.budget
    np.testing.assert_array_equal(np.bincount(labels, weights=np.asarray(last.taken), minlength=3), quota)
    done_at = next(t for t, rec in enumerate(recs) if bool(rec[5]))
    assert done_at < params.max_steps
  if not whole and quota == (7, 9, 3):  # with slack in every label, exactly the sum of ceil(quota / chunk) steps
    assert params.max_steps == 6


def test_without_quotas_the_environment_is_unchanged():
  """No quotas: the action mask and the steps are those of the plain budget (the existing configs' cells)."""
  params = env.toy_params(jax.random.PRNGKey(5), num_clusters=6, cluster_size=_QUOTA_SIZES, budget=19, chunk=4)
  assert params.quota is None and params.cluster_label is None
  state, obs = _RESET(jax.random.PRNGKey(0), params)
  np.testing.assert_array_equal(np.asarray(obs.action_mask), np.asarray(_QUOTA_SIZES) >= 4)
  for a in (4, 4, 4, 1, 1):
    state, obs, *_ = _STEP(jax.random.PRNGKey(1), state, jnp.int32(a), params)
  assert np.asarray(state.taken).tolist() == [0, 7, 0, 0, 12, 0] and bool(state.done)  # the last chunk cut to 19


def test_bad_label_quotas_are_clear_errors():
  from rlsel.errors import UserError
  kw = dict(num_clusters=6, cluster_size=_QUOTA_SIZES, chunk=4, cluster_labels=_QUOTA_LABELS)
  with pytest.raises(UserError, match="exceed"):  # label 2 has 6 rows
    env.toy_params(jax.random.PRNGKey(0), budget=19, quota=(5, 7, 7), **kw)
  with pytest.raises(UserError, match="sum to the budget"):
    env.toy_params(jax.random.PRNGKey(0), budget=20, quota=(7, 9, 3), **kw)
  assign = np.repeat(np.arange(2), [4, 4])
  with pytest.raises(UserError, match="kmeans.stratified"):  # a cluster mixing labels
    env.make_params(feats=np.zeros((2, 2)), assign=assign, budget=4, chunk=2, reward=env.ToyReward(),
                    labels=np.array([0, 1, 0, 0, 1, 1, 1, 1]), quota=(2, 2))


def test_coverage_base_is_proportional_and_starts_every_episode():
  """rl.coverage_share's base: each cluster's share of n in proportion to its size (largest remainder); every episode
  starts with a fresh random take of exactly those counts, scored as the base's selection; the actions spend the
  rest of the budget and the episode ends on it."""
  assign = np.repeat(np.arange(5), [4, 11, 20, 25, 30])
  base = coverage_base(assign, 5, 10)
  assert base.tolist() == [1, 1, 2, 3, 3] and base.sum() == 10        # exact shares 0.44 1.22 2.22 2.78 3.33
  assert coverage_base(assign, 6, 0).tolist() == [0] * 6
  with pytest.raises(ValueError):
    coverage_base(assign, 5, 91)
  params = _proxy_params(base=10)
  firsts = []
  for seed in range(2):
    state, obs = _RESET(jax.random.PRNGKey(seed), params)
    rows = np.flatnonzero(np.asarray(state.mask))
    np.testing.assert_array_equal(np.asarray(state.taken), base)
    np.testing.assert_array_equal(np.bincount(assign[rows], minlength=5), base)   # the base's rows, cluster by cluster
    assert float(state.init_score) == pytest.approx(float(env.score(state, params)), abs=1e-6)
    firsts.append(set(rows))
  assert firsts[0] != firsts[1]                                       # a fresh random take per episode
  empty = float(params.reward.initial(state.rows, params))
  assert float(state.init_score) != empty                             # the base is scored, not the empty set
  recs = _run_episode(params, seed=3)
  last = recs[-1][3]
  assert bool(last.done) and np.asarray(last.mask).sum() == params.budget and np.all(np.asarray(last.taken) >= base)
  assert sum(float(rec[4]) for rec in recs) == pytest.approx(float(last.score - last.init_score), abs=1e-5)
  toy = env.toy_params(jax.random.PRNGKey(0), num_clusters=5, cluster_size=[4, 11, 20, 25, 30], budget=20, chunk=3,
                       base=base)
  state, _ = _RESET(jax.random.PRNGKey(1), toy)
  assert float(state.init_score) == pytest.approx(float(np.dot(np.asarray(toy.values), base) / 20), abs=1e-6)
  with pytest.raises(ValueError, match="fewer than the budget"):
    env.toy_params(jax.random.PRNGKey(0), num_clusters=5, cluster_size=[4, 11, 20, 25, 30], budget=10, base=base)
  from rlsel.errors import UserError
  with pytest.raises(UserError, match="cannot be combined"):
    env.toy_params(jax.random.PRNGKey(0), num_clusters=2, cluster_size=[5, 5], budget=6, chunk=2,
                   cluster_labels=[0, 1], quota=(3, 3), base=np.array([1, 1]))
