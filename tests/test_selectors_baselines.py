"""The coverage and cleaning baselines (cluster_stratified, ccs, label_clean), the out-of-fold probe behind two of
them, and the per-label quotas of kcenter and cluster_balanced."""

import json
import sys

import jax
import numpy as np
import pytest

from rlsel.configlib import base_config
from rlsel.errors import UserError
from rlsel.selectors import base, coverage, heuristics
from rlsel.selectors.basic import label_quotas, numpy_rng

from tests.conftest import synthetic_pool

BASELINES = ["cluster_stratified", "ccs", "label_clean", "label_confident", "kcenter", "cluster_balanced"]
LABEL_BALANCED = ["cluster_stratified", "label_clean", "label_confident", "kcenter", "cluster_balanced", "facility"]


def small_config(**selection):
  c = base_config()
  s = c.selection
  s.probe_steps, s.probe_folds, s.kmeans_clusters, s.kmeans_iters, s.ccs_bins = 100, 4, 6, 5, 10
  c.kmeans.batch_size = 64
  for k, v in selection.items():
    s[k] = v
  return c


def imbalanced_pool(n=300, minority=0.1, seed=0):
  """Two classes, `minority` share in class 1, whose examples sit in a tight blob inside the majority's spread (so an
  unconstrained farthest-first coreset never reaches them)."""
  pool = synthetic_pool(n=n, classes=2, dim=16, seed=seed)
  rng = np.random.default_rng(seed + 100)
  labels = np.zeros(n, np.int32)
  labels[rng.choice(n, size=int(round(minority * n)), replace=False)] = 1
  emb = rng.normal(size=(n, 16)).astype(np.float32)
  emb[labels == 1] *= 0.1
  pool.train.labels = labels
  pool.train.__dict__["embeddings"] = emb
  return pool


def noisy_pool(n=300, classes=3, flip_rate=0.2, seed=0):
  """(pool, flipped [n] bool): class-separated embeddings, then ~flip_rate of the labels moved to another class."""
  pool = synthetic_pool(n=n, classes=classes, dim=16, seed=seed)
  rng = np.random.default_rng(seed + 200)
  true = pool.train.labels
  centres = 3.0 * rng.normal(size=(classes, 16))
  pool.train.__dict__["embeddings"] = (centres[true] + rng.normal(size=(n, 16))).astype(np.float32)
  flipped = rng.random(n) < flip_rate
  pool.train.labels = np.where(flipped, (true + rng.integers(1, classes, n)) % classes, true).astype(np.int32)
  return pool, flipped


def labels_of(pool, ids):
  return pool.train.labels[pool.train.positions_of(ids)]


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("budget", [1, 17, 150])
def test_budget_exact_unique_deterministic(pool, name, budget):
  sel = base.make(name, small_config())
  first, info = sel.select(jax.random.key(3), pool, budget)
  ids = base.check_selection(first, pool, budget, name)  # exact size, unique, in the pool
  assert isinstance(info, dict) and info
  json.dumps(info)
  again = base.make(name, small_config()).select(jax.random.key(3), pool, budget).ids
  np.testing.assert_array_equal(np.sort(again), ids)
  if budget == 17:
    other = [np.sort(base.make(name, small_config()).select(jax.random.key(k), pool, budget).ids) for k in (4, 5)]
    assert not all(np.array_equal(o, ids) for o in other)


def test_whole_pool_budget(pool):
  for name in BASELINES:
    ids = base.make(name, small_config()).select(jax.random.key(0), pool, pool.size).ids
    np.testing.assert_array_equal(base.check_selection(ids, pool, pool.size, name), pool.train.ids)


