"""The selector interface: what every subset-selection method sees and returns.

A selector gets a PRNG key, the `Pool` (the training split it chooses from, plus the validation split it may use for
guidance, never the test split), a budget in examples and the folders it may write to (`RunDirs`), and returns a
`Selection`: the chosen example ids and its diagnostics. Nothing passes through attributes. Every selector, from
`random` to `rl_ppo`, goes through the same select -> ids -> fine-tune -> evaluate path in `rlsel.harness`.
"""

import abc
import dataclasses
import functools
import importlib
from typing import Callable, NamedTuple, Optional

import numpy as np

from rlsel.errors import UserError


def positions_of(all_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """Positions in `all_ids` (unique) of the given ids; ValueError if any is missing."""
  all_ids = np.asarray(all_ids)
  order = np.argsort(all_ids)
  ids = np.asarray(ids, np.int64)
  where = np.clip(np.searchsorted(all_ids, ids, sorter=order), 0, max(all_ids.shape[0] - 1, 0))
  pos = order[where]
  if not np.array_equal(all_ids[pos], ids):
    raise ValueError("some ids are not in this split")
  return pos


@dataclasses.dataclass(eq=False)
class Split:
  """One split of a task as arrays: ids, labels, tokens, and (lazily) frozen-encoder embeddings.

  Shapes: ids [n] int64, labels [n] int32, input_ids / attention_mask / token_type_ids [n, max_length] int32,
  embeddings [n, d] float32 (mean-pooled MiniLM features; computed on first access and cached on disk).
  """
  ids: np.ndarray
  labels: np.ndarray
  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  embed_fn: Optional[Callable[[], np.ndarray]] = None

  def __len__(self) -> int:
    return int(self.ids.shape[0])

  @functools.cached_property
  def embeddings(self) -> np.ndarray:
    if self.embed_fn is None:
      raise ValueError("this split was built without an embedding function")
    emb = np.asarray(self.embed_fn(), np.float32)
    if emb.shape[0] != len(self):
      raise ValueError(f"embeddings have {emb.shape[0]} rows for a split of {len(self)} examples")
    if not np.all(np.isfinite(emb)):
      raise UserError("the pool's embeddings contain NaN or infinite values; delete the workdir's features/ cache and rerun")
    return emb

  def take(self, positions: np.ndarray) -> "Split":
    """The sub-split at the given row positions (not ids); embeddings follow if already computed."""
    positions = np.asarray(positions)
    sub = Split(self.ids[positions], self.labels[positions], self.input_ids[positions],
                self.attention_mask[positions], self.token_type_ids[positions])
    if "embeddings" in self.__dict__:
      sub.__dict__["embeddings"] = self.embeddings[positions]
    elif self.embed_fn is not None:
      parent = self
      sub.embed_fn = lambda: parent.embeddings[positions]
    return sub

  def positions_of(self, ids: np.ndarray) -> np.ndarray:
    """Row positions of the given ids; raises if any id is not in this split."""
    return positions_of(self.ids, ids)


@dataclasses.dataclass(eq=False)
class Pool:
  """What a selector may look at: the candidate pool (`train`) and the `validation` split, never `test`."""
  task: str
  label_names: tuple
  train: Split
  validation: Split

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  @property
  def size(self) -> int:
    return len(self.train)


def budget_size(fraction: float, pool_size: int) -> int:
  """The budget fraction as a count of examples (at least one, at most the pool)."""
  if not 0.0 < fraction <= 1.0:
    raise UserError(f"budget={fraction} must be a fraction of the pool in (0, 1], e.g. --config.budget=0.05")
  return int(min(pool_size, max(1, round(fraction * pool_size))))


def check_selection(ids: np.ndarray, pool: Pool, budget: int, name: str) -> np.ndarray:
  """Returns the ids sorted after checking they are unique, in the pool, and exactly `budget` many."""
  ids = np.asarray(ids, np.int64).reshape(-1)
  if ids.shape[0] != budget:
    raise AssertionError(f"selector {name} returned {ids.shape[0]} ids for a budget of {budget}")
  if np.unique(ids).shape[0] != ids.shape[0]:
    raise AssertionError(f"selector {name} returned duplicate ids")
  if not np.isin(ids, pool.train.ids).all():
    raise AssertionError(f"selector {name} returned ids outside the pool")
  return np.sort(ids)


@dataclasses.dataclass(frozen=True)
class RunDirs:
  """Where a selector may write during `select`: TensorBoard curves and checkpoints of its own train state (the
  harness passes a cell's folders; None = nowhere, e.g. in a library call)."""
  logdir: Optional[str] = None
  checkpoint_dir: Optional[str] = None


class Selection(NamedTuple):
  """What `select` returns: the chosen ids and the selector's own diagnostics (JSON-safe values; results.json keeps
  them under `info`)."""
  ids: np.ndarray
  info: dict


class Selector(abc.ABC):
  """A subset-selection method. Subclasses set `name` and implement `select`."""
  name: str = ""
  uses_budget: bool = True  # False for `full`, which ignores the budget and returns the whole pool.
  needs_embeddings: bool = True  # the harness computes (or loads) pool features before timing select()
  # Config sections (or dotted fields, e.g. "rl.chunk") this selector reads beyond data/features/target/finetune,
  # which every cell reads. A cell's identity (rlsel.results.cell_config) covers exactly these, so changing, say,
  # the proxy leaves finished `full` and `random` cells valid.
  config_sections: tuple = ()
  # Bumped when a selector's choices change for the same settings (e.g. kcenter gaining per-label quotas), so cells
  # computed by the old code are refused on resume instead of being mixed with new ones; part of the cell identity.
  version: int = 1

  def __init__(self, config):
    self.config = config

  @abc.abstractmethod
  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    """Exactly `budget` unique ids from `pool.train.ids`, with the selector's diagnostics."""


_REGISTRY: dict = {}

# Selector name -> module that registers it; imported only when the selector is asked for (keeps startup light).
_MODULES = {
    "full": "rlsel.selectors.basic",
    "random": "rlsel.selectors.basic",
    "less": "rlsel.selectors.less",
    "learnalign": "rlsel.selectors.learnalign",
    "cropi": "rlsel.selectors.cropi",
    "dots": "rlsel.selectors.dots",
    "kcenter": "rlsel.selectors.heuristics",
    "entropy": "rlsel.selectors.heuristics",
    "cluster_balanced": "rlsel.selectors.heuristics",
    "cluster_stratified": "rlsel.selectors.coverage",
    "ccs": "rlsel.selectors.coverage",
    "label_clean": "rlsel.selectors.coverage",
    "label_confident": "rlsel.selectors.coverage",
    "facility": "rlsel.selectors.coverage",
    "rl_ppo": "rlsel.selectors.rl",
    "rl_dqn": "rlsel.selectors.rl",
    "rl_reinforce": "rlsel.selectors.rl",
    "rl_ppo_warm": "rlsel.selectors.rl_warm",
    "climb": "rlsel.selectors.climb",
}


def register(name: str):
  """Class decorator adding a selector to the registry under `name`."""
  def deco(cls):
    cls.name = name
    _REGISTRY[name] = cls
    return cls
  return deco


def names() -> list:
  return sorted(set(_MODULES) | set(_REGISTRY))


def selector_class(name: str) -> type:
  """The registered class called `name` (its module imported on first use)."""
  if name not in _REGISTRY and name in _MODULES:
    importlib.import_module(_MODULES[name])
  if name not in _REGISTRY:
    raise UserError(f"unknown selector {name!r}; choose from {', '.join(names())}")
  return _REGISTRY[name]


def make(name: str, config) -> Selector:
  """Builds the selector called `name` from the run config."""
  return selector_class(name)(config)
