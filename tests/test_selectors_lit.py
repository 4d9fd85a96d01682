"""The literature selectors: budget, uniqueness, determinism, and each method's own math on small inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel.configlib import base_config
from rlsel import stats
from rlsel.selectors import base, cropi, dots, gradients, heuristics, learnalign, less
from rlsel.selectors.base import Pool, Split

from tests.conftest import tiny_fns, tiny_split

NUM_CLASSES = 3


def small_config():
  c = base_config()
  s = c.selection
  s.projection_dim, s.projection_block, s.sparse_coords = 8, 16, 10
  s.grad_batch_size, s.eval_batch_size, s.progress = 32, 32, False
  s.warmup_fraction, s.warmup_epochs, s.train_batch_size, s.learning_rate = 0.2, 2, 8, 0.05
  s.warmup_steps = 0  # the epochs decide (test_gradients covers the step minimum)
  s.cropi_rounds, s.cropi_round_epochs = 2, 1
  s.dots_reference_size, s.estimator_hidden, s.estimator_steps, s.calibration_steps = 32, 8, 20, 20
  s.probe_steps, s.kmeans_clusters, s.kmeans_iters = 30, 4, 5
  c.kmeans.batch_size = 64
  return c


def make_split(n, seed, offset):
  rng = np.random.default_rng(seed)
  labels = (np.arange(n) % NUM_CLASSES).astype(np.int32)
  ids = rng.integers(1, 32, (n, 6)).astype(np.int32)
  ids[:, 0] = labels + 1
  split = Split(np.arange(n, dtype=np.int64) * 7 + offset, labels, ids, np.ones_like(ids), np.zeros_like(ids))
  split.__dict__["embeddings"] = (rng.normal(size=(n, 16)) + labels[:, None]).astype(np.float32)
  return split


@pytest.fixture(scope="module")
def pool():
  return Pool("synthetic", ("a", "b", "c"), make_split(60, 0, 1000), make_split(24, 1, 5000))


def build(name):
  sel = base.make(name, small_config())
  if hasattr(sel, "model_factory"):
    sel.model_factory = lambda config, num_classes, key: tiny_fns(key, num_classes)
  return sel


@pytest.mark.parametrize("name", ["less", "learnalign", "cropi", "dots", "kcenter", "entropy", "cluster_balanced"])
def test_selector_returns_budget_of_unique_ids_deterministically(pool, name):
  budget = 7
  sel = build(name)
  first, info = sel.select(jax.random.key(3), pool, budget)
  base.check_selection(first, pool, budget, name)
  assert isinstance(info, dict) and info
  json.dumps(info)  # JSON-serialisable
  again = build(name).select(jax.random.key(3), pool, budget).ids
  np.testing.assert_array_equal(np.sort(first), np.sort(again))
  if name in ("less", "learnalign", "cropi", "entropy"):  # selection.label_balanced (default): the pool's shares
    labels = pool.train.labels[np.searchsorted(pool.train.ids, first)]
    assert sorted(np.bincount(labels, minlength=NUM_CLASSES).tolist()) == [2, 2, 3]


def test_gradient_selectors_log_their_projection_and_cropi_can_use_the_sparse_map(pool):
  info = build("less").select(jax.random.key(3), pool, 7).info
  assert info["projection"] == "kronecker" and 0 < info["feature_dim"] <= 8 < info["num_grad_params"]
  sel = build("cropi")
  with sel.config.unlocked():
    sel.config.selection.cropi_sparse = True
  info = sel.select(jax.random.key(3), pool, 7).info
  assert (info["projection"], info["feature_dim"], info["sparse_coords"]) == ("sparse", 8, 10)


def test_registry_knows_the_literature_selectors():
  for name in ("less", "learnalign", "cropi", "dots", "kcenter", "entropy", "cluster_balanced"):
    assert name in base.names()


def test_learnalign_shortcut_equals_pairwise_definition():
  feats = jax.random.normal(jax.random.key(0), (13, 5))
  p = jax.random.uniform(jax.random.key(1), (13,))
  np.testing.assert_allclose(np.asarray(learnalign.learnalign_scores(feats, p)),
                             np.asarray(learnalign.learnalign_scores_pairwise(feats, p)), rtol=1e-5, atol=1e-7)


def test_learnalign_class_alignment_fixes_the_head_sign_flaw():
  """Head gradients of a binary task point in opposite directions by class: the paper's pool-wide mean scores the
  lighter class negative throughout; aligning within the class scores every example by its own class's direction."""
  rng = np.random.default_rng(0)
  labels = np.array([0] * 30 + [1] * 10)
  direction = rng.normal(size=8)
  feats = np.where(labels[:, None] == 0, 1.0, -1.0) * direction + 0.3 * rng.normal(size=(40, 8))
  p = jnp.asarray(rng.uniform(0.3, 0.7, 40), jnp.float32)
  pool_scores = np.asarray(learnalign.learnalign_scores(jnp.asarray(feats, jnp.float32), p))
  class_scores = np.asarray(learnalign.learnalign_class_scores(jnp.asarray(feats, jnp.float32), p,
                                                               jnp.asarray(labels), 2))
  assert (pool_scores[labels == 1] < 0).all() and (class_scores > 0).all()
  # The class version is the pairwise definition restricted to same-class pairs.
  v = np.asarray(p * (1 - p))
  unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  same = labels[:, None] == labels[None, :]
  brute = [np.mean((v[i] * v * (unit @ unit[i]))[same[i]]) for i in range(40)]
  np.testing.assert_allclose(class_scores, brute, rtol=1e-4, atol=1e-7)


