"""De-duplication and deterministic, seeded, stratified, disjoint splits."""

import re
import zlib

import numpy as np

from rlsel.errors import UserError

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
  """The key two texts are duplicates under: lower case, whitespace collapsed."""
  return _SPACE.sub(" ", str(text)).strip().lower()


def deduplicate(texts: list, labels: np.ndarray) -> np.ndarray:
  """Positions to keep: the first of each normalised text; texts seen with conflicting labels are dropped entirely."""
  first, conflicted = {}, set()
  for i, t in enumerate(texts):
    k = normalise(t)
    if not k:
      conflicted.add(k)
    elif k not in first:
      first[k] = i
    elif labels[first[k]] != labels[i]:
      conflicted.add(k)
  return np.array(sorted(i for k, i in first.items() if k not in conflicted), np.int64)


def task_seed(task: str, seed: int) -> int:
  """A seed that differs per task, so two tasks split with seed 0 do not share a permutation pattern."""
  return (zlib.crc32(task.encode()) * 1_000_003 + int(seed)) % (2**32)


def stratified_fractions(labels: np.ndarray, fractions: tuple, seed: int) -> list:
  """Splits row positions by class into parts of the given fractions (the rest goes to the first part).

  Deterministic for a seed; every class with enough examples appears in every part; parts are disjoint and sorted.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  parts = [[] for _ in range(len(fractions) + 1)]
  for c in np.unique(labels):
    pos = rng.permutation(np.flatnonzero(labels == c))
    start = 0
    for j, f in enumerate(fractions):
      n = int(round(f * pos.shape[0]))
      if f > 0 and n == 0 and pos.shape[0] > len(fractions):
        n = 1
      parts[j + 1].append(pos[start:start + n])
      start += n
    parts[0].append(pos[start:])
  return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def subsample_stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
  """Sorted positions of a stratified subsample of size about `n` (for small debug runs)."""
  if n <= 0 or n >= labels.shape[0]:
    return np.arange(labels.shape[0])
  keep, _ = stratified_fractions(labels, (1.0 - n / labels.shape[0],), seed)
  return keep


def check_split(name: str, labels: np.ndarray, num_classes: int) -> None:
  """A split must be non-empty and its labels inside the label set."""
  if labels.shape[0] == 0:
    raise UserError(f"the {name} split is empty; give more data or change --config.data.validation_fraction/test_fraction")
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise UserError(f"the {name} split has {int(bad.sum())} labels outside the label set 0..{num_classes - 1} "
                    f"(e.g. {int(labels[bad][0])}); fix the label column or the label names")