def test_config_sections():
  """Each baseline's cell identity covers the fields it reads, not the whole selection section: the gradient
  selectors' settings changing leaves a label_clean cell valid, its probe's folds changing does not."""
  from rlsel import results
  probe = ("selection.probe_steps", "selection.probe_learning_rate", "selection.probe_l2")
  clusters = ("selection.kmeans_clusters", "selection.kmeans_iters", "kmeans.batch_size")
  want = {"cluster_stratified": clusters, "ccs": probe + ("selection.probe_folds", "selection.ccs_beta",
                                                         "selection.ccs_bins"),
          "label_clean": probe + ("selection.probe_folds", "selection.clean_filter_by"),
          "kcenter": ("selection.label_balanced",), "entropy": probe + ("selection.label_balanced",),
          "cluster_balanced": clusters + ("selection.label_balanced",), "facility": ("selection.facility_targets",)}
  for name, sections in want.items():
    assert base.make(name, small_config()).config_sections == sections
  c = small_config()
  before = {name: results.config_id(c, name) for name in want}
  c.selection.projection_dim, c.selection.param_scope = 64, "head"
  assert {name: results.config_id(c, name) for name in want} == before
  c.selection.probe_folds = 3
  after = {name: results.config_id(c, name) for name in want}
  assert [n for n in want if after[n] != before[n]] == ["ccs", "label_clean"]
  for name in ("cluster_stratified", "ccs", "label_clean", "facility"):
    assert base.selector_class(name).__module__ == "rlsel.selectors.coverage" and name in base.names()


@pytest.mark.parametrize("name", LABEL_BALANCED)
def test_label_shares_match_quotas_on_imbalanced_pool(name):
  pool = imbalanced_pool()
  budget = 40
  ids = base.make(name, small_config()).select(jax.random.key(1), pool, budget).ids
  classes, take = label_quotas(pool.train.labels, budget)
  np.testing.assert_array_equal(np.bincount(labels_of(pool, ids), minlength=2)[classes], take)
  assert take[1] == 4


def test_kcenter_label_balanced_reaches_minority_and_off_is_unchanged():
  pool = imbalanced_pool()
  key, budget = jax.random.key(2), 30
  off = base.make("kcenter", small_config(label_balanced=False)).select(key, pool, budget).ids
  want = pool.train.ids[np.asarray(heuristics.kcenter_greedy(key, jax.numpy.asarray(pool.train.embeddings), budget))]
  np.testing.assert_array_equal(off, want)  # label_balanced=False: the plain greedy coreset, as before
  assert labels_of(pool, off).sum() == 0    # ... which never reaches the minority blob
  on = base.make("kcenter", small_config()).select(key, pool, budget).ids
  assert labels_of(pool, on).sum() == label_quotas(pool.train.labels, budget)[1][1] == 3
  # Within each label it is still farthest-first: the label's picks are its own k-center greedy coreset.
  rows = np.flatnonzero(pool.train.labels == 0)
  greedy0 = rows[np.asarray(heuristics.kcenter_greedy(jax.random.fold_in(key, 0),
                                                      jax.numpy.asarray(pool.train.embeddings[rows]), 27))]
  np.testing.assert_array_equal(np.sort(on[labels_of(pool, on) == 0]), np.sort(pool.train.ids[greedy0]))


def test_cluster_balanced_off_is_unchanged_and_on_spreads_each_label(pool):
  key, budget = jax.random.key(4), 36
  config = small_config(label_balanced=False)
  got = base.make("cluster_balanced", config).select(key, pool, budget).ids
  # The pre-label_balanced algorithm, verbatim.
  kcl, kpick = jax.random.split(key)
  assign = heuristics.kmeans_assign(kcl, pool.train.embeddings, 6, 5, 64)
  rng = numpy_rng(kpick)
  quota = heuristics.balanced_quotas(rng, np.bincount(assign, minlength=6), budget)
  want = np.concatenate([rng.choice(np.flatnonzero(assign == c), size=q, replace=False)
                         for c, q in enumerate(quota) if q > 0])
  np.testing.assert_array_equal(got, pool.train.ids[want])
  on = base.make("cluster_balanced", small_config()).select(key, pool, budget).ids
  pos = pool.train.positions_of(on)
  labels = pool.train.labels
  for c, t in zip(*label_quotas(labels, budget)):
    per_cluster = np.bincount(assign[pos[labels[pos] == c]], minlength=6)
    room = np.bincount(assign[labels == c], minlength=6)
    assert per_cluster.sum() == t
    # Equal shares: a cluster below the largest take was taken whole (no room left).
    assert np.all((per_cluster >= per_cluster.max() - 1) | (per_cluster == room))


