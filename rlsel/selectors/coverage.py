"""Coverage and label-cleaning baselines on the frozen pool embeddings: cluster-stratified random sampling,
coverage-centric coreset selection (CCS) and confident-learning label cleaning.

- `cluster_stratified`: k-means, then a random take from every (cluster, label) stratum in proportion to its size, so
  the subset follows the pool's density and keeps its label shares.
- `ccs` (Zheng et al., "Coverage-centric Coreset Selection for High Pruning Rates", arXiv 2210.15809): drop the
  hardest `ccs_beta` share, bin the rest by difficulty into `ccs_bins` equal-width strata and share the budget out over
  them with the paper's Algorithm 1, so easy, medium and hard examples are all covered.
- `label_clean`: cleanlab's confident learning (`find_label_issues`) flags likely mislabelled pool examples; a
  stratified random sample is drawn from the rest.
- `label_confident`: the same flags, then each class's quota goes to its unflagged rows of highest out-of-fold
  probability of their given label (`confident_positions`): a cleaner subset than a random unflagged one (on `rt`
  with 40% symmetric noise, ~0.16 of its labels wrong against ~0.29), at the price of easier examples.
- `facility`: greedy facility location within each label (per-class, as CRAIG, Mirzasoleiman et al., ICML 2020):
  each label's quota goes to the rows that maximise sum over the label's rows of the highest cosine to a chosen row,
  so the subset represents the pool's density rather than its outskirts (k-center's minimax covers outliers).

`ccs`, `label_clean` and `label_confident` read an out-of-fold linear probe (`oof_probe_probs`): every pool row's
class probabilities come from a softmax regression that never saw that row, so a probe that memorises its training
rows cannot make a mislabelled example look easy.
"""

import functools
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlsel.errors import UserError, require
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register
from rlsel.selectors.basic import label_quotas, numpy_rng
from rlsel.selectors.heuristics import CLUSTER_FIELDS, PROBE_FIELDS, fit_probe, pool_clusters, probe_log_probs

# What ccs and label_clean read besides their own fields: the out-of-fold probe's settings (cell identity).
OOF_PROBE_FIELDS = PROBE_FIELDS + ("selection.probe_folds",)
# cleanlab.filter.find_label_issues's `filter_by` choices (selection.clean_filter_by must be one of them).
CLEAN_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                 "low_normalized_margin", "low_self_confidence")


@functools.partial(jax.jit, static_argnames=("k",))
def facility_greedy(sim: jax.Array, k: int) -> jax.Array:
  """k column positions of `sim` [targets, candidates] chosen greedily for the facility-location objective
  F(S) = sum_t max(0, max_{j in S} sim[t, j]): each pick adds the candidate of largest marginal gain (ties: lowest
  position), so the result is deterministic and within 1 - 1/e of the best set (F is monotone submodular)."""
  chex.assert_rank(sim, 2)
  n = sim.shape[1]

  def body(i, carry):
    chosen, taken, best = carry
    gain = jnp.sum(jnp.maximum(sim - best[:, None], 0.0), axis=0)
    nxt = jnp.argmax(jnp.where(taken, -1.0, gain)).astype(jnp.int32)
    return chosen.at[i].set(nxt), taken.at[nxt].set(True), jnp.maximum(best, sim[:, nxt])
  init = (jnp.zeros((k,), jnp.int32), jnp.zeros((n,), bool), jnp.zeros((sim.shape[0],), sim.dtype))
  return jax.lax.fori_loop(0, k, body, init)[0]


def facility_objective(sim: np.ndarray, cols: np.ndarray) -> float:
  """Mean over the targets (rows of `sim`) of max(0, highest similarity to a column in `cols`)."""
  return float(np.maximum(np.asarray(sim)[:, cols].max(1), 0.0).mean())


def stratified_folds(rng: np.random.Generator, labels: np.ndarray, folds: int) -> np.ndarray:
  """Fold index [n] in [0, folds): each class shuffled and dealt round-robin, one deal continuing across classes, so
  fold sizes differ by at most one overall and each class's count by at most one between folds."""
  labels = np.asarray(labels)
  order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
  fold = np.empty(labels.shape[0], np.int64)
  fold[order] = np.arange(order.shape[0]) % folds
  return fold