def test_adam_term_norms_split_the_feature():
  """The shared and own parts of LESS's Adam feature add up to the feature (same denominator)."""
  fns, split = tiny_fns(), tiny_split(n=12)
  paths = gradients.select_paths(fns.params, "head", 0, ("head",), "")
  ck = gradients.warmup_train(jax.random.key(0), fns, fns.params, split, epochs=1, batch_size=4, learning_rate=0.05,
                              schedule_warmup_fraction=0.1)[-1]
  hp = (0.9, 0.999, 1e-8)
  out = gradients.adam_term_norms(fns, split, paths, ck, hp, n=1)
  sel, frozen = gradients.split_params(ck.params, paths)
  batch = gradients.batch_of(split, np.arange(1))
  g = gradients.flatten_rows(gradients.per_example_grads(fns.apply, sel, frozen, batch), paths)
  mu = gradients.flatten_vector(gradients.flat_params(ck.mu), paths)
  nu = gradients.flatten_vector(gradients.flat_params(ck.nu), paths)
  whole = float(jnp.linalg.norm(gradients.adam_features(g, mu[None], nu[None], ck.count, *hp)))
  assert abs(out["shared_norm"] - out["own_norm"]) - 1e-4 <= whole <= out["shared_norm"] + out["own_norm"] + 1e-4
  assert out["shared_over_own"] == pytest.approx(out["shared_norm"] / out["own_norm"], rel=1e-5)
  fresh = ck._replace(mu=jax.tree.map(jnp.zeros_like, ck.mu))
  assert gradients.adam_term_norms(fns, split, paths, fresh, hp, n=1)["shared_norm"] == 0.0  # no moment, no shared part