def test_cluster_stratified_takes_follow_stratum_sizes():
  pool = imbalanced_pool(n=400, minority=0.3)
  key, budget = jax.random.key(5), 60
  ids = base.make("cluster_stratified", small_config()).select(key, pool, budget).ids
  assign, k = heuristics.pool_clusters(jax.random.split(key)[0], pool, small_config())
  pos, labels = pool.train.positions_of(ids), pool.train.labels
  got = {(int(c), int(cl)): int(((labels[pos] == c) & (assign[pos] == cl)).sum()) for c in (0, 1) for cl in range(k)}
  want = coverage.nested_quotas(labels, assign, budget)
  assert {s: q for s, q in got.items() if q} == want
  for (c, cl), q in got.items():  # proportional to the stratum's share of the pool, within rounding
    size = int(((labels == c) & (assign == cl)).sum())
    assert abs(q - size * budget / labels.shape[0]) < 2


def test_ccs_allocate_is_algorithm_1():
  # Fewest first: 1 -> min(1, 20 // 4); 5 -> min(5, 19 // 3); 10 -> min(10, 14 // 2) = 7; 100 -> the last 7.
  np.testing.assert_array_equal(coverage.ccs_allocate(np.array([10, 1, 100, 5]), 20), [7, 1, 7, 5])
  take = coverage.ccs_allocate(np.array([3, 0, 3]), 4)
  assert take.tolist() == [2, 0, 2]
  assert coverage.ccs_allocate(np.array([2, 3]), 10).tolist() == [2, 3]  # strata smaller than the budget: all
  rng = np.random.default_rng(0)
  for _ in range(50):
    sizes = rng.integers(0, 30, rng.integers(1, 12))
    budget = int(rng.integers(1, sizes.sum() + 2))
    take = coverage.ccs_allocate(sizes, budget, rng)
    assert take.sum() == min(budget, sizes.sum()) and np.all(take <= sizes) and np.all(take >= 0)


