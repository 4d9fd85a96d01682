"""Label noise as a data option: a seeded share of the pool's labels changed, so a selector can show what it leaves
out (on a noisy pool, training on everything can be worse than a well-chosen twentieth).

`data.label_noise` is the exact share of pool (train split) labels changed (round(rate * n) rows), drawn from
`data.noise_seed` only, so every run seed and selector sees the same noisy pool. `data.noise_kind`:
- `symmetric`: a changed label becomes any other label, uniformly;
- `asymmetric`: class-conditional: a changed label of class i becomes j with weight `matrix[i, j]`
  (`data.noise_matrix`, a flattened K x K, diagonal ignored; default: the task's named matrix, else i -> i + 1 mod K,
  which for two classes is a flip);
- `instance`: the rows an out-of-fold linear probe on the frozen embeddings finds most ambiguous (smallest margin
  between its two likeliest classes) are the likeliest to change, to the probe's next likeliest label: noise that
  looks like annotator disagreement.
Validation (with `data.noisy_validation=True`) gets its own draw of the same kind; test stays clean. The changed
rows keep their given label in `original_label`, and their ids are saved in `DIR/noise/`.
"""

import json
import pathlib

import numpy as np

from rlsel.errors import UserError, require

NOISE_KINDS = ("symmetric", "asymmetric", "instance")
# Named class-conditional defaults (row: true class, entries: relative weight of becoming each class). Sentiment:
# a neighbouring polarity far more often than the opposite one.
ASYMMETRIC_DEFAULTS = {
    ("negative", "neutral", "positive"): ((0.0, 0.8, 0.2), (0.5, 0.0, 0.5), (0.2, 0.8, 0.0)),
}
_SPLIT_TAGS = {"train": 0, "validation": 1}  # each split's own draw from data.noise_seed


def validate(config) -> None:
  """The data section's noise fields (owned here; called from rlsel/validation.py before any work)."""
  d = config.data
  rate = d.label_noise
  require(isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0,
          f"data.label_noise={rate!r} must be a fraction in [0, 1) of the pool's labels to change, e.g. "
          "--config.data.label_noise=0.4")
  require(d.noise_kind in NOISE_KINDS, f"data.noise_kind={d.noise_kind!r} is unknown; choose from "
          f"{', '.join(NOISE_KINDS)}")
  require(isinstance(d.noise_seed, int) and not isinstance(d.noise_seed, bool) and d.noise_seed >= 0,
          f"data.noise_seed={d.noise_seed!r} must be a non-negative integer")
  require(isinstance(d.noisy_validation, bool), f"data.noisy_validation={d.noisy_validation!r} must be True or False")
  m = tuple(d.noise_matrix)
  k = int(round(len(m) ** 0.5))
  require(len(m) == 0 or (k * k == len(m) and all(isinstance(v, (int, float)) and v >= 0 for v in m)),
          f"data.noise_matrix has {len(m)} entries; give K x K non-negative weights row by row (row = true class), "
          "e.g. --config.data.noise_matrix=0,1,1,0 for two classes")
  for f in ("noise_probe_steps", "noise_probe_folds"):
    require(isinstance(d[f], int) and not isinstance(d[f], bool) and d[f] >= (2 if f.endswith("folds") else 1),
            f"data.{f}={d[f]!r} must be an integer >= {2 if f.endswith('folds') else 1}")


def transition_matrix(label_names, flat=()) -> np.ndarray:
  """[K, K] row-stochastic, zero diagonal: where a changed label of each class goes (asymmetric noise)."""
  k = len(label_names)
  if len(flat):
    if len(flat) != k * k:
      raise UserError(f"data.noise_matrix has {len(flat)} entries but the task has {k} labels; give {k * k}")
    m = np.asarray(flat, np.float64).reshape(k, k)
  elif tuple(label_names) in ASYMMETRIC_DEFAULTS:
    m = np.asarray(ASYMMETRIC_DEFAULTS[tuple(label_names)], np.float64)
  else:
    m = np.roll(np.eye(k), 1, axis=1)  # i -> i + 1 mod K
  m = m * (1.0 - np.eye(k))
  sums = m.sum(1, keepdims=True)
  if (sums <= 0).any():
    raise UserError("data.noise_matrix gives a class no other label to become; put a positive weight off the "
                    "diagonal in every row")
  return m / sums


def change_labels(rng: np.random.Generator, labels: np.ndarray, num_classes: int, rate: float, kind: str,
                  matrix: np.ndarray = None, probs: np.ndarray = None) -> np.ndarray:
  """New labels [n]: exactly round(rate * n) rows changed to another label, the rest as given.

  `matrix` [K, K] (asymmetric) and `probs` [n, K] (instance: a probe's out-of-fold class probabilities)."""
  labels = np.asarray(labels, np.int64)
  n = labels.shape[0]
  n_change = int(round(rate * n))
  new = labels.copy()
  if n_change == 0:
    return new
  if kind == "instance":
    top2 = np.sort(probs, axis=1)[:, -2:]
    ambiguity = 1.0 - (top2[:, 1] - top2[:, 0]) + 1e-6  # in (0, 1]: 1 where the probe cannot tell two classes apart
    keys = np.log(ambiguity) + rng.gumbel(size=n)       # Gumbel top-k: sampling without replacement ∝ ambiguity
    pos = np.sort(np.argsort(-keys)[:n_change])
    other = np.asarray(probs, np.float64)[pos] + 1e-9
    other[np.arange(pos.size), labels[pos]] = 0.0
    new[pos] = _draw_rows(rng, other)
  else:
    pos = np.sort(rng.choice(n, n_change, replace=False))
    if kind == "symmetric":
      new[pos] = (labels[pos] + rng.integers(1, num_classes, pos.size)) % num_classes
    else:
      new[pos] = _draw_rows(rng, matrix[labels[pos]])
  return new


