"""Statistics used in reports: correlations (DOTS estimator, proxy fidelity) and paired selector differences.

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


def within_groups(x, groups) -> np.ndarray:
  """`x` minus the mean of its group (`groups`: a label per point), so that what is left varies only within groups."""
  x = np.asarray(x, np.float64)
  _, inverse = np.unique(np.asarray(groups), return_inverse=True)
  return x - (np.bincount(inverse, weights=x) / np.bincount(inverse))[inverse]


def within_groups_pearson(a, b, groups):
  """The pooled within-group Pearson correlation: both sides centred on their group means, then one correlation over
  all points. What two measurements agree on beyond the groups' differences; None when undefined."""
  return pearson(within_groups(a, groups), within_groups(b, groups))


def within_groups_spearman(a, b, groups):
  """The pooled within-group Spearman: ranks taken within each group, centred on the group's mean rank, then one
  Pearson over all points (for equal-size groups without ties, the mean of the groups' own rhos). How well `a` orders
  `b` inside each group, whatever the groups' levels; None when undefined."""
  groups = np.asarray(groups)
  ra, rb = np.empty(groups.shape[0]), np.empty(groups.shape[0])
  for g in np.unique(groups):
    m = groups == g
    ra[m], rb[m] = ranks(np.asarray(a, np.float64)[m]), ranks(np.asarray(b, np.float64)[m])
  return within_groups_pearson(ra, rb, groups)


CONFIDENCE = 0.95  # two-sided level of every interval in rlsel's reports
ZERO_SPREAD = 1e-9  # paired differences this close are equal (float rounding of accuracies k / n)


def paired_difference(a, b, confidence: float = CONFIDENCE) -> dict:
  """`a - b` over paired seeds: mean, a paired-t interval, wins / ties / losses, and a verdict.

  `a[i]` and `b[i]` must come from the same seed (same split and fine-tune keys, only the subset differs). The
  verdict is "better" / "worse" when the interval excludes 0, "no detectable difference" when it spans 0, and
  "n = 1, no interval" for a single pair (a spread of 0 would be a lie). Identical nonzero differences on every seed
  (test accuracy is a multiple of 1/test size, so two seeds can agree exactly) give a t interval of width 0, which
  claims a certainty the seeds do not have: no interval and the verdict "zero spread, no interval".
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"paired_difference needs two equal-length, non-empty 1-D sequences, got {a.shape} and {b.shape}")
  d = a - b
  n = int(d.size)
  out = {"n": n, "mean_diff": float(d.mean()), "ci_low": None, "ci_high": None,
         "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum())}
  if n < 2:
    out["verdict"] = "n = 1, no interval"
    return out
  if np.ptp(d) <= ZERO_SPREAD and abs(d.mean()) > ZERO_SPREAD:
    out["verdict"] = "zero spread, no interval"
    return out
  from scipy import stats as scipy_stats
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
  out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
  out["verdict"] = ("better" if out["ci_low"] > 0 else "worse" if out["ci_high"] < 0
                    else "no detectable difference")
  return out


SPEARMAN_FISHER_VARIANCE = 1.06  # Fieller, Hartley & Pearson (1957): var(atanh(rho_s)) ~ 1.06 / (n - 3)


def spearman_interval(rho, n: int, confidence: float = CONFIDENCE):
  """(low, high) interval for a Spearman rho over n points, by Fisher's z with the Fieller-Hartley-Pearson variance;
  (None, None) when rho is undefined or n < 4."""
  if rho is None or n < 4:
    return None, None
  from scipy import stats as scipy_stats
  z = float(np.arctanh(np.clip(rho, -0.999999, 0.999999)))
  half = float(scipy_stats.norm.ppf(0.5 + confidence / 2)) * np.sqrt(SPEARMAN_FISHER_VARIANCE / (n - 3))
  return float(np.tanh(z - half)), float(np.tanh(z + half))


def spearman_difference(a, b, target, resamples: int = 2000, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
  """How much better `a` ranks `target` than `b` does (both scores of the same points): spearman(a, t) -
  spearman(b, t), with a percentile bootstrap interval over the points (resampled together, so the comparison is
  paired). Resamples where either correlation is undefined are skipped."""
  a, b, t = (np.asarray(x, np.float64) for x in (a, b, target))
  ra, rb = spearman(a, t), spearman(b, t)
  out = {"diff": None if ra is None or rb is None else ra - rb, "ci_low": None, "ci_high": None}
  if out["diff"] is None or a.size < 4:
    return out
  i = np.random.default_rng(seed).integers(0, a.size, (resamples, a.size))  # the resamples, one per row
  x, y = row_spearman(a[i], t[i]), row_spearman(b[i], t[i])
  diffs = (x - y)[np.isfinite(x) & np.isfinite(y)]
  if diffs.size:
    out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(diffs, [0.5 - confidence / 2,
                                                                            0.5 + confidence / 2]))
  return out


def row_spearman(a, b) -> np.ndarray:
  """Spearman's rho of each row pair of `a` and `b` [R, n] at once (NaN where a row is constant): the bootstrap's
  thousands of correlations in a few array operations instead of a Python loop."""
  from scipy.stats import rankdata
  ra, rb = (rankdata(np.asarray(x, np.float64), axis=1) for x in (a, b))
  ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
  norm = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(norm > 0, (ra * rb).sum(1) / norm, np.nan)
