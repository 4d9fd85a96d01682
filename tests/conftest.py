"""Shared fixtures and helpers: small configs, synthetic pools and splits, a tiny classifier, so unit tests stay fast
on 2 CPU cores (heavy imports inside the helpers that need them)."""

import atexit
import functools
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One XLA compilation cache for the test session, shared by both workers and every subprocess the tests start: the
# suite compiles the same small programs many times over (the fault test runs the main command six times). Set
# before any test imports jax; a fresh directory each session, removed by the process that made it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rlsel-tests-xla-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")


def run_main(args, workdir, prelude="", env=None):
  """Runs `python -m rlsel.main` (optionally after a Python prelude, e.g. hiding a package) in the repo."""
  import subprocess
  code = (prelude + "\nimport runpy, sys\nsys.argv = ['rlsel.main'] + sys.argv[1:]\n"
          "runpy.run_module('rlsel.main', run_name='__main__')")
  cmd = [sys.executable, "-c", code] + list(args) + [f"--workdir={workdir}"]
  return subprocess.run(cmd, cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=600)


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


def learnable_split(n, length, seed, offset=0):
  """A Split whose label is whether token 5 or token 6 starts the sequence: learnable by any encoder."""
  from rlsel.selectors.base import Split
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n).astype(np.int32)
  ids = rng.integers(10, 500, (n, length)).astype(np.int32)
  ids[:, 0] = 101
  ids[:, 1] = np.where(labels == 1, 5, 6)
  return Split(np.arange(offset, offset + n, dtype=np.int64), labels, ids, np.ones_like(ids), np.zeros_like(ids))


def tiny_rl_config():
  """The base config with a tiny environment and agent (RL selector and CLIMB unit tests)."""
  from rlsel.configlib import base_config
  c = base_config()
  c.kmeans.num_clusters, c.kmeans.iters = 6, 3
  c.proxy.steps, c.proxy.batch_size, c.proxy.init_steps, c.proxy.reward_fraction = 4, 16, 4, 0.25
  c.rl.num_envs, c.rl.num_updates, c.rl.update_epochs, c.rl.num_minibatches = 2, 2, 1, 1
  c.rl.hidden, c.rl.episode_steps, c.rl.log_every, c.rl.fast_compile = 16, 4, 0, True
  c.rl.surrogate_share, c.rl.surrogate_steps = 1.0, 3
  c.rl.greedy_every = 0  # no greedy episode on the learning curve (a smaller program); the tests of it set 5
  return c


@functools.lru_cache(maxsize=4)
def _tiny_classifier(num_classes):
  """(module, jitted init) of a tiny classifier: token embedding, masked mean pool, one hidden layer ("layer_0"),
  a linear "head" (the gradient selectors' unit tests use it in place of the target)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  class TinyClassifier(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic=True):
      x = nn.Embed(32, 8, name="embed")(input_ids)
      m = attention_mask[..., None].astype(jnp.float32)
      x = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
      x = jnp.tanh(nn.Dense(8, name="layer_0")(x))
      return nn.Dense(self.num_classes, name="head")(x)

  module = TinyClassifier(num_classes)
  ids = jnp.zeros((1, 6), jnp.int32)
  return module, jax.jit(lambda key: module.init(key, ids, jnp.ones_like(ids), ids)["params"])


def tiny_fns(key=None, num_classes=3):
  """The tiny classifier as gradient `ModelFns`; init and apply compile once per class count."""
  import jax

  from rlsel.selectors import gradients as G
  module, init = _tiny_classifier(num_classes)
  return G.ModelFns(G.module_apply(module), init(jax.random.key(0) if key is None else key))


def tiny_split(n=20, length=6, num_classes=3, seed=0):
  """A Split of random tokens whose first token reveals the label (for `tiny_fns`)."""
  from rlsel.selectors.base import Split
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  ids = rng.integers(1, 32, (n, length)).astype(np.int32)
  ids[:, 0] = labels + 1  # a label-revealing token, so the model can learn
  mask = np.ones((n, length), np.int32)
  mask[:, -1] = rng.integers(0, 2, n)
  return Split(np.arange(n, dtype=np.int64) + 100, labels, ids, mask, np.zeros_like(ids))
