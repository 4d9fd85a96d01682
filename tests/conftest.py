"""Shared fixtures: small configs and synthetic pools, so unit tests stay fast on 2 CPU cores."""

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def load_config(name: str, arg: str = None):
  """`configs/<name>.py`'s get_config(arg), as rlsel.main would load it (unlocked, for tests to adjust)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(REPO, "configs", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()


@pytest.fixture
def debug_config():
  return load_config("debug")


def synthetic_pool(n=200, n_val=60, classes=3, length=16, dim=32, seed=0):
  """A Pool with random tokens and embeddings (embeddings set directly, no encoder run)."""
  from rlsel.selectors.base import Pool, Split
  rng = np.random.default_rng(seed)

  def split(m, offset):
    ids = np.arange(offset, offset + m, dtype=np.int64)
    labels = rng.integers(0, classes, m).astype(np.int32)
    toks = rng.integers(1, 1000, (m, length)).astype(np.int32)
    s = Split(ids, labels, toks, np.ones_like(toks), np.zeros_like(toks))
    s.__dict__["embeddings"] = rng.normal(size=(m, dim)).astype(np.float32)
    return s

  return Pool("synthetic", tuple(f"c{i}" for i in range(classes)), split(n, 0), split(n_val, 10_000))


@pytest.fixture
def pool():
  return synthetic_pool()
