"""rlsel as a library: choose a subset of any `datasets.Dataset` in one call, or get its frozen embeddings.

    import datasets, rlsel
    pool = datasets.load_dataset("csv", data_files="reviews.csv", split="train")
    subset = rlsel.select(pool, budget=0.05, selector="cluster_stratified", label_column="sentiment")
    subset.to_parquet("subset.parquet")   # the chosen rows, their own columns kept, plus `id`

`select` runs the command's selection code path (`rlsel.harness.select_ids`: the same key for a seed, the same
checks), so for the same data, seed and settings it picks the command's ids. Nothing is fine-tuned. Bad input raises
`rlsel.errors.UserError` with the command's one-line messages, before any work. Heavy imports happen inside the calls.
"""

import contextlib
import tempfile

import numpy as np

from rlsel.errors import UserError

API_WORKDIR_PREFIX = "rlsel-api-"  # a temporary workdir's name when the caller gives none (removed afterwards)


def make_config(config=None, **fields):
  """The run config of an API call, locked: `config` is a whole ConfigDict (e.g. `configs/debug.py`'s
  `get_config()`), or a dict of overrides on `rlsel.configlib.base_config()` (dotted keys such as
  `{"rl.num_envs": 8}` or nested dicts), or None; `fields` (budget, selectors, seeds, task) are set last."""
  import ml_collections

  from rlsel.configlib import base_config, flat_items
  if config is None or isinstance(config, dict):
    c = base_config()
    for key, value in flat_items(config or {}):
      _set_field(c, key, value)
  elif isinstance(config, ml_collections.ConfigDict):
    c = config.copy_and_resolve_references()
  else:
    raise UserError(f"config must be an ml_collections.ConfigDict or a dict of overrides (got {type(config).__name__});"
                    " e.g. config={'rl.num_envs': 8}")
  for key, value in fields.items():
    _set_field(c, key, value)
  c.lock()
  return c


def _set_field(c, dotted: str, value) -> None:
  """Sets an existing field (a misspelt one is an error, as on the command line)."""
  *parents, leaf = dotted.split(".")
  node = c
  for p in parents:
    if p not in node or not hasattr(node[p], "keys"):
      raise UserError(f"config has no section {dotted.rsplit('.', 1)[0]!r}; the fields are listed in "
                      "rlsel/configlib.py")
    node = node[p]
  if leaf not in node:
    raise UserError(f"config has no field {dotted!r}; the fields are listed in rlsel/configlib.py")
  try:
    with node.ignore_type():
      node[leaf] = tuple(value) if isinstance(value, list) else value
  except Exception as e:  # a locked or typed field refusing the value
    raise UserError(f"config field {dotted!r} cannot take {value!r} ({' '.join(str(e).split())})") from None


@contextlib.contextmanager
def _workdir(workdir):
  """The caller's workdir (embedding cache kept there), or a temporary one removed afterwards."""
  if workdir:
    yield str(workdir)
  else:
    with tempfile.TemporaryDirectory(prefix=API_WORKDIR_PREFIX) as tmp:
      yield tmp


def select(dataset, budget: float = 0.05, selector: str = "rl_ppo", text_column: str = "text",
           label_column: str = "label", validation=None, config=None, seed: int = 0, workdir=None,
           text_pair_column: str = ""):
  """The rows of `dataset` that `selector` chooses at `budget` (a fraction of the pool), as a `datasets.Dataset`.

  The returned rows keep `dataset`'s columns, in its order, plus `id` (the example id used: `dataset`'s own unique
  integer `id` column if it has one, else the row position); a dataset card (selector, budget, seed, label counts)
  is in `info.description`. `validation` (a Dataset with the same columns) is what the selectors may look at besides
  the pool; when omitted it is carved from `dataset` (stratified, seeded by `data.split_seed`) and its rows are never
  chosen. `config`: see `make_config`. `workdir`: keeps the frozen-embedding cache between calls."""
  from rlsel import harness, validation as checks
  from rlsel.data.tasks import DATASET_TASK, task_from_dataset
  from rlsel.selectors import base as selbase
  cfg = make_config(config, budget=budget, selectors=(str(selector),), seeds=(seed,), task=DATASET_TASK)
  checks.validate_settings(cfg)
  task, position = task_from_dataset(dataset, validation, cfg.data, text_column, label_column, text_pair_column)
  with _workdir(workdir) as wd:
    if workdir:
      checks.check_workdir(wd)
    pool = selbase.Pool(task.name, task.label_names, harness.split_from(task, "train", cfg, wd),
                        harness.split_from(task, "validation", cfg, wd))
    if selbase.make(selector, cfg).needs_embeddings:
      pool.train.embeddings, pool.validation.embeddings  # noqa: B018 (computed before the selection is timed)
    ids, _, seconds = harness.select_ids(cfg, pool, selector, seed, budget)
  rows = np.sort(np.asarray([position[int(i)] for i in ids], np.int64))
  out = dataset.select(rows.tolist())
  if "id" not in out.column_names:
    out = out.add_column("id", rows.tolist())  # positions were the ids
  elif not np.array_equal(np.sort(ids), np.sort(np.asarray(out["id"], np.int64))):
    out = out.add_column("rlsel_id", rows.tolist())  # `dataset` has an `id` column rlsel could not use as ids
  chosen = task.dataset["train"].select(pool.train.positions_of(ids).tolist())
  out.info.description = harness.dataset_card(task, chosen, selector, float(budget), int(seed), pool.size,
                                              command=f"rlsel.select(selector={selector!r}, budget={budget}, "
                                              f"seed={seed}) in {seconds:.1f}s")
  return out


def embed(dataset, text_column: str = "text", text_pair_column: str = "", config=None, workdir=None) -> np.ndarray:
  """The frozen all-MiniLM-L6-v2 embeddings of `dataset`'s texts, float32 [len(dataset), 384] (mean-pooled, the
  features the selectors cluster and score), cached in `workdir` when given. `config` sets `features.max_length`
  and `features.batch_size` (see `make_config`)."""
  import datasets

  from rlsel import features
  from rlsel.data.tasks import DATASET_TASK, content_fingerprint
  if not isinstance(dataset, datasets.Dataset):
    raise UserError(f"dataset must be a datasets.Dataset (got {type(dataset).__name__})")
  for col in (text_column, text_pair_column):
    if col and col not in dataset.column_names:
      raise UserError(f"dataset has no column {col!r} (it has {', '.join(dataset.column_names)}); set text_column / "
                      "text_pair_column")
  cfg = make_config(config)
  if cfg.features.max_length < 4:
    raise UserError(f"features.max_length={cfg.features.max_length} must be at least 4")
  texts = [str(t) for t in dataset[text_column]]
  pairs = [str(t) for t in dataset[text_pair_column]] if text_pair_column else None
  toks = features.tokenize(texts, pairs, int(cfg.features.max_length))
  name = f"{DATASET_TASK}-{content_fingerprint(texts, pairs, np.zeros(len(texts), np.int64))}"
  with _workdir(workdir) as wd:
    return features.cached_embeddings(wd, name, "all", np.arange(len(texts)), toks, int(cfg.features.max_length),
                                      int(cfg.features.batch_size), int(cfg.features.length_multiple))
