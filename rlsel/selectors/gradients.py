"""Per-example gradient features for the gradient-based selectors (LESS, LearnAlign, CROPI).

A pool example's feature is the gradient of its loss with respect to a subset of the model's parameters (the head, the
last k layers, or all), flattened and projected to `d` dimensions by a random Johnson–Lindenstrauss map. The map's row
for parameter coordinate `i` is drawn from `fold_in(key, i)`, so it is regenerated blockwise under jit and never stored:
neither a pool x parameters matrix nor the parameters x d matrix exists at once. The sparse projection keeps a seeded
subset of coordinates and uses the same rows, so it *is* the dense projection restricted to those coordinates.

Also here: a small Adam warm-up loop that keeps a checkpoint per epoch (LESS needs the Adam moments), and the model
wiring (`ModelFns`) the gradient selectors share, injectable so tests can use a tiny model.
"""

import functools
import math
import re
from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from rlsel.errors import UserError
from rlsel.progress import Progress
from rlsel.selectors.base import Split
from rlsel.selectors.basic import top_k_positions  # noqa: F401  (used by the gradient selectors as G.top_k_positions)

_SEP = "/"


class ModelFns(NamedTuple):
  """A classifier as pure functions: `apply(params, input_ids, attention_mask, token_type_ids) -> logits [B, C]`."""
  apply: Callable
  params: dict


class Checkpoint(NamedTuple):
  """The model after one warm-up epoch: params, Adam moments (same tree as params), Adam step count, mean lr."""
  params: dict
  mu: dict
  nu: dict
  count: int
  lr_mean: float


# ----------------------------------------------------------------------------------------------------------------------
# Model wiring


def target_model_fns(config, num_classes: int, key=None) -> ModelFns:
  """WIRING to the target model (`rlsel.target.model.build`), deterministic forward pass (no dropout)."""
  from rlsel.target import model as target_model  # heavy; only when a gradient selector actually runs
  module, params = target_model.build(config, num_classes, key)
  return ModelFns(module_apply(module), params)


@functools.lru_cache(maxsize=8)
def module_apply(module) -> Callable:
  """`apply(params, ids, mask, token_types)` of a linen classifier, one per module so jitted callers compile once."""
  def apply(p, input_ids, attention_mask, token_type_ids):
    return module.apply({"params": p}, input_ids, attention_mask, token_type_ids, deterministic=True)
  return apply


@functools.partial(jax.jit, static_argnames=("apply",))
def _probs(params, input_ids, attention_mask, token_type_ids, *, apply):
  return jax.nn.softmax(apply(params, input_ids, attention_mask, token_type_ids), axis=-1)


def predict_proba(fns: ModelFns, params, split: Split, batch_size: int) -> np.ndarray:
  """Class probabilities [n, C] of `split` under `params`, in fixed-size (padded) jitted batches."""
  out = []
  for pos in _batches(len(split), batch_size):
    pos_p = _pad(pos, batch_size)
    probs = _probs(params, split.input_ids[pos_p], split.attention_mask[pos_p], split.token_type_ids[pos_p],
                   apply=fns.apply)
    out.append(np.asarray(probs)[:pos.shape[0]])
  return np.concatenate(out, 0)


# ----------------------------------------------------------------------------------------------------------------------
# Parameter subsets


def flat_params(tree) -> dict:
  return traverse_util.flatten_dict(tree, sep=_SEP)


def select_paths(params, scope: str, last_k: int, head_patterns, layer_pattern: str) -> list:
  """Sorted parameter paths ("a/b/kernel") that get gradients.

  scope "head": paths containing any of `head_patterns`; "last_k": the head plus the `last_k` highest-numbered layers
  (layer number = first group of `layer_pattern` in the path); "all": every parameter.
  """
  paths = sorted(flat_params(params))
  if scope == "all":
    return paths
  if scope not in ("head", "last_k"):
    raise UserError(f"selection.param_scope={scope!r} is not one of head, last_k, all; set --config.selection.param_scope")
  head = [p for p in paths if any(h in p for h in head_patterns)]
  if not head:
    raise UserError(f"no parameter path contains any of selection.head_patterns={tuple(head_patterns)}; "
                    f"paths look like {paths[:3]} ... {paths[-3:]}; set --config.selection.head_patterns")
  if scope == "head":
    return head
  rx = re.compile(layer_pattern)
  layer_of = {}
  for p in paths:
    m = rx.search(p)
    if m:
      layer_of[p] = int(m.group(1))
  if not layer_of:
    raise UserError(f"no parameter path matches selection.layer_pattern={layer_pattern!r}; paths look like "
                    f"{paths[:3]}; set --config.selection.layer_pattern or use param_scope=head")
  keep = set(sorted(set(layer_of.values()))[-last_k:]) if last_k > 0 else set()
  return sorted(set(head) | {p for p, l in layer_of.items() if l in keep})