def test_less_scores_equal_brute_force():
  rng = np.random.default_rng(0)
  k, n, m, d = 2, 6, 7, 4
  tr, va = rng.normal(size=(k, n, d)), rng.normal(size=(k, m, d))
  labels = np.array([0, 0, 1, 1, 1, 0, 1])  # class 2 has no validation example: ignored
  lrs = np.array([0.3, 0.1])
  got = np.asarray(less.less_scores(jnp.asarray(tr, jnp.float32), jnp.asarray(va, jnp.float32), jnp.asarray(labels),
                                    jnp.asarray(lrs, jnp.float32), 3))
  want = np.zeros(n)
  for c in range(k):
    for i in range(n):
      cos = [tr[c, i] @ va[c, j] / np.linalg.norm(tr[c, i]) / np.linalg.norm(va[c, j]) for j in range(m)]
      want[i] += lrs[c] * max(np.mean([cos[j] for j in range(m) if labels[j] == y]) for y in (0, 1))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_reciprocal_rank_fusion():
  scores = jnp.array([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [9.0, 9.0, 9.0]])
  fused = np.asarray(cropi.reciprocal_rank_fusion(scores, jnp.array([1.0, 1.0, 0.0]), 0.0))
  np.testing.assert_allclose(fused, [1 + 1 / 3, 1 / 3 + 1, 1 / 2 + 1 / 2])
  # Only each list's top 2 ranks count (by hand: list 0 ranks 1, 3, 2; list 1 ranks 3, 1, 2; list 2 unused).
  top2 = np.asarray(cropi.reciprocal_rank_fusion(scores, jnp.array([1.0, 1.0, 0.0]), 0.0, top_n=2))
  np.testing.assert_allclose(top2, [1.0, 1.0, 1 / 2 + 1 / 2])
  assert cropi.fusion_top_n(-1, 7) == 7 and cropi.fusion_top_n(0, 7) == 0 and cropi.fusion_top_n(3, 7) == 3
  assert cropi.round_shares(10, 3) == [4, 3, 3] and cropi.round_shares(2, 5) == [1, 1]


def test_dots_sampler_concentrates_near_alpha():
  p_hat = jnp.linspace(0.0, 1.0, 1001)
  picks = np.asarray(dots.dots_sample(jax.random.key(0), p_hat, 50, alpha=0.5, tau=0.02))
  assert np.unique(picks).shape[0] == 50
  gap = np.abs(np.asarray(p_hat)[picks] - 0.5)
  assert gap.mean() < 0.1 * np.abs(np.asarray(p_hat) - 0.5).mean() * 4  # pool mean gap is 0.25; picks' < 0.1
  assert np.median(gap) < 0.05


def test_dots_at_the_reference_tau_takes_nearly_the_closest_to_alpha():
  p_hat = jnp.linspace(0.0, 1.0, 201)  # neighbours 0.005 apart
  gap = np.abs(np.asarray(p_hat) - 0.3)
  closest = np.sort(gap)[:20]
  for seed in range(5):
    picks = np.asarray(dots.dots_sample(jax.random.key(seed), p_hat, 20, alpha=0.3, tau=1e-3))
    assert np.unique(picks).shape[0] == 20
    assert gap[picks].max() <= np.sort(gap)[25]  # at most a few swaps at the edge of the 20 closest
    assert gap[picks].mean() <= closest.mean() + 0.005
  broad = np.asarray(dots.dots_sample(jax.random.key(0), p_hat, 20, alpha=0.3, tau=0.1))
  assert gap[broad].mean() > 2 * closest.mean()  # the old tau spread the picks well beyond


def test_dots_label_balanced_draw_keeps_the_label_shares_and_the_difficulty():
  """With labels, each label gets its share of the budget, drawn near alpha within that label."""
  from rlsel.selectors.basic import label_quotas
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], [500, 300, 200])
  p = np.where(labels == 0, rng.uniform(0.4, 0.6, 1000), rng.uniform(0.0, 1.0, 1000))  # class 0 sits at alpha
  picks = dots.dots_sample(jax.random.key(1), jnp.asarray(p, jnp.float32), 40, alpha=0.5, tau=1e-3, labels=labels)
  assert np.unique(picks).shape[0] == 40
  classes, take = label_quotas(labels, 40)
  np.testing.assert_array_equal(np.bincount(labels[picks], minlength=3), take)
  unbalanced = np.asarray(dots.dots_sample(jax.random.key(1), jnp.asarray(p, jnp.float32), 40, alpha=0.5, tau=1e-3))
  assert np.bincount(labels[unbalanced], minlength=3)[0] > take[0]  # without labels class 0 takes more than its share
  for c in classes:  # within a class, nearly its closest to alpha (tau = 1e-3 blurs gaps closer than that)
    gap = np.abs(p[labels == c] - 0.5)
    chosen = np.abs(p[picks][labels[picks] == c] - 0.5)
    assert chosen.mean() <= np.sort(gap)[:int(take[c])].mean() + 3e-3


