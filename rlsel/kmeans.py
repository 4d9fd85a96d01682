"""K-means in JAX (k-means++ init, Lloyd iterations) and per-cluster features of a pool.

Distances are only ever taken between pool rows and centroids, a batch of rows at a time, so memory is
O(batch * k + n), never n x n: the pool may have a million rows.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np


def _pad_rows(x: jnp.ndarray, batch: int):
  """Pads rows up to a multiple of `batch`; returns the padded array [b, batch, d] and a validity mask."""
  n = x.shape[0]
  nb = -(-n // batch)
  pad = nb * batch - n
  xp = jnp.pad(x, ((0, pad), (0, 0)))
  valid = jnp.arange(nb * batch) < n
  return xp.reshape(nb, batch, -1), valid


def _assign(xb: jnp.ndarray, centroids: jnp.ndarray):
  """Nearest centroid and its squared distance for each row, batch by batch ([nb, batch, d] -> [nb*batch])."""
  centroid_sq = jnp.sum(centroids ** 2, -1)

  def one(rows):
    d2 = jnp.sum(rows ** 2, -1, keepdims=True) - 2.0 * rows @ centroids.T + centroid_sq[None]
    return jnp.argmin(d2, -1), jnp.maximum(jnp.min(d2, -1), 0.0)

  a, d = jax.lax.map(one, xb)
  return a.reshape(-1), d.reshape(-1)


@functools.partial(jax.jit, static_argnames=("k", "iters", "batch"))
def kmeans(key: jax.Array, x: jnp.ndarray, k: int, iters: int, batch: int):
  """Clusters rows of `x` [n, d] into `k` groups; returns (centroids [k, d], assignment [n] int32).

  k-means++ seeding (each new centre drawn with probability proportional to the squared distance to the nearest
  centre so far), then `iters` Lloyd steps; an emptied cluster keeps its previous centroid.
  """
  chex.assert_rank(x, 2)
  n, d = x.shape
  batch = min(batch, n)
  x = x.astype(jnp.float32)
  xb, valid = _pad_rows(x, batch)
  k_first, k_rest = jax.random.split(key)

  first = x[jax.random.randint(k_first, (), 0, n)]
  centroids = jnp.zeros((k, d), jnp.float32).at[0].set(first)
  min_d2 = jnp.sum((x - first) ** 2, -1)

  def seed(i, carry):
    cents, md2 = carry
    logits = jnp.where(md2 > 0, jnp.log(jnp.maximum(md2, 1e-30)), -jnp.inf)
    # All remaining rows coincide with a centre: fall back to a uniform draw.
    logits = jnp.where(jnp.any(md2 > 0), logits, jnp.zeros_like(md2))
    j = jax.random.categorical(jax.random.fold_in(k_rest, i), logits)
    c = x[j]
    return cents.at[i].set(c), jnp.minimum(md2, jnp.sum((x - c) ** 2, -1))

  centroids, _ = jax.lax.fori_loop(1, k, seed, (centroids, min_d2))

  def lloyd(_, cents):
    a, _ = _assign(xb, cents)
    a = jnp.where(valid, a, k)  # padding rows go to a dropped segment
    sums = jax.ops.segment_sum(xb.reshape(-1, d), a, num_segments=k + 1)[:k]
    counts = jax.ops.segment_sum(valid.astype(jnp.float32), a, num_segments=k + 1)[:k]
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts[:, None], 1.0), cents)

  centroids = jax.lax.fori_loop(0, iters, lloyd, centroids)
  a, _ = _assign(xb, centroids)
  return centroids, a[:n].astype(jnp.int32)


def stratified_kmeans(key: jax.Array, x: np.ndarray, labels: np.ndarray, k: int, iters: int, batch: int):
  """Clusters each label's rows separately; the `k` clusters are shared out by label frequency (at least one each).

  Returns (centroids [k', d], assignment [n]) with k' <= k (a label with fewer rows than its share gets fewer).
  """
  labels = np.asarray(labels)
  classes, counts = np.unique(labels, return_counts=True)
  share = np.maximum(1, np.floor(counts / counts.sum() * k)).astype(int)
  while share.sum() > k and share.max() > 1:
    share[np.argmax(share)] -= 1
  for i in np.argsort(-counts):  # hand leftover clusters to the biggest labels
    if share.sum() >= k:
      break
    share[i] += 1
  assign = np.zeros(labels.shape[0], np.int32)
  cents, offset = [], 0
  for j, (c, kc) in enumerate(zip(classes, share)):
    rows = np.flatnonzero(labels == c)
    kc = int(min(kc, rows.shape[0]))
    cc, ac = kmeans(jax.random.fold_in(key, j), jnp.asarray(x[rows]), kc, iters, batch)
    cents.append(np.asarray(cc))
    assign[rows] = np.asarray(ac) + offset
    offset += kc
  return np.concatenate(cents), assign


def compact(assign: np.ndarray, centroids: np.ndarray):
  """Drops empty clusters and renumbers the rest 0..C'-1 (an empty cluster would be a dead action)."""
  assign = np.asarray(assign)
  used = np.unique(assign)
  remap = np.full(int(centroids.shape[0]), -1, np.int64)
  remap[used] = np.arange(used.shape[0])
  return np.asarray(centroids)[used], remap[assign].astype(np.int32)


def cluster_features(assign: np.ndarray, centroids: np.ndarray, labels: np.ndarray, num_classes: int,
                     loss: np.ndarray, entropy: np.ndarray) -> np.ndarray:
  """Static per-cluster features [C, d + 2 + num_classes + 2]:
  centroid, log size (centred), size share, label histogram, and the initial proxy's mean loss and entropy."""
  assign = jnp.asarray(assign)
  c = centroids.shape[0]
  ones = jnp.ones(assign.shape[0], jnp.float32)
  size = jax.ops.segment_sum(ones, assign, num_segments=c)
  hist = jax.ops.segment_sum(jax.nn.one_hot(jnp.asarray(labels), num_classes), assign, num_segments=c)
  hist = hist / jnp.maximum(size[:, None], 1.0)
  mean_loss = jax.ops.segment_sum(jnp.asarray(loss, jnp.float32), assign, num_segments=c) / jnp.maximum(size, 1.0)
  mean_ent = jax.ops.segment_sum(jnp.asarray(entropy, jnp.float32), assign, num_segments=c) / jnp.maximum(size, 1.0)
  logsize = jnp.log(jnp.maximum(size, 1.0))
  feats = jnp.concatenate([
      jnp.asarray(centroids, jnp.float32),
      (logsize - logsize.mean())[:, None],
      (size / size.sum())[:, None] * c,
      hist,
      mean_loss[:, None],
      mean_ent[:, None],
  ], axis=-1)
  return np.asarray(feats)


def validate(config) -> None:
  """Checks `config.kmeans` before any work (the RL environment's and CLIMB's clusters)."""
  from rlsel.errors import require, require_int
  k = config.kmeans
  for f in ("num_clusters", "iters", "batch_size"):
    require_int(k[f], f"kmeans.{f}", low=1)
  require(isinstance(k.stratified, bool), f"kmeans.stratified={k.stratified!r} must be True or False")