def test_ccs_positions_drops_hardest_and_spreads_over_bins():
  rng = np.random.default_rng(0)
  scores = rng.beta(0.5, 3.0, 2000)  # most examples easy, a long tail of hard ones
  budget, beta, bins = 200, 0.1, 10
  pos, info = coverage.ccs_positions(np.random.default_rng(1), scores, budget, beta, bins)
  assert pos.shape == (budget,) and np.unique(pos).shape == (budget,)
  hardest = np.argsort(-scores)[:200]
  assert not np.isin(pos, hardest).any()
  assert info["dropped_hard"] == 200 and info["topped_up"] == 0
  kept = np.setdiff1d(np.arange(2000), hardest)
  edges = np.linspace(scores[kept].min(), scores[kept].max(), bins + 1)
  bin_of = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
  sizes = np.bincount(bin_of[kept], minlength=bins)
  picked = np.bincount(bin_of[pos], minlength=bins)
  np.testing.assert_array_equal(np.sort(picked), np.sort(coverage.ccs_allocate(sizes, budget)))
  assert np.all(picked > 0)  # every difficulty stratum is covered ...
  assert picked[0] < 0.5 * budget * sizes[0] / sizes.sum()  # ... and the crowded easy end gets far less than random
  assert picked[bins // 2:].sum() > 2 * budget * sizes[bins // 2:].sum() / sizes.sum()


def test_ccs_tops_up_with_least_hard_dropped_when_kept_pool_is_short():
  scores = np.random.default_rng(0).random(100)
  pos, info = coverage.ccs_positions(np.random.default_rng(0), scores, 70, 0.5, 5)
  np.testing.assert_array_equal(np.sort(pos), np.sort(np.argsort(scores)[:70]))  # the 70 easiest
  assert info["topped_up"] == 20 and info["dropped_hard"] == 50


def test_ccs_selector_never_picks_the_hardest_share():
  pool, _ = noisy_pool()
  config = small_config(ccs_beta=0.2)
  key, budget = jax.random.key(6), 60
  sel = base.make("ccs", config)
  ids, info = sel.select(key, pool, budget)
  s = config.selection
  probs = coverage.oof_probe_probs(jax.random.split(key)[0], pool.train.embeddings, pool.train.labels, 3,
                                   s.probe_folds, s.probe_steps, s.probe_learning_rate, s.probe_l2)
  scores = 1.0 - probs[np.arange(pool.size), pool.train.labels]
  hardest = np.argsort(-scores)[:int(0.2 * pool.size)]
  assert not np.isin(pool.train.positions_of(ids), hardest).any()
  assert info["topped_up"] == 0 and info["bins_sampled"] >= 5


def test_stratified_folds_balanced():
  labels = np.repeat([0, 1, 2], [53, 30, 7])
  fold = coverage.stratified_folds(np.random.default_rng(0), labels, 4)
  sizes = np.bincount(fold, minlength=4)
  assert sizes.max() - sizes.min() <= 1
  for c in range(3):
    per = np.bincount(fold[labels == c], minlength=4)
    assert per.max() - per.min() <= 1
  other = coverage.stratified_folds(np.random.default_rng(1), labels, 4)
  assert not np.array_equal(fold, other)


def test_oof_probe_rows_sum_to_one_and_each_row_is_held_out(monkeypatch):
  rng = np.random.default_rng(0)
  n, d = 80, 64
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, 2, n)  # labels unrelated to x: only memorisation could predict them
  trained, predicted = [], []
  real_fit, real_pred = coverage.fit_probe, coverage.probe_log_probs
  monkeypatch.setattr(coverage, "fit_probe",
                      lambda xs, ys, **kw: trained.append(np.asarray(xs)) or real_fit(xs, ys, **kw))
  monkeypatch.setattr(coverage, "probe_log_probs",
                      lambda p, m, s, xs: predicted.append(np.asarray(xs)) or real_pred(p, m, s, xs))
  probs = coverage.oof_probe_probs(jax.random.key(0), x, y, 2, 4, 300, 0.05, 1e-3)
  assert probs.shape == (n, 2)
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  assert len(trained) == len(predicted) == 4
  row = {r.tobytes(): i for i, r in enumerate(x)}
  seen = []
  for tr, pr in zip(trained, predicted):
    tr_rows, pr_rows = {row[r.tobytes()] for r in tr}, [row[r.tobytes()] for r in pr]
    assert not tr_rows & set(pr_rows) and len(tr_rows) + len(pr_rows) == n
    seen += pr_rows
  assert sorted(seen) == list(range(n))  # every row predicted exactly once
  # A probe fitted on all rows memorises these random labels; the out-of-fold one cannot.
  params, mean, std = real_fit(jax.numpy.asarray(x), jax.numpy.asarray(y), num_classes=2, steps=300, lr=0.05, l2=1e-3)
  in_sample = np.exp(np.asarray(real_pred(params, mean, std, jax.numpy.asarray(x))))[np.arange(n), y]
  assert in_sample.mean() > 0.9 and probs[np.arange(n), y].mean() < 0.6


def test_oof_probe_rejects_bad_folds():
  x, y = np.zeros((10, 3), np.float32), np.zeros(10, np.int32)
  for folds in (1, 11):
    with pytest.raises(UserError, match="probe_folds"):
      coverage.oof_probe_probs(jax.random.key(0), x, y, 2, folds, 5, 0.1, 0.0)


def test_label_clean_drops_mostly_flipped_examples():
  pool, flipped = noisy_pool()
  budget = 100
  sel = base.make("label_clean", small_config())
  ids, info = sel.select(jax.random.key(7), pool, budget)
  pos = pool.train.positions_of(ids)
  assert flipped[pos].mean() < 0.5 * flipped.mean()
  assert 0.5 * flipped.sum() < info["flagged"] < 2 * flipped.sum()
  assert info["flagged_rate"] == pytest.approx(info["flagged"] / pool.size) and info["selected_flagged"] == 0
  classes, take = label_quotas(pool.train.labels, budget)
  np.testing.assert_array_equal(np.bincount(pool.train.labels[pos], minlength=3)[classes], take)


