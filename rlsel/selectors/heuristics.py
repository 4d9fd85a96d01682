"""Cheap embedding-space heuristics: k-center greedy coreset, highest predictive entropy, cluster-balanced sampling.

All work on the frozen MiniLM embeddings of the pool (`pool.train.embeddings`); none trains the target model.
`entropy` scores with a linear probe (softmax regression) trained on the *validation* split's embeddings.
"""

import functools
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlsel.selectors.base import Pool, Selector, register
from rlsel.selectors.basic import numpy_rng, top_k_positions


@functools.partial(jax.jit, static_argnames=("k",))
def kcenter_greedy(key, x: jax.Array, k: int) -> jax.Array:
  """k row positions by greedy k-center (farthest-first) from a random first centre.

  Keeps each row's squared distance to its nearest chosen centre and updates it with one row-to-centre distance pass
  per pick: O(k n d) time, O(n) memory, no n x n matrix. Chosen rows are masked so duplicates never repeat a pick.
  """
  chex.assert_rank(x, 2)
  n = x.shape[0]
  x = x.astype(jnp.float32)
  sq = jnp.sum(x * x, -1)

  def dist_to(i):
    return jnp.maximum(sq - 2.0 * x @ x[i] + sq[i], 0.0)

  first = jax.random.randint(key, (), 0, n)
  taken = jnp.zeros((n,), bool).at[first].set(True)
  chosen = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def body(j, carry):
    chosen, taken, mind = carry
    nxt = jnp.argmax(jnp.where(taken, -1.0, mind)).astype(jnp.int32)
    return chosen.at[j].set(nxt), taken.at[nxt].set(True), jnp.minimum(mind, dist_to(nxt))
  chosen, _, _ = jax.lax.fori_loop(1, k, body, (chosen, taken, dist_to(first)))
  return chosen


@functools.partial(jax.jit, static_argnames=("num_classes", "steps", "lr", "l2"))
def fit_probe(x: jax.Array, y: jax.Array, *, num_classes: int, steps: int, lr: float, l2: float):
  """Softmax regression (W [d, C], b [C]) by full-batch Adam on standardised x; returns (params, mean, std)."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  xs = (x - mean) / std
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

  def loss(p):
    logp = jax.nn.log_softmax(xs @ p["w"] + p["b"])
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1)) + l2 * jnp.sum(p["w"] ** 2)
  opt = optax.adam(lr)

  def step(carry, _):
    p, s = carry
    u, s = opt.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), None
  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
  return params, mean, std


@jax.jit
def probe_entropy(params, mean, std, x: jax.Array) -> jax.Array:
  """Predictive entropy [n] of the probe on rows x."""
  logp = jax.nn.log_softmax(((x - mean) / std) @ params["w"] + params["b"])
  return -jnp.sum(jnp.exp(logp) * logp, -1)


def balanced_quotas(rng: np.random.Generator, sizes: np.ndarray, budget: int) -> np.ndarray:
  """Per-cluster takes summing to `budget`: equal shares, a cluster too small gives its leftover to the others,
  the last indivisible remainder goes to randomly chosen clusters that still have room."""
  sizes = np.asarray(sizes, np.int64)
  quota = np.zeros_like(sizes)
  left = int(min(budget, sizes.sum()))
  while left > 0:
    room = np.flatnonzero(quota < sizes)
    each = left // room.shape[0]
    if each == 0:
      quota[rng.choice(room, size=left, replace=False)] += 1
      break
    add = np.minimum(each, sizes[room] - quota[room])
    quota[room] += add
    left -= int(add.sum())
  return quota


def _kmeans(key, x: np.ndarray, k: int, iters: int, batch: int) -> np.ndarray:
  """Cluster assignment [n] from rlsel.kmeans (k-means++ then Lloyd)."""
  from rlsel import kmeans
  _, assign = kmeans.kmeans(key, jnp.asarray(x), k, iters, batch)
  return np.asarray(assign)


@register("kcenter")
class KCenter(Selector):
  """Greedy k-center coreset on the pool embeddings."""

  def select(self, key, pool: Pool, budget: int) -> np.ndarray:
    t0 = time.time()
    pos = np.asarray(kcenter_greedy(key, jnp.asarray(pool.train.embeddings), budget))
    self.last_info = {"select_seconds": time.time() - t0}
    return pool.train.ids[pos]


@register("entropy")
class Entropy(Selector):
  """Highest predictive entropy of a linear probe on embeddings trained on the validation split (not the target
  model: cheap, and it does not spend pool labels)."""

  def select(self, key, pool: Pool, budget: int) -> np.ndarray:
    s = self.config.selection
    t0 = time.time()
    params, mean, std = fit_probe(jnp.asarray(pool.validation.embeddings), jnp.asarray(pool.validation.labels),
                                  num_classes=pool.num_classes, steps=int(s.probe_steps),
                                  lr=float(s.probe_learning_rate), l2=float(s.probe_l2))
    ent = np.asarray(probe_entropy(params, mean, std, jnp.asarray(pool.train.embeddings)))
    # Ties (e.g. duplicate rows) broken by a seeded random order, so the choice depends on the key only.
    order = numpy_rng(key).permutation(ent.shape[0])
    pos = order[top_k_positions(ent[order], budget, pool.train.labels[order] if s.label_balanced else None)]
    self.last_info = {"select_seconds": time.time() - t0, "mean_entropy_pool": float(ent.mean()),
                      "mean_entropy_selected": float(ent[pos].mean())}
    return pool.train.ids[pos]


@register("cluster_balanced")
class ClusterBalanced(Selector):
  """k-means over the pool embeddings, then an equal random take from every cluster."""

  def select(self, key, pool: Pool, budget: int) -> np.ndarray:
    s = self.config.selection
    t0 = time.time()
    kcl, kpick = jax.random.split(key)
    k = int(min(int(s.kmeans_clusters), len(pool.train)))
    batch = int(self.config.kmeans.batch_size) if "kmeans" in self.config else 8192
    assign = _kmeans(kcl, pool.train.embeddings, k, int(s.kmeans_iters), batch)
    rng = numpy_rng(kpick)
    sizes = np.bincount(assign, minlength=k)
    quota = balanced_quotas(rng, sizes, budget)
    pos = np.concatenate([rng.choice(np.flatnonzero(assign == c), size=q, replace=False)
                          for c, q in enumerate(quota) if q > 0])
    self.last_info = {"select_seconds": time.time() - t0, "clusters": k, "nonempty_clusters": int((sizes > 0).sum()),
                      "min_take": int(quota[sizes > 0].min()), "max_take": int(quota.max())}
    return pool.train.ids[pos]