def oof_probe_probs(key, x: np.ndarray, y: np.ndarray, num_classes: int, folds: int, steps: int, lr: float,
                    l2: float) -> np.ndarray:
  """Out-of-fold class probabilities [n, C]: stratified `folds` folds (seeded by `key`); each fold's rows are
  predicted by a softmax-regression probe (`fit_probe`) trained on the other folds only.

  Fold sizes take at most two values, so the probe compiles at most twice per pool.
  """
  x, y = np.asarray(x, np.float32), np.asarray(y)
  chex.assert_rank(x, 2)
  chex.assert_shape(y, (x.shape[0],))
  n = x.shape[0]
  if not (isinstance(folds, int) and 2 <= folds <= n):
    raise UserError(f"selection.probe_folds={folds!r} must be an integer in [2, pool size {n}], e.g. "
                    "--config.selection.probe_folds=5")
  fold = stratified_folds(numpy_rng(key), y, folds)
  probs = np.zeros((n, num_classes), np.float32)
  for f in range(folds):
    held = fold == f
    params, mean, std = fit_probe(jnp.asarray(x[~held]), jnp.asarray(y[~held], jnp.int32), num_classes=num_classes,
                                  steps=steps, lr=lr, l2=l2)
    probs[held] = np.exp(np.asarray(probe_log_probs(params, mean, std, jnp.asarray(x[held]))))
  chex.assert_shape(probs, (n, num_classes))
  return probs


def configured_oof_probs(key, config, x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
  """`oof_probe_probs` with the selection.probe_* settings (the cleaning baselines and the RL environment's
  rl.within_order="confident" share them)."""
  s = config.selection
  return oof_probe_probs(key, x, y, num_classes, int(s.probe_folds), int(s.probe_steps),
                         float(s.probe_learning_rate), float(s.probe_l2))


def label_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str, who: str) -> np.ndarray:
  """Confident learning's flags [n] bool (cleanlab `find_label_issues`, `filter_by`) on out-of-fold probabilities
  [n, C]: the rows most likely mislabelled. `who` names the caller in the one-line error when cleanlab is missing."""
  require(filter_by in CLEAN_FILTERS, f"selection.clean_filter_by={filter_by!r} must be one of "
          f"{', '.join(CLEAN_FILTERS)}")
  try:
    import cleanlab.filter
  except ImportError:
    raise UserError(f"{who} needs cleanlab: pip install cleanlab (rlsel's install brings it)") from None
  chex.assert_rank([labels, probs], [1, 2])
  # n_jobs=1: no worker processes forked from a process running JAX (cleanlab's result does not depend on it).
  return np.asarray(cleanlab.filter.find_label_issues(np.asarray(labels), np.asarray(probs), filter_by=filter_by,
                                                      n_jobs=1), bool)


def _pool_oof_probs(key, pool: Pool, config) -> np.ndarray:
  return configured_oof_probs(key, config, pool.train.embeddings, pool.train.labels, pool.num_classes)


def nested_quotas(labels: np.ndarray, clusters: np.ndarray, n: int) -> dict:
  """{(label, cluster): take} summing to `n`: each label gets its `label_quotas` share of `n`, split over its clusters
  in proportion to their sizes (largest remainder again), so every take is proportional to its stratum's size and
  the label shares are exactly those of `label_quotas`."""
  quotas = {}
  for c, t in zip(*label_quotas(labels, n)):
    members = clusters[labels == c]
    for cl, q in zip(*label_quotas(members, int(t))):
      if q > 0:
        quotas[(int(c), int(cl))] = int(q)
  return quotas


@register("cluster_stratified")
class ClusterStratified(Selector):
  """k-means over the pool embeddings, then a random take from every (cluster, label) stratum in proportion to its
  size: coverage follows the pool's density (a dense cluster gets more) and the label shares are the pool's."""
  config_sections = CLUSTER_FIELDS

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    t0 = time.time()
    kcl, kpick = jax.random.split(key)
    assign, k = pool_clusters(kcl, pool, self.config)
    labels = pool.train.labels
    rng = numpy_rng(kpick)
    quotas = nested_quotas(labels, assign, budget)
    pos = np.concatenate([rng.choice(np.flatnonzero((labels == c) & (assign == cl)), size=q, replace=False)
                          for (c, cl), q in sorted(quotas.items())])
    info = {"select_seconds": time.time() - t0, "clusters": k,
            "nonempty_clusters": int(np.unique(assign).shape[0]),
            "strata": int(np.unique(assign.astype(np.int64) * pool.num_classes + labels).shape[0]),
            "strata_sampled": len(quotas)}
    return Selection(pool.train.ids[pos], info)