def _draw_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
  """One class per row of non-negative `weights` [m, K], drawn ∝ the row (inverse CDF, all rows at once)."""
  cdf = np.cumsum(weights, axis=1)
  u = rng.random(weights.shape[0]) * cdf[:, -1]
  return np.minimum((cdf <= u[:, None]).sum(1), weights.shape[1] - 1)


def apply(task, config, workdir, embeddings=None):
  """The task with its pool's (and, if asked, validation's) labels noised; unchanged when `data.label_noise` is 0.

  `embeddings(split) -> [n, d]` gives the frozen embeddings (instance noise only). Writes the changed ids to
  `DIR/noise/<task>.json`."""
  import datasets

  from rlsel.data.tasks import TaskData
  d = config.data
  if float(d.label_noise) == 0.0:
    return task
  matrix = transition_matrix(task.label_names, tuple(d.noise_matrix)) if d.noise_kind == "asymmetric" else None
  out, changed = dict(task.dataset), {}
  for split in ("train", "validation") if d.noisy_validation else ("train",):
    rng = np.random.default_rng([int(d.noise_seed), _SPLIT_TAGS[split]])
    labels = task.column(split, "label")
    probs = None
    if d.noise_kind == "instance":
      from jax import random

      from rlsel.selectors.coverage import oof_probe_probs
      probs = oof_probe_probs(random.key(int(d.noise_seed)), embeddings(split), labels, task.num_classes,
                              int(d.noise_probe_folds), int(d.noise_probe_steps),
                              float(d.noise_probe_learning_rate), float(d.noise_probe_l2))
    new = change_labels(rng, labels, task.num_classes, float(d.label_noise), d.noise_kind, matrix, probs)
    ds = task.dataset[split]
    label_feature = ds.features["label"]
    ds = ds.add_column("original_label", labels.tolist(), feature=label_feature)
    ds = ds.remove_columns("label").add_column("label", new.tolist(), feature=label_feature)
    out[split] = ds.select_columns([c for c in task.dataset[split].column_names] + ["original_label"])
    changed[split] = [int(i) for i in task.column(split, "id")[new != labels]]
  record = {"task": task.name, "label_noise": float(d.label_noise), "noise_kind": d.noise_kind,
            "noise_seed": int(d.noise_seed), "noisy_validation": bool(d.noisy_validation),
            "changed_ids": changed}
  if workdir:
    from rlsel.io import atomic_write_json
    atomic_write_json(pathlib.Path(workdir) / "noise" / f"{task.name}.json", record)
  return TaskData(task.name, datasets.DatasetDict(out), task.label_names, task.features_name)


def changed_mask(task, ids) -> np.ndarray:
  """[len(ids)] bool: which pool rows `ids` had their label changed by the noise (the noised split keeps the given
  label in `original_label`); all False on a clean pool."""
  train = task.dataset["train"]
  if "original_label" not in train.column_names:
    return np.zeros(len(ids), bool)
  flipped = np.asarray(train["label"]) != np.asarray(train["original_label"])
  return np.isin(np.asarray(ids, np.int64), np.asarray(train["id"], np.int64)[flipped])


def noise_rates(task, ids) -> dict:
  """`pool_noise_rate` and `selected_noise_rate` (shares of the pool and of `ids` whose label was changed), and the
  mean annotator confidence of both where the task has a `confidence` column."""
  train = task.dataset["train"]
  pool_ids = np.asarray(train["id"], np.int64)
  chosen = np.isin(pool_ids, np.asarray(ids, np.int64))
  out = {"pool_noise_rate": 0.0, "selected_noise_rate": 0.0}
  if "original_label" in train.column_names:
    flipped = changed_mask(task, pool_ids)
    out = {"pool_noise_rate": float(flipped.mean()), "selected_noise_rate": float(flipped[chosen].mean())}
  if "confidence" in train.column_names:
    conf = np.asarray(train["confidence"], np.float64)
    out["pool_mean_confidence"] = float(np.nanmean(conf))
    out["selected_mean_confidence"] = float(np.nanmean(conf[chosen])) if np.isfinite(conf[chosen]).any() else None
  return out


def load_record(workdir, task_name: str) -> dict:
  """The saved noise record of a task in a workdir (what `apply` wrote)."""
  return json.loads((pathlib.Path(workdir) / "noise" / f"{task_name}.json").read_text())