def split_params(params, paths: list):
  """(selected, frozen) flat dicts; `merge_params` undoes it."""
  flat = flat_params(params)
  chosen = set(paths)
  return {p: flat[p] for p in paths}, {p: v for p, v in flat.items() if p not in chosen}


def merge_params(selected: dict, frozen: dict):
  return traverse_util.unflatten_dict({**frozen, **selected}, sep=_SEP)


def flatten_rows(tree: dict, paths: list) -> jax.Array:
  """A per-example flat dict of [B, ...] arrays -> [B, P] in `paths` order."""
  return jnp.concatenate([tree[p].reshape(tree[p].shape[0], -1) for p in paths], axis=1)


def flatten_vector(tree: dict, paths: list) -> jax.Array:
  """A flat dict of parameter-shaped arrays -> [P] in `paths` order (matches one row of `flatten_rows`)."""
  return jnp.concatenate([jnp.ravel(tree[p]) for p in paths])


def num_coordinates(selected: dict) -> int:
  return int(sum(int(np.prod(v.shape)) for v in selected.values()))


# ----------------------------------------------------------------------------------------------------------------------
# Projections


@functools.partial(jax.jit, static_argnames=("dim", "kind"))
def projection_rows(key, rows: jax.Array, dim: int, kind: str) -> jax.Array:
  """Rows `rows` [m] of the implicit P x dim projection matrix, [m, dim]; row i depends only on (key, i)."""
  def one(i):
    k = jax.random.fold_in(key, i)
    if kind == "rademacher":
      return jax.random.rademacher(k, (dim,), dtype=jnp.float32)
    return jax.random.normal(k, (dim,), jnp.float32)
  return jax.vmap(one)(rows)


def project_columns(g: jax.Array, rows: jax.Array, key, dim: int, kind: str, block: int) -> jax.Array:
  """sum_j g[:, j] R[rows[j]] for g [B, m], generating R blockwise (fori_loop), never all m rows at once -> [B, dim]."""
  chex.assert_rank(g, 2)
  b, m = g.shape
  nblocks = max(1, -(-m // block))
  pad = nblocks * block - m
  g = jnp.pad(g, ((0, 0), (0, pad)))
  rows = jnp.pad(rows.astype(jnp.int32), (0, pad))

  def body(i, acc):
    gb = jax.lax.dynamic_slice_in_dim(g, i * block, block, axis=1)
    rb = jax.lax.dynamic_slice_in_dim(rows, i * block, block)
    return acc + gb @ projection_rows(key, rb, dim, kind)
  return jax.lax.fori_loop(0, nblocks, body, jnp.zeros((b, dim), jnp.float32))


@functools.partial(jax.jit, static_argnames=("dim", "kind", "block"))
def dense_project(g: jax.Array, key, dim: int, kind: str, block: int) -> jax.Array:
  """JL projection of g [B, P] with the implicit P x dim matrix / sqrt(dim): inner products preserved in expectation."""
  rows = jnp.arange(g.shape[1], dtype=jnp.int32)
  return project_columns(g, rows, key, dim, kind, block) / math.sqrt(dim)


def sparse_coordinates(key, num_params: int, count: int) -> jax.Array:
  """A seeded, sorted subset of `count` distinct parameter coordinates (all of them if count >= num_params)."""
  if count >= num_params:
    return jnp.arange(num_params, dtype=jnp.int32)
  return jnp.sort(jax.random.choice(key, num_params, (count,), replace=False)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("dim", "block"))
def sparse_project(g: jax.Array, coords: jax.Array, key, dim: int, block: int) -> jax.Array:
  """Gaussian projection of g [B, P] restricted to `coords`: the dense rows at those coordinates, rescaled by
  sqrt(P / count) so inner products stay unbiased."""
  scale = math.sqrt(g.shape[1] / coords.shape[0]) / math.sqrt(dim)
  return project_columns(g[:, coords], coords, key, dim, "gaussian", block) * scale


# ----------------------------------------------------------------------------------------------------------------------
# Per-example gradients


def per_example_grads(apply: Callable, selected: dict, frozen: dict, batch: dict) -> dict:
  """Gradients of each example's cross-entropy w.r.t. the selected params: flat dict of [B, ...]."""
  def loss_one(sel, ids, mask, tt, label):
    logits = apply(merge_params(sel, frozen), ids[None], mask[None], tt[None])[0]
    return -jax.nn.log_softmax(logits)[label]
  return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0, 0, 0))(
      selected, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["labels"])


