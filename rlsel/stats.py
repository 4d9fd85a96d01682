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


CONFIDENCE = 0.95  # two-sided level of every interval in rlsel's reports


def paired_difference(a, b, confidence: float = CONFIDENCE) -> dict:
  """`a - b` over paired seeds: mean, a paired-t interval, wins / ties / losses, and a verdict.

  `a[i]` and `b[i]` must come from the same seed (same split and fine-tune keys, only the subset differs). The
  verdict is "better" / "worse" when the interval excludes 0, "no detectable difference" when it spans 0, and
  "n = 1, no interval" for a single pair (a spread of 0 would be a lie).
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
  from scipy import stats as scipy_stats
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
  out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
  out["verdict"] = ("better" if out["ci_low"] > 0 else "worse" if out["ci_high"] < 0
                    else "no detectable difference")
  return out
