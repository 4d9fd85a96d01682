"""Agents: GAE and the PPO loss against references; PPO and DQN solve the toy pool; vmap over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel import env
from rlsel.agents import dqn, losses, ppo, reinforce
from rlsel.configlib import base_config

# Unit tests only: cheaper XLA compiles on the shared 2-core machine (the library's jits keep the defaults).
FAST = {"xla_backend_optimization_level": 0}


def test_gae_matches_numpy():
  rng = np.random.default_rng(0)
  t, e, gamma, lam = 7, 3, 0.9, 0.8
  r, v = rng.normal(size=(t, e)), rng.normal(size=(t, e))
  d = rng.random((t, e)) < 0.3
  last = rng.normal(size=e)
  adv = np.zeros((t, e))
  nxt_adv, nxt_v = np.zeros(e), last
  for i in reversed(range(t)):
    nt = 1.0 - d[i]
    delta = r[i] + gamma * nxt_v * nt - v[i]
    nxt_adv = delta + gamma * lam * nt * nxt_adv
    adv[i], nxt_v = nxt_adv, v[i]
  a, target = losses.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d), jnp.asarray(last), gamma, lam)
  np.testing.assert_allclose(np.asarray(a), adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(target), adv + v, rtol=1e-5, atol=1e-5)
  g = losses.returns_to_go(jnp.asarray(r), jnp.asarray(d), gamma)
  np.testing.assert_allclose(np.asarray(g), np.asarray(losses.gae(jnp.asarray(r), jnp.zeros((t, e)), jnp.asarray(d),
                                                                   jnp.zeros(e), gamma, 1.0)[0]), rtol=1e-5)


def test_ppo_loss_by_hand():
  logp, old = np.log([0.5, 0.2]), np.log([0.25, 0.4])        # ratios 2.0 and 0.5
  adv, value, old_v, target = np.array([1.0, -1.0]), np.array([1.0, 0.0]), np.array([0.5, 0.0]), np.array([2.0, 1.0])
  ent, w, eps, vf, ec = np.array([0.3, 0.5]), np.ones(2), 0.2, 0.5, 0.01
  total, info = losses.ppo_loss(*map(jnp.asarray, (logp, old, adv, value, old_v, target, ent, w)), eps, vf, ec)
  # policy: -min(2*1, 1.2*1) = -1.2 ; -min(0.5*-1, 0.8*-1) = 0.8 -> mean -0.2
  # value: clipped V = 0.7 and 0.0: 0.5*max(1, 1.69)=0.845 ; 0.5*max(1, 1)=0.5 -> mean 0.6725
  np.testing.assert_allclose(float(info.policy), -0.2, rtol=1e-5)
  np.testing.assert_allclose(float(info.value), 0.6725, rtol=1e-5)
  np.testing.assert_allclose(float(total), -0.2 + 0.5 * 0.6725 - 0.01 * 0.4, rtol=1e-5)
  # a padded step (weight 0) does not count
  total2, _ = losses.ppo_loss(*map(jnp.asarray, (logp, old, adv, value, old_v, target, ent, np.array([1.0, 0.0]))),
                              eps, vf, ec)
  np.testing.assert_allclose(float(total2), -1.2 + 0.5 * 0.845 - 0.01 * 0.3, rtol=1e-5)


def _toy_config(**rl):
  c = base_config()
  c.rl.num_envs, c.rl.num_updates, c.rl.hidden, c.rl.learning_rate, c.rl.log_every = 16, 30, 32, 3e-3, 0
  for k, v in rl.items():
    c.rl[k] = v
  return c


@pytest.fixture(scope="module")
def toy():
  params = env.toy_params(jax.random.PRNGKey(0), num_clusters=8, cluster_size=12, budget=24, chunk=4)
  return params, env.toy_optimal_return(params)


def test_ppo_solves_toy_pool_and_vmaps_over_seeds(toy):
  params, best = toy
  train = jax.jit(jax.vmap(ppo.make_train(_toy_config(), params)), compiler_options=FAST)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  out = train(keys)
  final = np.asarray(out["metrics"]["mean_return"][:, -1])
  assert np.all(final >= 0.9 * best), (final, best)          # both seeds, sampled policy, after 30 updates
  curves = np.asarray(out["metrics"]["mean_return"])
  assert not np.array_equal(curves[0], curves[1])             # seeds give distinct runs
  again = train(keys)
  np.testing.assert_array_equal(curves, np.asarray(again["metrics"]["mean_return"]))  # reproducible
  assert np.all(np.asarray(out["best_mask"]).sum(-1) == params.budget)
  top = np.asarray(out["top_scores"])  # [seeds, keep_best], best first, the best one first of all
  assert top.shape == (2, 4) and np.all(np.diff(top, axis=-1) <= 0)
  np.testing.assert_array_equal(top[:, 0], np.asarray(out["best_score"]))


def test_track_best_keeps_the_k_best_real_episodes_best_first():
  from rlsel.agents import init_best, track_best

  class Final:
    def __init__(self, score, mask):
      self.score, self.mask = jnp.asarray(score, jnp.float32), jnp.asarray(mask, bool)

  scores, masks = init_best(3, 2)
  scores, masks = track_best(scores, masks, Final([0.2, 0.5], [[1, 0], [0, 1]]), jnp.array(True))
  scores, masks = track_best(scores, masks, Final([0.9, 0.1], [[1, 1], [0, 0]]), jnp.array(False))  # not real
  scores, masks = track_best(scores, masks, Final([0.3, 0.1], [[1, 1], [0, 0]]), jnp.array(True))
  np.testing.assert_allclose(np.asarray(scores), [0.5, 0.3, 0.2])
  np.testing.assert_array_equal(np.asarray(masks), [[0, 1], [1, 1], [1, 0]])


def test_dqn_solves_toy_pool(toy):
  params, best = toy
  out = jax.jit(dqn.make_train(_toy_config(dqn_eps_end=0.0), params), compiler_options=FAST)(jax.random.PRNGKey(0))
  final = float(out["metrics"]["mean_return"][-1])                # last round is greedy (epsilon 0)
  assert final >= 0.9 * best, (final, best)
  assert np.isfinite(np.asarray(out["metrics"]["loss"])).all()


def test_reinforce_improves_on_toy_pool(toy):
  params, best = toy
  out = jax.jit(reinforce.make_train(_toy_config(), params), compiler_options=FAST)(jax.random.PRNGKey(0))
  ret = np.asarray(out["metrics"]["mean_return"])
  assert ret[-5:].mean() > ret[:5].mean() + 0.1 * best, ret   # learns, though more slowly than PPO


def test_surrogate_learns_a_score_from_mask_features():
  from rlsel import surrogate

  @jax.jit
  def fit(key):  # one compiled program: init, fill the buffer, train, predict
    k_x, k_init, k_fit = jax.random.split(key, 3)
    feats = jax.random.uniform(k_x, (256, 6))
    target = feats @ jnp.arange(6.0) / 6.0
    state = surrogate.add(surrogate.init(k_init, 6, 32, 512, 1e-2), feats, target)
    state, _ = surrogate.train(k_fit, state, 300, 64)
    pred = surrogate.predict(32, state.params, feats)
    return state.count, jnp.mean((pred - target) ** 2), jnp.var(target)

  count, mse, var = fit(jax.random.PRNGKey(0))
  assert int(count) == 256
  assert float(mse) < 0.1 * float(var)


def test_cluster_head_equals_a_dense_layer_on_the_concatenation():
  """The network's head0 multiplies the context once per observation instead of once per cluster; it keeps
  nn.Dense's params and initialisation on [h; ctx], so it is the same function with the same starting point."""
  import flax.linen as nn

  from rlsel.agents import networks

  kh, kc, ki = jax.random.split(jax.random.key(0), 3)
  h = jax.random.normal(kh, (3, 5, 8))   # [envs, clusters, A]
  ctx = jax.random.normal(kc, (3, 6))    # [envs, B]
  split = networks.ClusterContextDense(7)
  params = split.init(ki, h, ctx)["params"]
  both = jnp.concatenate([h, jnp.broadcast_to(ctx[:, None, :], (3, 5, 6))], -1)
  dense_params = nn.Dense(7).init(ki, both)["params"]
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, dense_params) == {"kernel": (14, 7), "bias": (7,)}
  np.testing.assert_array_equal(params["kernel"], dense_params["kernel"])
  params = {"kernel": params["kernel"], "bias": jax.random.normal(kc, (7,))}  # a non-zero bias is added once
  got = split.apply({"params": params}, h, ctx)
  want = nn.Dense(7).apply({"params": params}, both)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_size_prior_draws_clusters_in_proportion_to_their_rows_left():
  """rl.size_prior = 1: the untrained policy (near-constant network outputs) picks clusters in proportion to the rows
  they have left, as a stratified random draw does; 0: near-uniform over clusters. Masked clusters stay masked."""
  from rlsel.agents import networks, policy_logits, validate
  from rlsel.errors import UserError
  sizes = np.array([40, 10, 25, 5, 20])
  params = env.toy_params(jax.random.PRNGKey(1), num_clusters=5, cluster_size=sizes, budget=20, chunk=1)
  _, obs = env.reset(jax.random.PRNGKey(2), params)
  net = networks.init(jax.random.PRNGKey(3), 32, params.feats, obs)
  probs = {w: np.asarray(jax.nn.softmax(policy_logits(32, net, params, obs, w)[0])) for w in (0.0, 1.0)}
  np.testing.assert_allclose(probs[1.0], sizes / sizes.sum(), atol=0.02)
  np.testing.assert_allclose(probs[0.0], np.full(5, 0.2), atol=0.02)
  # Rows left, not cluster sizes: after taking 30 rows of cluster 0 its share falls to 10 of the 70 left.
  taken = jnp.asarray([30, 0, 0, 0, 0], jnp.int32)
  later = env.observe(taken, jnp.asarray(1, jnp.int32), params)
  left = sizes - np.asarray(taken)
  np.testing.assert_allclose(np.asarray(jax.nn.softmax(policy_logits(32, net, params, later, 1.0)[0])),
                             left / left.sum(), atol=0.02)
  masked = later._replace(action_mask=later.action_mask.at[1].set(False))
  out, _ = policy_logits(32, net, params, masked, 1.0)
  assert float(jax.nn.softmax(out)[1]) < 1e-6
  # PPO trains with it end to end (the greedy episode included) and still spends the budget exactly.
  cfg = _toy_config(num_updates=2, size_prior=1.0)
  out = jax.jit(ppo.make_train(cfg, params), compiler_options=FAST)(jax.random.PRNGKey(4))
  assert int(np.asarray(out["best_mask"]).sum()) == params.budget
  with pytest.raises(UserError, match="size_prior"):
    validate(_toy_config(size_prior=-1.0))


def test_progress_prints_every_log_every_updates_and_compiles_no_callback_when_silent(capsys):
  from rlsel.agents import progress

  def traced(log_every):
    report = progress("agent", log_every)

    def run(us):
      def body(c, u):
        report(u, jnp.float32(0.5), jnp.float32(0.25))
        return c, u
      return jax.lax.scan(body, 0, us)[1]
    return run

  silent = jax.make_jaxpr(traced(0))(jnp.arange(4))
  assert "callback" not in str(silent)  # nothing host-side: the program can enter the persistent compile cache
  loud = traced(2)
  assert "callback" in str(jax.make_jaxpr(loud)(jnp.arange(4)))
  jax.block_until_ready(jax.jit(loud)(jnp.arange(5)))
  jax.effects_barrier()
  lines = capsys.readouterr().out.splitlines()
  assert lines == [f"[agent] update {u}: mean return 0.5 best score 0.25" for u in (0, 2, 4)], lines
