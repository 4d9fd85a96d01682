"""The reference selectors: `full` (the whole pool) and `random` (stratified random at the budget)."""

import jax
import numpy as np

from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register


def label_quotas(labels: np.ndarray, n: int):
  """(classes, counts): how many of `n` picks each class gets, in proportion to `labels` (largest remainder)."""
  classes, counts = np.unique(labels, return_counts=True)
  exact = counts * n / labels.shape[0]
  take = np.floor(exact).astype(int)
  short = n - take.sum()
  take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
  return classes, take


def top_k_positions(scores: np.ndarray, k: int, labels: np.ndarray = None) -> np.ndarray:
  """Positions of the k highest scores (ties broken by position, so deterministic). With `labels`, the top of each
  label's share of k (the labels' proportions, largest remainder), so a score favouring one class cannot fill k."""
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  if labels is None:
    return order[:k]
  classes, take = label_quotas(np.asarray(labels), k)
  ranked = np.asarray(labels)[order]
  return np.sort(np.concatenate([order[ranked == c][:t] for c, t in zip(classes, take)]))


def stratified_sample(rng: np.random.Generator, labels: np.ndarray, n: int) -> np.ndarray:
  """Row positions of `n` examples drawn without replacement, with class shares as in `labels` (largest remainder)."""
  classes, take = label_quotas(labels, n)
  picks = [rng.choice(np.flatnonzero(labels == c), size=t, replace=False) for c, t in zip(classes, take)]
  return np.sort(np.concatenate(picks))


def top_up(rng: np.random.Generator, chosen: np.ndarray, num_rows: int, budget: int) -> np.ndarray:
  """`chosen` positions in [0, num_rows) completed to exactly `budget` with distinct random other rows (only when an
  episode fell short of the budget, which cannot happen when the pool has slack); the first `budget` if over."""
  chosen = np.asarray(chosen)
  if chosen.shape[0] < budget:
    rest = np.setdiff1d(np.arange(num_rows), chosen)
    chosen = np.concatenate([chosen, rng.choice(rest, budget - chosen.shape[0], replace=False)])
  return chosen[:budget]


def numpy_rng(key) -> np.random.Generator:
  """A NumPy generator seeded deterministically from a JAX key (host-side sampling)."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel().tolist())


@register("full")
class Full(Selector):
  """Every example in the pool, whatever the budget: the full-data reference."""
  uses_budget = False
  needs_embeddings = False

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    return Selection(pool.train.ids.copy(), {})


@register("random")
class StratifiedRandom(Selector):
  """A uniformly random subset of exactly the budget, stratified by label."""
  needs_embeddings = False

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    pos = stratified_sample(numpy_rng(key), pool.train.labels, budget)
    return Selection(pool.train.ids[pos], {})