def test_dots_soft_bce_by_hand():
  p, t = jnp.array([0.9, 0.2, 0.5]), jnp.array([1.0, 0.0, 0.25])
  expected = -np.mean([np.log(0.9), np.log(0.8), 0.25 * np.log(0.5) + 0.75 * np.log(0.5)])
  np.testing.assert_allclose(float(dots.soft_bce(p, t)), expected, rtol=1e-6)
  assert np.isfinite(float(dots.soft_bce(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]))))  # clipped, not inf


def test_dots_estimator_learns_a_smooth_difficulty():
  x = jax.random.normal(jax.random.key(0), (120, 6))
  y = jax.nn.sigmoid(2.0 * x[:, 0])
  est = dots.fit_estimator(jax.random.key(1), x[:90], y[:90], hidden=16, steps=150, lr=1e-2, cal_steps=50,
                           cal_lr=0.05)
  pred = dots.calibrate(est, dots.attention_predict(est, x[90:], x[:90], y[:90]))
  assert stats.pearson(np.asarray(pred), np.asarray(y[90:])) > 0.6
  loo = dots.attention_predict(est, x[:5], x[:5], y[:5], leave_one_out=True)
  assert np.all(np.isfinite(np.asarray(loo)))


def test_kcenter_matches_brute_force_farthest_first():
  x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  got = np.asarray(heuristics.kcenter_greedy(jax.random.key(2), jnp.asarray(x), 6))
  want = [int(got[0])]
  for _ in range(5):
    d = np.min(((x[:, None] - x[want][None]) ** 2).sum(-1), axis=1)
    want.append(int(np.argmax(d)))
  assert got.tolist() == want
  dup = np.zeros((10, 3), np.float32)  # all rows identical: still k distinct picks
  assert np.unique(np.asarray(heuristics.kcenter_greedy(jax.random.key(0), jnp.asarray(dup), 4))).shape == (4,)


def test_balanced_quotas():
  rng = np.random.default_rng(0)
  sizes = np.array([1, 10, 10, 0, 3])
  q = heuristics.balanced_quotas(rng, sizes, 12)
  assert q.sum() == 12 and np.all(q <= sizes)
  # Clusters 0 and 4 are too small for an equal share (12 / 4 = 3 each) and are taken whole; the rest is split evenly.
  assert q[0] == 1 and q[3] == 0 and q[4] == 3 and sorted(q[1:3].tolist()) == [4, 4]
  q = heuristics.balanced_quotas(rng, np.array([5, 5, 5]), 4)  # an indivisible remainder goes to one random cluster
  assert q.sum() == 4 and sorted(q.tolist()) == [1, 1, 2]


def test_entropy_picks_the_most_uncertain(pool):
  sel = build("entropy")
  ids, info = sel.select(jax.random.key(0), pool, 5)
  assert info["mean_entropy_selected"] >= info["mean_entropy_pool"]
  assert ids.shape == (5,)


def test_warmed_selectors_of_one_seed_share_one_warm_up(pool, monkeypatch):
  """LESS then LearnAlign with the same key: one warm-up, reused (and reported), same result as a fresh warm-up."""
  from rlsel.selectors import gradients
  factory = lambda config, num_classes, key: tiny_fns(key, num_classes)
  calls = []
  real = gradients.warmup.warmup_train
  monkeypatch.setattr(gradients.warmup, "warmup_train", lambda *a, **k: calls.append(1) or real(*a, **k))

  def make(name):
    sel = base.make(name, small_config())
    sel.model_factory = factory
    return sel

  gradients.clear_cache()
  first = make("less")
  _, first_info = first.select(jax.random.key(5), pool, 7)
  second = make("learnalign")
  shared, second_info = second.select(jax.random.key(5), pool, 7)
  assert len(calls) == 1 and not first_info["warmup_reused"] and second_info["warmup_reused"]
  gradients.clear_cache()
  fresh = make("learnalign").select(jax.random.key(5), pool, 7).ids
  assert len(calls) == 2
  np.testing.assert_array_equal(shared, fresh)
  make("learnalign").select(jax.random.key(6), pool, 7).ids  # another seed: its own warm-up
  assert len(calls) == 3
