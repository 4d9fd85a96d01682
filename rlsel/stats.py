"""Correlations used in reports: estimator vs measurement (DOTS), proxy vs target (proxy fidelity).

Both return None when undefined (fewer than 2 points, or a constant side), so JSON rows stay strict."""

import numpy as np


def pearson(a, b):
  """Pearson correlation of two equal-length sequences, or None when undefined."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape[0] < 2 or a.std() == 0 or b.std() == 0:
    return None
  return float(np.corrcoef(a, b)[0, 1])


def ranks(x) -> np.ndarray:
  """0-based ranks; tied values share their mean rank."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  r = np.empty_like(x)
  r[order] = np.arange(x.size, dtype=np.float64)
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  sums = np.bincount(inverse, weights=r)
  return sums[inverse] / counts[inverse]


def spearman(a, b):
  """Spearman's rho (Pearson correlation of mean ranks), or None when undefined."""
  return pearson(ranks(a), ranks(b))
