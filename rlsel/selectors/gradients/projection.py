"""Random Johnson-Lindenstrauss projections of gradients, regenerated blockwise under jit and never stored.

The map's row for parameter coordinate `i` is drawn from `fold_in(key, i)`, so neither a pool x parameters matrix nor
the parameters x d matrix exists at once. The sparse projection keeps a seeded subset of coordinates and uses the same
rows, so it *is* the dense projection restricted to those coordinates.
"""

import functools
import math
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from rlsel.errors import UserError


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


class Projector(NamedTuple):
  """Which projection to apply to flattened gradients, with its seed material."""
  kind: str              # "rademacher" | "gaussian" | "sparse"
  key: jax.Array
  dim: int
  block: int
  coords: Optional[jax.Array] = None  # sparse only

  def __call__(self, g):
    return apply_projection(g, self.key, self.coords, self.kind, self.dim, self.block)


def apply_projection(g, key, coords, kind: str, dim: int, block: int):
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



def unit_rows(x, eps: float = 1e-12):
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = jnp.asarray(x)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def class_means(x, labels, num_classes: int):
  """Per-class means of the rows of x [n, d] ([C, d], zeros for an absent class) and which classes occur [C] bool."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
  counts = onehot.sum(0)
  return (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None], counts > 0