def adam_features(g: jax.Array, mu: jax.Array, nu: jax.Array, count: int, b1: float, b2: float, eps: float):
  """LESS's Adam-aware feature: the Adam update direction after one moment update with the example's gradient.

  m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2, bias-corrected at step t = count + 1, Gamma = m^ / (sqrt(v^) + eps).
  """
  t = jnp.asarray(count, jnp.float32) + 1.0
  m = b1 * mu + (1.0 - b1) * g
  v = b2 * nu + (1.0 - b2) * jnp.square(g)
  m_hat = m / (1.0 - jnp.power(b1, t))
  v_hat = v / (1.0 - jnp.power(b2, t))
  return m_hat / (jnp.sqrt(v_hat) + eps)


class Projector(NamedTuple):
  """Which projection to apply to flattened gradients, with its seed material."""
  kind: str              # "rademacher" | "gaussian" | "sparse"
  key: jax.Array
  dim: int
  block: int
  coords: Optional[jax.Array] = None  # sparse only

  def __call__(self, g):
    return _apply_projection(g, self.key, self.coords, self.kind, self.dim, self.block)


def _apply_projection(g, key, coords, kind: str, dim: int, block: int):
  if kind == "sparse":
    return sparse_project(g, coords, key, dim, block)
  return dense_project(g, key, dim, kind, block)


def make_projector(key, sel_cfg, num_params: int, sparse: bool) -> Projector:
  """The projector the config asks for; `sparse=True` (CROPI) picks `sparse_coords` coordinates first."""
  kcoord, kproj = jax.random.split(key)
  if sparse:
    coords = sparse_coordinates(kcoord, num_params, int(sel_cfg.sparse_coords))
    return Projector("sparse", kproj, int(sel_cfg.projection_dim), int(sel_cfg.projection_block), coords)
  if sel_cfg.projection_kind not in ("rademacher", "gaussian"):
    raise UserError(f"selection.projection_kind={sel_cfg.projection_kind!r} must be rademacher or gaussian")
  return Projector(sel_cfg.projection_kind, kproj, int(sel_cfg.projection_dim), int(sel_cfg.projection_block))


@functools.partial(jax.jit, static_argnames=("apply", "paths", "kind", "dim", "block", "use_adam", "hparams"))
def _batch_features(selected, frozen, mu, nu, count, key, coords, batch, *, apply, paths, kind, dim, block, use_adam,
                    hparams):
  """One batch of projected (optionally Adam-transformed) per-example gradients; compiled once per model/setting."""
  g = flatten_rows(per_example_grads(apply, selected, frozen, batch), list(paths))
  if use_adam:
    g = adam_features(g, mu[None], nu[None], count, *hparams)
  return _apply_projection(g, key, coords, kind, dim, block)


def gradient_features(fns: ModelFns, params, split: Split, paths: list, projector: Projector, batch_size: int,
                      adam: Optional[Checkpoint] = None, adam_hparams=(0.9, 0.999, 1e-8), progress: bool = False,
                      label: str = "gradients") -> np.ndarray:
  """Projected per-example gradients [n, dim] of `split` (Adam-transformed if `adam` is given), one jitted batch at a
  time on the host, with progress lines on stderr if `progress`."""
  selected, frozen = split_params(params, paths)
  if adam is not None:
    mu = flatten_vector(flat_params(adam.mu), paths)
    nu = flatten_vector(flat_params(adam.nu), paths)
  else:
    mu = nu = jnp.zeros((1,), jnp.float32)
  count = jnp.asarray(0 if adam is None else int(adam.count), jnp.int32)
  coords = projector.coords if projector.coords is not None else jnp.zeros((1,), jnp.int32)
  static = dict(apply=fns.apply, paths=tuple(paths), kind=projector.kind, dim=projector.dim, block=projector.block,
                use_adam=adam is not None, hparams=tuple(float(h) for h in adam_hparams))
  out = []
  bar = Progress(len(split), label) if progress else None
  for pos in _batches(len(split), batch_size):
    feats = _batch_features(selected, frozen, mu, nu, count, projector.key, coords,
                            _batch(split, _pad(pos, batch_size)), **static)
    out.append(np.asarray(feats)[:pos.shape[0]])
    if bar:
      bar.update(pos.shape[0])
  if bar:
    bar.close()
  return np.concatenate(out, 0)