def test_clean_positions_tops_up_with_most_confident_flagged():
  labels = np.array([0] * 6 + [1] * 4)
  flagged = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 0], bool)  # class 1 has one clean example
  confidence = np.array([.9] * 6 + [.2, .8, .5, .9])
  pos = coverage.clean_positions(np.random.default_rng(0), labels, flagged, confidence, 5)  # quotas: 3 and 2
  picked1 = sorted(pos[labels[pos] == 1].tolist())
  assert picked1 == [7, 9] and (labels[pos] == 0).sum() == 3 and not flagged[pos[labels[pos] == 0]].any()


def test_label_confident_is_cleaner_than_label_clean_with_the_same_flags():
  """Same probe and flags (same key), so the two differ only in the pick: the most confident unflagged rows of each
  class carry fewer flipped labels than a random unflagged sample, and the label shares are still exact."""
  pool, flipped = noisy_pool(n=600, flip_rate=0.4, seed=1)
  budget = 60
  picked = {}
  for name in ("label_clean", "label_confident"):
    ids, info = base.make(name, small_config()).select(jax.random.key(5), pool, budget)
    picked[name] = (pool.train.positions_of(ids), info)
  (pos_r, info_r), (pos_c, info_c) = picked["label_clean"], picked["label_confident"]
  assert info_r["flagged"] == info_c["flagged"] and info_c["selected_flagged"] == 0
  assert flipped[pos_c].mean() < flipped[pos_r].mean()
  assert info_c["mean_confidence"] > info_r["mean_confidence"]
  classes, take = label_quotas(pool.train.labels, budget)
  np.testing.assert_array_equal(np.bincount(pool.train.labels[pos_c], minlength=3)[classes], take)


def test_confident_positions_ranks_unflagged_by_confidence_then_flagged():
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  flagged = np.array([0, 0, 1, 0, 1, 1, 1, 0], bool)
  confidence = np.array([.6, .9, .99, .7, .95, .8, .5, .3])
  pos = coverage.confident_positions(labels, flagged, confidence, 6)  # quotas 3 and 3
  assert pos[labels[pos] == 0].tolist() == [1, 3, 0]  # the flagged .99 row is not taken while unflagged rows remain
  assert pos[labels[pos] == 1].tolist() == [7, 4, 5]  # class 1 has one unflagged row: then flagged by confidence


def test_label_clean_without_cleanlab(pool, monkeypatch, debug_config):
  from rlsel import validation
  monkeypatch.setitem(sys.modules, "cleanlab", None)
  monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
  with pytest.raises(UserError, match="pip install cleanlab"):
    base.make("label_clean", small_config()).select(jax.random.key(0), pool, 5).ids
  debug_config.selectors = ("label_clean",)
  with pytest.raises(UserError, match="pip install cleanlab"):
    validation.validate(debug_config)
  debug_config.selectors = ("random",)
  debug_config.sweep.selectors = ("label_clean",)
  with pytest.raises(UserError, match="pip install cleanlab"):
    validation.validate(debug_config)
  debug_config.selectors, debug_config.sweep.selectors = ("rl_ppo",), ()  # the noise-scaled pool reads the same flags
  debug_config.rl.confident_pool, debug_config.rl.confident_pool_noise_scale = 4.0, 3.0
  with pytest.raises(UserError, match="rl_ppo needs cleanlab"):
    validation.validate(debug_config)


@pytest.mark.parametrize("field,value,selector", [("ccs_beta", 1.0, "ccs"), ("ccs_bins", 0, "ccs"),
                                                  ("probe_folds", 1, "label_clean"),
                                                  ("clean_filter_by", "nonsense", "label_clean"),
                                                  ("facility_targets", 0, "facility")])
