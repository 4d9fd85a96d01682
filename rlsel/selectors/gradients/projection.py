"""Random Johnson-Lindenstrauss projections of gradients, regenerated blockwise under jit and never stored.

The map's row for parameter coordinate `i` is drawn from `fold_in(key, i)`, so neither a pool x parameters matrix nor
the parameters x d matrix exists at once. The sparse projection keeps a seeded subset of coordinates and uses the same
rows, so it *is* the dense projection restricted to those coordinates.

The Kronecker projection (after LoGra, Choe et al. 2024) maps each weight matrix's gradient G [in, out] to
A^T G B with small random factors A [in, k], B [out, k]: k^2 coordinates per matrix for in*k + out*k random numbers
instead of in*out*k^2, which is what makes gradients of whole transformer layers affordable on a CPU. E[A A^T] = I
and E[B B^T] = I, so inner products are preserved in expectation, as with the dense map.
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


def kronecker_factor(shapes: tuple, dim: int) -> int:
  """The per-side factor k of a Kronecker projection of leaves `shapes` into about `dim` coordinates: every matrix
  leaf and the vector leaves together get k^2 each."""
  blocks = sum(len(s) >= 2 for s in shapes) + any(len(s) < 2 for s in shapes)
  return max(1, math.isqrt(dim // max(1, blocks)))


def kronecker_dim(shapes: tuple, factor: int) -> int:
  """Output width of `kronecker_project` for leaves `shapes` (in flattening order) and per-side factor `factor`."""
  mats = [(s[0], math.prod(s[1:])) for s in shapes if len(s) >= 2]
  vec = sum(math.prod(s) for s in shapes if len(s) < 2)
  return sum(min(i, factor) * min(o, factor) for i, o in mats) + min(vec, factor * factor)


def _side(key, n: int, k: int) -> jax.Array:
  """One Kronecker factor [n, k], Rademacher / sqrt(k) so E[F F^T] = I; the identity when n <= k (nothing to save)."""
  if n <= k:
    return jnp.eye(n, dtype=jnp.float32)
  return jax.random.rademacher(key, (n, k), dtype=jnp.float32) / math.sqrt(k)


@functools.partial(jax.jit, static_argnames=("shapes", "factor", "block"))
def kronecker_project(g: jax.Array, key, shapes: tuple, factor: int, block: int) -> jax.Array:
  """g [B, P] (leaves of `shapes` flattened in order) -> [B, kronecker_dim]: each matrix leaf (first axis by the rest)
  as A^T G B, the vector leaves together by the dense map (kept as they are when they fit in factor^2)."""
  chex.assert_rank(g, 2)
  out, vec, start = [], [], 0
  for i, s in enumerate(shapes):
    size = math.prod(s)
    leaf = g[:, start:start + size]
    start += size
    if len(s) < 2:
      vec.append(leaf)
      continue
    rows, cols = s[0], size // s[0]
    ka, kb = jax.random.split(jax.random.fold_in(key, i))
    a, b = _side(ka, rows, factor), _side(kb, cols, factor)
    out.append(jnp.einsum("bio,ik,oj->bkj", leaf.reshape(-1, rows, cols), a, b).reshape(g.shape[0], -1))
  chex.assert_equal(start, g.shape[1])
  if vec:
    v = jnp.concatenate(vec, axis=1)
    if v.shape[1] > factor * factor:
      v = dense_project(v, jax.random.fold_in(key, len(shapes)), factor * factor, "rademacher", block)
    out.append(v)
  return jnp.concatenate(out, axis=1)


class Projector(NamedTuple):
  """Which projection to apply to flattened gradients, with its seed material."""
  kind: str              # "rademacher" | "gaussian" | "sparse" | "kronecker" | "none" (the raw gradient)
  key: jax.Array
  dim: int               # output width; for "kronecker" the per-side factor k
  block: int
  coords: Optional[jax.Array] = None  # sparse only
  shapes: tuple = ()     # kronecker only: the gradient's leaf shapes in flattening order

  def __call__(self, g):
    return apply_projection(g, self.key, self.coords, self.kind, self.dim, self.block, self.shapes)

  @property
  def out_dim(self) -> int:
    """Width of a projected row (for "none": the sum of `shapes`' sizes)."""
    if self.kind == "kronecker":
      return kronecker_dim(self.shapes, self.dim)
    if self.kind == "none":
      return sum(math.prod(s) for s in self.shapes)
    return self.dim

  def describe(self) -> dict:
    """What a selector logs about its gradient features: the map, their width, the coordinates they come from."""
    out = {"projection": self.kind, "feature_dim": self.out_dim,
           "num_grad_params": sum(math.prod(s) for s in self.shapes)}
    if self.kind == "sparse":
      out["sparse_coords"] = int(self.coords.shape[0])
    return out


def apply_projection(g, key, coords, kind: str, dim: int, block: int, shapes: tuple = ()):
  if kind == "none":
    return g
  if kind == "sparse":
    return sparse_project(g, coords, key, dim, block)
  if kind == "kronecker":
    return kronecker_project(g, key, shapes, dim, block)
  return dense_project(g, key, dim, kind, block)


PROJECTION_KINDS = ("kronecker", "rademacher", "gaussian")


def make_projector(key, sel_cfg, shapes: tuple, sparse: bool) -> Projector:
  """The projector the config asks for, for gradient leaves `shapes` (in flattening order).

  No projection ("none") when the leaves hold no more than `projection_dim` coordinates: projecting would only add
  noise. Otherwise `sparse=True` (CROPI) keeps `sparse_coords` coordinates, then the Gaussian map; else
  `projection_kind`: "kronecker" (per-matrix factors, about `projection_dim` coordinates in all), or a dense map.
  """
  shapes = tuple(tuple(int(d) for d in s) for s in shapes)
  num_params = sum(math.prod(s) for s in shapes)
  dim, block = int(sel_cfg.projection_dim), int(sel_cfg.projection_block)
  kcoord, kproj = jax.random.split(key)
  if num_params <= dim:
    return Projector("none", kproj, num_params, block, shapes=shapes)
  if sparse:
    coords = sparse_coordinates(kcoord, num_params, int(sel_cfg.sparse_coords))
    return Projector("sparse", kproj, dim, block, coords, shapes=shapes)
  if sel_cfg.projection_kind not in PROJECTION_KINDS:
    raise UserError(f"selection.projection_kind={sel_cfg.projection_kind!r} must be one of "
                    f"{', '.join(PROJECTION_KINDS)}")
  if sel_cfg.projection_kind == "kronecker":
    return Projector("kronecker", kproj, kronecker_factor(shapes, dim), block, shapes=shapes)
  return Projector(sel_cfg.projection_kind, kproj, dim, block, shapes=shapes)


def unit_rows(x, eps: float = 1e-12):
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = jnp.asarray(x)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def class_means(x, labels, num_classes: int):
  """Per-class means of the rows of x [n, d] ([C, d], zeros for an absent class) and which classes occur [C] bool."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
  counts = onehot.sum(0)
  return (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None], counts > 0