def unit_rows(x, eps: float = 1e-12):
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = jnp.asarray(x)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


# ----------------------------------------------------------------------------------------------------------------------
# Warm-up training (Adam, a checkpoint per epoch)


@functools.partial(jax.jit, static_argnames=("apply", "hparams"))
def _train_step(params, state, lr, batch, *, apply, hparams):
  """One Adam step on the mean cross-entropy of a batch (compiled once per model and batch shape)."""
  def loss_fn(p):
    logits = apply(p, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["labels"][:, None], 1))
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, state = optax.scale_by_adam(*hparams).update(grads, state, params)
  params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
  return params, state, loss


def warmup_train(key, fns: ModelFns, params, split: Split, epochs: int, batch_size: int, learning_rate: float,
                 schedule_warmup_fraction: float, adam_hparams=(0.9, 0.999, 1e-8), adam_count0: int = 0,
                 mu=None, nu=None) -> list:
  """Adam (linear warm-up then linear decay) on `split` for `epochs`; returns one `Checkpoint` per epoch.

  Batches are fixed-size (the last one wraps around), so the step compiles once. No dropout: the warm-up only has to
  give the gradient selectors a model that has seen the task. `mu`/`nu`/`adam_count0` continue an earlier run (CROPI).
  """
  b1, b2, eps = adam_hparams
  n = len(split)
  steps_per_epoch = max(1, -(-n // batch_size))
  total = steps_per_epoch * epochs
  warm = max(1, int(round(schedule_warmup_fraction * total)))
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warm), optax.linear_schedule(learning_rate, 0.0, total - warm + 1)],
      [warm])
  adam = optax.scale_by_adam(b1, b2, eps)
  state = adam.init(params)
  if mu is not None:
    state = state._replace(mu=mu, nu=nu, count=jnp.asarray(adam_count0, jnp.int32))

  checkpoints, t = [], 0
  for epoch in range(epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
    order = np.resize(order, steps_per_epoch * batch_size)
    lrs = []
    for s in range(steps_per_epoch):
      lr = float(schedule(t))
      lrs.append(lr)
      params, state, _ = _train_step(params, state, jnp.float32(lr),
                                     _batch(split, order[s * batch_size:(s + 1) * batch_size]),
                                     apply=fns.apply, hparams=(float(b1), float(b2), float(eps)))
      t += 1
    checkpoints.append(Checkpoint(params, state.mu, state.nu, int(state.count), float(np.mean(lrs))))
  return checkpoints


# ----------------------------------------------------------------------------------------------------------------------
# Batching helpers


def _batches(n: int, batch_size: int):
  for s in range(0, n, batch_size):
    yield np.arange(s, min(n, s + batch_size))


def _pad(pos: np.ndarray, batch_size: int) -> np.ndarray:
  """Positions padded to `batch_size` by repeating the first (the padded rows' outputs are dropped)."""
  return np.concatenate([pos, np.full(batch_size - pos.shape[0], pos[0], pos.dtype)])


def _batch(split: Split, pos: np.ndarray) -> dict:
  return {"input_ids": split.input_ids[pos], "attention_mask": split.attention_mask[pos],
          "token_type_ids": split.token_type_ids[pos], "labels": split.labels[pos].astype(np.int32)}


# ----------------------------------------------------------------------------------------------------------------------
# Shared base of the selectors that warm a model up first


def adam_hparams(sel_cfg) -> tuple:
  return float(sel_cfg.adam_b1), float(sel_cfg.adam_b2), float(sel_cfg.adam_eps)


_WARMUP_STREAM = 0x7761726D  # fold_in tag of the warm-up's key, shared by every warmed selector of a seed
_WARM_CACHE: dict = {}  # the latest warm-up (one entry: a MiniLM warm-up with per-epoch Adam moments is ~1 GB)


class Warmup(NamedTuple):
  """A warmed-up model: its functions, the param paths whose gradients are taken, per-epoch checkpoints, the pool
  rows it was warmed on, and whether it was reused from an earlier selector of the same seed (whose seconds then
  exclude the warm-up)."""
  fns: "ModelFns"
  paths: list
  checkpoints: list
  positions: np.ndarray
  reused: bool


class WarmedSelector:
  """Mixin for selectors that warm the target model up on a random share of the pool before scoring.

  The warm-up depends only on the selector's key (i.e. the run seed), the pool and the warm-up settings, not on which
  selector asks, so LESS, LearnAlign, CROPI and DOTS of one seed share it: the latest one is kept in memory and reused
  by the next selector of the same seed (the harness runs a seed's selectors one after another).
  `model_factory(config, num_classes, key) -> ModelFns` defaults to the target model; tests replace it with a tiny model.
  """
  model_factory: Callable = staticmethod(target_model_fns)
  config_sections = ("selection",)

  def warm_up(self, key, pool) -> Warmup:
    """The model warmed up on a random `warmup_fraction` of the pool. `key` is the selector's own key; the warm-up's
    key is derived from it the same way for every selector."""
    from rlsel.checkpoint import fingerprint
    s = self.config.selection
    key = jax.random.fold_in(key, _WARMUP_STREAM)
    tag = fingerprint(id(self.model_factory), self.config.target, self.config.features, s.warmup_fraction,
                      s.warmup_epochs, s.train_batch_size, s.learning_rate, s.schedule_warmup_fraction,
                      adam_hparams(s), s.param_scope, s.last_k, tuple(s.head_patterns), s.layer_pattern,
                      np.asarray(jax.random.key_data(key)), np.asarray(pool.train.ids), np.asarray(pool.train.labels))
    reused = tag in _WARM_CACHE
    if not reused:
      _WARM_CACHE.clear()
      # the entry holds the factory too, so its id() cannot be recycled by another function while cached
      _WARM_CACHE[tag] = (self.model_factory, self._warm_up(key, pool))
    return Warmup(*_WARM_CACHE[tag][1], reused=reused)

  def _warm_up(self, key, pool):
    from rlsel.selectors.basic import numpy_rng, stratified_sample
    s = self.config.selection
    kinit, kpos, ktrain = jax.random.split(key, 3)
    fns = self.model_factory(self.config, pool.num_classes, kinit)
    paths = select_paths(fns.params, s.param_scope, int(s.last_k), tuple(s.head_patterns), s.layer_pattern)
    n_warm = int(min(pool.size, max(pool.num_classes, round(float(s.warmup_fraction) * pool.size))))
    warm_pos = stratified_sample(numpy_rng(kpos), pool.train.labels, n_warm)
    checkpoints = warmup_train(ktrain, fns, fns.params, pool.train.take(warm_pos), int(s.warmup_epochs),
                               int(s.train_batch_size), float(s.learning_rate), float(s.schedule_warmup_fraction),
                               adam_hparams(s))
    return fns, paths, checkpoints, warm_pos


def validate(config) -> None:
  """Checks `config.selection` before any work (the literature selectors and the embedding heuristics)."""
  from rlsel.errors import require, require_choice, require_int, require_number
  s = config.selection
  require(isinstance(s.label_balanced, bool), f"selection.label_balanced={s.label_balanced!r} must be True or False")
  require_choice(s.param_scope, "selection.param_scope", ("head", "last_k", "all"))
  require_choice(s.projection_kind, "selection.projection_kind", ("rademacher", "gaussian"))
  for f in ("last_k", "projection_dim", "projection_block", "sparse_coords", "grad_batch_size", "eval_batch_size",
            "warmup_epochs", "train_batch_size", "cropi_rounds", "dots_reference_size", "estimator_hidden",
            "estimator_steps", "calibration_steps", "probe_steps", "kmeans_clusters", "kmeans_iters"):
    require_int(s[f], f"selection.{f}", low=1)
  require_int(s.cropi_round_epochs, "selection.cropi_round_epochs", low=0)
  require(s.less_checkpoints == -1 or (isinstance(s.less_checkpoints, int) and s.less_checkpoints >= 1),
          f"selection.less_checkpoints={s.less_checkpoints!r} must be -1 (all) or a positive integer")
  require_number(s.warmup_fraction, "selection.warmup_fraction", low=0, high=1, low_open=True)
  for f in ("schedule_warmup_fraction", "adam_b1", "adam_b2", "dots_holdout_fraction"):
    require_number(s[f], f"selection.{f}", low=0, high=1, high_open=True)
  require_number(s.dots_alpha, "selection.dots_alpha", low=0, high=1)
  for f in ("learning_rate", "adam_eps", "dots_tau", "estimator_learning_rate", "calibration_learning_rate",
            "probe_learning_rate"):
    require_number(s[f], f"selection.{f}", low=0, low_open=True)
  for f in ("rrf_offset", "probe_l2"):
    require_number(s[f], f"selection.{f}", low=0)