def ccs_allocate(sizes: np.ndarray, budget: int, rng: np.random.Generator = None) -> np.ndarray:
  """Per-stratum takes by CCS's Algorithm 1: repeatedly take the stratum with the fewest examples left and give it
  min(its size, floor(remaining budget / remaining strata)). Sums to `budget` whenever the strata hold that many
  (a stratum too small for an equal share leaves its room to the larger ones). Ties in size are broken by `rng`
  (by position without one)."""
  sizes = np.asarray(sizes, np.int64)
  chex.assert_rank(sizes, 1)
  tie = rng.permutation(sizes.shape[0]) if rng is not None else np.arange(sizes.shape[0])
  order = np.lexsort((tie, sizes))
  order = order[sizes[order] > 0]  # empty strata take nothing and do not count
  take = np.zeros_like(sizes)
  left = int(min(budget, sizes.sum()))
  for i, b in enumerate(order):
    take[b] = min(int(sizes[b]), left // (order.shape[0] - i))
    left -= int(take[b])
  return take


def ccs_positions(rng: np.random.Generator, scores: np.ndarray, budget: int, beta: float, bins: int):
  """(positions [budget], info) by CCS on difficulty `scores` [n] (higher = harder).

  The hardest floor(beta * n) rows are dropped (ties broken at random); the kept rows' score range is cut into
  `bins` equal-width strata, `ccs_allocate` shares the budget over them and each stratum is sampled uniformly. If fewer
  than `budget` rows are kept, all kept rows are taken and topped up with the least hard dropped ones.
  """
  scores = np.asarray(scores, np.float64)
  chex.assert_rank(scores, 1)
  n = scores.shape[0]
  require(0.0 <= beta < 1.0, f"selection.ccs_beta={beta} must be in [0, 1), e.g. --config.selection.ccs_beta=0.1")
  require(isinstance(bins, int) and bins > 0, f"selection.ccs_bins={bins!r} must be a positive integer")
  shuffle = rng.permutation(n)
  by_hardness = shuffle[np.argsort(-scores[shuffle], kind="stable")]  # hardest first, ties in random order
  n_drop = int(np.floor(beta * n))
  dropped, kept = by_hardness[:n_drop], by_hardness[n_drop:]
  info = {"dropped_hard": n_drop, "drop_threshold": float(scores[kept].max()) if kept.size else float("nan")}
  if kept.shape[0] <= budget:
    topup = dropped[::-1][:budget - kept.shape[0]]  # least hard of the dropped first
    info.update(topped_up=int(topup.shape[0]), nonempty_bins=0)
    return np.concatenate([kept, topup]), info
  lo, hi = scores[kept].min(), scores[kept].max()
  width = (hi - lo) / bins
  stratum = np.zeros(kept.shape[0], np.int64) if width <= 0 else np.clip(
      np.floor((scores[kept] - lo) / width).astype(np.int64), 0, bins - 1)
  take = ccs_allocate(np.bincount(stratum, minlength=bins), budget, rng)
  pos = np.concatenate([rng.choice(kept[stratum == b], size=int(t), replace=False) for b, t in enumerate(take) if t])
  info.update(topped_up=0, nonempty_bins=int((np.bincount(stratum, minlength=bins) > 0).sum()),
              bins_sampled=int((take > 0).sum()), max_bin_take=int(take.max()))
  return pos, info


@register("ccs")
class CCS(Selector):
  """Coverage-centric coreset selection (Zheng et al., arXiv 2210.15809) on a probe's difficulty.

  Difficulty = 1 - p(given label) under the out-of-fold linear probe on the frozen pool embeddings. It stands in for
  the paper's training-dynamics score (AUM or forgetting counts from a briefly trained model): here a probe on frozen
  embeddings, out-of-fold so it cannot memorise the row it scores. Then `ccs_positions`: drop the hardest
  selection.ccs_beta share, stratify the rest into selection.ccs_bins equal-width difficulty bins, allocate by
  Algorithm 1, sample uniformly within each bin.
  """
  config_sections = OOF_PROBE_FIELDS + ("selection.ccs_beta", "selection.ccs_bins")

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    kprobe, kpick = jax.random.split(key)
    probs = _pool_oof_probs(kprobe, pool, self.config)
    labels = pool.train.labels
    scores = 1.0 - probs[np.arange(labels.shape[0]), labels]
    pos, info = ccs_positions(numpy_rng(kpick), scores, budget, float(s.ccs_beta), int(s.ccs_bins))
    info = dict(info, select_seconds=time.time() - t0, mean_score_pool=float(scores.mean()),
                mean_score_selected=float(scores[pos].mean()),
                probe_accuracy=float((probs.argmax(1) == labels).mean()))
    return Selection(pool.train.ids[pos], info)


def clean_positions(rng: np.random.Generator, labels: np.ndarray, flagged: np.ndarray, confidence: np.ndarray,
                    n: int) -> np.ndarray:
  """Row positions of `n` picks in the labels' proportions (`label_quotas`), drawn at random from the rows not
  `flagged`; a class with too few clean rows is topped up with its flagged rows of highest `confidence`."""
  labels, flagged = np.asarray(labels), np.asarray(flagged, bool)
  chex.assert_equal_shape([labels, flagged, np.asarray(confidence)])
  picks = []
  for c, t in zip(*label_quotas(labels, n)):
    clean = np.flatnonzero((labels == c) & ~flagged)
    if clean.shape[0] >= t:
      picks.append(rng.choice(clean, size=int(t), replace=False))
    else:
      bad = np.flatnonzero((labels == c) & flagged)
      bad = bad[np.argsort(-confidence[bad], kind="stable")]
      picks.append(np.concatenate([clean, bad[:t - clean.shape[0]]]))
  return np.concatenate(picks)


def confident_positions(labels: np.ndarray, flagged: np.ndarray, confidence: np.ndarray, n: int) -> np.ndarray:
  """Row positions of `n` picks in the labels' proportions (`label_quotas`): each class's unflagged rows by
  decreasing `confidence`, then (if too few) its flagged rows likewise. Deterministic; ties keep row order."""
  labels, flagged, confidence = np.asarray(labels), np.asarray(flagged, bool), np.asarray(confidence)
  chex.assert_equal_shape([labels, flagged, confidence])
  picks = []
  for c, t in zip(*label_quotas(labels, n)):
    rows = np.flatnonzero(labels == c)
    order = np.lexsort((-confidence[rows], flagged[rows]))  # the last key is the primary one: unflagged first
    picks.append(rows[order[:int(t)]])
  return np.concatenate(picks)


@register("label_clean")
class LabelClean(Selector):
  """Confident learning (cleanlab `find_label_issues`, filter_by=selection.clean_filter_by) on the out-of-fold probe's
  probabilities; the flagged examples are dropped and a stratified random sample of the budget is drawn from the
  rest (`clean_positions`)."""
  config_sections = OOF_PROBE_FIELDS + ("selection.clean_filter_by",)

  def pick(self, rng: np.random.Generator, labels, flagged, confidence, budget: int) -> np.ndarray:
    """Row positions of the budget, given the flags and each row's out-of-fold probability of its own label."""
    return clean_positions(rng, labels, flagged, confidence, budget)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    kprobe, kpick = jax.random.split(key)
    probs = _pool_oof_probs(kprobe, pool, self.config)
    labels = pool.train.labels
    flagged = label_issues(labels, probs, s.clean_filter_by, self.name)
    confidence = probs[np.arange(labels.shape[0]), labels]
    pos = self.pick(numpy_rng(kpick), labels, flagged, confidence, budget)
    info = {"select_seconds": time.time() - t0, "flagged": int(flagged.sum()),
            "flagged_rate": float(flagged.mean()), "selected_flagged": int(flagged[pos].sum()),
            "probe_accuracy": float((probs.argmax(1) == labels).mean()),
            "mean_confidence": float(confidence[pos].mean())}
    return Selection(pool.train.ids[pos], info)


@register("label_confident")
class LabelConfident(LabelClean):
  """`label_clean`'s flags, then per class the unflagged rows the out-of-fold probe is surest carry their given label
  (`confident_positions`): for pools where a wrong label costs more than an easy example."""

  def pick(self, rng: np.random.Generator, labels, flagged, confidence, budget: int) -> np.ndarray:
    return confident_positions(labels, flagged, confidence, budget)


@register("facility")
class FacilityLocation(Selector):
  """Greedy facility location on the frozen pool embeddings (cosine), within each label for its quota (pool
  proportions, as `random`): the rows that best represent their label's rows. A label with more than
  `selection.facility_targets` rows is represented through a seeded random sample of that many (bounds the
  targets x rows similarity matrix); otherwise every row counts and the choice does not depend on the seed."""
  config_sections = ("selection.facility_targets",)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    t0 = time.time()
    targets = self.config.selection.facility_targets
    require(isinstance(targets, int) and not isinstance(targets, bool) and targets > 0,
            f"selection.facility_targets={targets!r} must be a positive integer, e.g. "
            "--config.selection.facility_targets=8192")
    from rlsel.selectors.gradients import unit_rows  # cosine similarity as a dot product
    emb = np.asarray(unit_rows(np.asarray(pool.train.embeddings, np.float32)))
    labels = pool.train.labels
    rng = numpy_rng(key)
    parts, objective, random_objective = [], {}, {}
    for c, t in zip(*label_quotas(labels, budget)):
      if t == 0:
        continue
      rows = np.flatnonzero(labels == c)
      cover = rows if rows.shape[0] <= targets else np.sort(rng.choice(rows, targets, replace=False))
      sim = emb[cover] @ emb[rows].T
      cols = np.asarray(facility_greedy(jnp.asarray(sim), int(t)))
      parts.append(rows[cols])
      objective[str(int(c))] = facility_objective(sim, cols)
      random_objective[str(int(c))] = facility_objective(sim, rng.choice(rows.shape[0], int(t), replace=False))
    pos = np.concatenate(parts)
    info = {"select_seconds": time.time() - t0, "objective": objective, "random_objective": random_objective}
    return Selection(pool.train.ids[pos], info)
