"""The reference selectors and the selector interface."""

import jax
import numpy as np
import pytest

from rlsel.errors import UserError
from rlsel.selectors import base
from rlsel.selectors.basic import stratified_sample, top_k_positions


@pytest.mark.parametrize("budget", [1, 7, 50, 199])
def test_random_exact_budget_unique_valid_deterministic(pool, debug_config, budget):
  sel = base.make("random", debug_config)
  a = sel.select(jax.random.key(0), pool, budget).ids
  ids = base.check_selection(a, pool, budget, "random")  # exact size, unique, in the pool
  assert ids.shape == (budget,)
  np.testing.assert_array_equal(np.sort(sel.select(jax.random.key(0), pool, budget).ids), ids)
  if budget < 150:
    assert not np.array_equal(np.sort(sel.select(jax.random.key(1), pool, budget).ids), ids)


def test_random_is_stratified():
  labels = np.repeat([0, 1, 2], [500, 300, 200])
  pos = stratified_sample(np.random.default_rng(0), labels, 100)
  np.testing.assert_array_equal(np.bincount(labels[pos]), [50, 30, 20])


def test_full_returns_pool(pool, debug_config):
  sel = base.make("full", debug_config)
  assert not sel.uses_budget
  np.testing.assert_array_equal(np.sort(sel.select(jax.random.key(0), pool, pool.size).ids), pool.train.ids)


def test_budget_size_and_errors():
  assert base.budget_size(0.05, 10201) == 510
  assert base.budget_size(1e-9, 100) == 1
  assert base.budget_size(1.0, 100) == 100
  for bad in (0.0, -0.1, 1.5):
    with pytest.raises(UserError, match="budget"):
      base.budget_size(bad, 100)


def test_unknown_selector(debug_config):
  with pytest.raises(UserError, match="unknown selector 'oracle'"):
    base.make("oracle", debug_config)


def test_check_selection_rejects_bad_ids(pool):
  with pytest.raises(AssertionError, match="duplicate"):
    base.check_selection(np.array([0, 0]), pool, 2, "x")
  with pytest.raises(AssertionError, match="outside"):
    base.check_selection(np.array([0, 99999]), pool, 2, "x")
  with pytest.raises(AssertionError, match="budget"):
    base.check_selection(np.array([0, 1, 2]), pool, 2, "x")


def test_split_take_and_positions(pool):
  ids = pool.train.ids[[5, 3, 9]]
  pos = pool.train.positions_of(ids)
  np.testing.assert_array_equal(pos, [5, 3, 9])
  sub = pool.train.take(pos)
  np.testing.assert_array_equal(sub.ids, ids)
  np.testing.assert_array_equal(sub.embeddings, pool.train.embeddings[[5, 3, 9]])


def test_top_k_positions_plain_and_label_balanced():
  scores = np.array([9., 8., 7., 6., 5., 4., 3., 2., 1., 0.])
  labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])   # 60% / 40%; the scores favour class 0 entirely
  assert list(top_k_positions(scores, 5)) == [0, 1, 2, 3, 4]
  got = top_k_positions(scores, 5, labels)
  assert list(got) == [0, 1, 2, 6, 7]  # 3 of class 0 (its best), 2 of class 1 (its best)
  rng = np.random.default_rng(0)
  s, y = rng.normal(size=1000), rng.integers(0, 3, 1000)
  pos = top_k_positions(s + 5 * (y == 2), 90, y)  # a score that would pick only class 2
  assert len(set(pos.tolist())) == 90
  np.testing.assert_array_equal(np.bincount(y[pos], minlength=3), np.round(np.bincount(y) * 90 / 1000))
  for c in range(3):  # within a class, the chosen are that class's highest scores
    chosen = np.sort(s[pos][y[pos] == c])
    assert chosen.min() >= np.sort(s[y == c])[-len(chosen)]