def test_validate_rejects_bad_baseline_settings(debug_config, field, value, selector):
  from rlsel import validation
  debug_config.selectors = (selector,)
  debug_config.selection[field] = value
  with pytest.raises(UserError, match=field):
    validation.validate(debug_config)


def brute_force_greedy(sim, k):
  """Facility-location greedy written out in NumPy: the marginal gain of every unchosen column, lowest on ties."""
  best, chosen = np.zeros(sim.shape[0]), []
  for _ in range(k):
    gain = np.maximum(sim - best[:, None], 0.0).sum(0)
    gain[chosen] = -1.0
    j = int(np.argmax(gain))
    chosen.append(j)
    best = np.maximum(best, sim[:, j])
  return chosen


def test_facility_greedy_matches_numpy_and_the_submodular_bound():
  import itertools
  rng = np.random.default_rng(0)
  for trial in range(3):
    sim = rng.normal(size=(30, 12)).astype(np.float32)  # negative similarities count as 0
    got = np.asarray(coverage.facility_greedy(jax.numpy.asarray(sim), 4))
    np.testing.assert_array_equal(got, brute_force_greedy(sim, 4))
    assert len(set(got.tolist())) == 4
    best = max(coverage.facility_objective(sim, np.asarray(c)) for c in itertools.combinations(range(12), 4))
    value = coverage.facility_objective(sim, got)
    assert (1 - 1 / np.e) * best <= value <= best + 1e-6
    assert value >= max(coverage.facility_objective(sim, rng.choice(12, 4, replace=False)) for _ in range(20))


def dense_and_outliers(n=300, outliers=30, modes=9, seed=0):
  """One label; most rows in `modes` tight blobs (each along its own axis), a few spread far around the sphere."""
  pool = synthetic_pool(n=n, classes=1, dim=16, seed=seed)
  rng = np.random.default_rng(seed + 300)
  axis = np.arange(n) % modes
  emb = np.eye(16, dtype=np.float32)[axis] + 0.1 * rng.normal(size=(n, 16)).astype(np.float32)
  emb[:outliers] = rng.normal(size=(outliers, 16))
  pool.train.labels = np.zeros(n, np.int32)
  pool.train.__dict__["embeddings"] = emb
  return pool, np.arange(outliers)


def test_facility_represents_density_where_kcenter_chases_outliers():
  pool, outliers = dense_and_outliers()
  key, budget = jax.random.key(0), 10
  fac = pool.train.positions_of(base.make("facility", small_config()).select(key, pool, budget).ids)
  kc = pool.train.positions_of(base.make("kcenter", small_config()).select(key, pool, budget).ids)
  # Farthest-first spends most of the budget on the 10% outliers; facility location one pick on each dense mode.
  assert np.isin(kc, outliers).sum() >= 7 and np.isin(fac, outliers).sum() <= 1, (kc, fac)
  assert len(set((fac[~np.isin(fac, outliers)] % 9).tolist())) == 9


def test_facility_selector_seed_free_unless_targets_are_sampled():
  pool = imbalanced_pool()
  budget = 40
  ids = {k: base.make("facility", small_config()).select(jax.random.key(k), pool, budget) for k in (0, 1)}
  np.testing.assert_array_equal(ids[0].ids, ids[1].ids)  # every row is a target: the greedy has no randomness
  info = ids[0].info
  json.dumps(info)
  assert set(info["objective"]) == {"0", "1"}
  assert all(info["objective"][c] >= info["random_objective"][c] for c in info["objective"])
  # Fewer targets than a label's rows: a seeded sample of them, so the choice depends on the seed (and repeats).
  sampled = [base.make("facility", small_config(facility_targets=20)).select(jax.random.key(k), pool, budget).ids
             for k in (0, 1, 0)]
  assert not np.array_equal(sampled[0], sampled[1])
  np.testing.assert_array_equal(sampled[0], sampled[2])
  base.check_selection(sampled[1], pool, budget, "facility")
  with pytest.raises(UserError, match="facility_targets"):
    base.make("facility", small_config(facility_targets=0)).select(jax.random.key(0), pool, budget)
