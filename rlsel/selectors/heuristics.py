"""Cheap embedding-space heuristics: k-center greedy coreset, highest predictive entropy, cluster-balanced sampling.

All work on the frozen MiniLM embeddings of the pool (`pool.train.embeddings`); none trains the target model.
`entropy` scores with a linear probe (softmax regression) trained on the *validation* split's embeddings.
With `selection.label_balanced` (the default) all three give each label its share of the budget in the pool's
proportions (`label_quotas`): unconstrained, k-center greedy picks only outliers, which on an imbalanced task are
all of the majority class. The coverage and cleaning baselines (cluster_stratified, ccs, label_clean) live in
rlsel/selectors/coverage.py.
"""

import functools
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register
from rlsel.selectors.basic import label_quotas, numpy_rng, top_k_positions


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
def probe_log_probs(params, mean, std, x: jax.Array) -> jax.Array:
  """Log class probabilities [n, C] of the probe on rows x."""
  return jax.nn.log_softmax(((x - mean) / std) @ params["w"] + params["b"])


@jax.jit
def probe_entropy(params, mean, std, x: jax.Array) -> jax.Array:
  """Predictive entropy [n] of the probe on rows x."""
  logp = probe_log_probs(params, mean, std, x)
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


def kmeans_assign(key, x: np.ndarray, k: int, iters: int, batch: int) -> np.ndarray:
  """Cluster assignment [n] from rlsel.kmeans (k-means++ then Lloyd)."""
  from rlsel import kmeans
  _, assign = kmeans.kmeans(key, jnp.asarray(x), k, iters, batch)
  return np.asarray(assign)


# The fields a cell's identity covers (results.result_config): what each selector reads, not the whole `selection`
# section, so a change to the gradient selectors' settings leaves these cells valid.
PROBE_FIELDS = ("selection.probe_steps", "selection.probe_learning_rate", "selection.probe_l2")
CLUSTER_FIELDS = ("selection.kmeans_clusters", "selection.kmeans_iters", "kmeans.batch_size")


def pool_clusters(key, pool: Pool, config):
  """(assignment [n], k): k-means of the pool embeddings with k = selection.kmeans_clusters (at most the pool),
  selection.kmeans_iters Lloyd steps and kmeans.batch_size rows per distance batch."""
  s = config.selection
  k = int(min(int(s.kmeans_clusters), len(pool.train)))
  return kmeans_assign(key, pool.train.embeddings, k, int(s.kmeans_iters), int(config.kmeans.batch_size)), k


@register("kcenter")
class KCenter(Selector):
  """Greedy k-center coreset on the pool embeddings; with selection.label_balanced, run within each label for that
  label's quota (pool proportions), each label from its own random first centre."""
  config_sections = ("selection.label_balanced",)
  version = 2  # 2: per-label quotas (2026-12-01)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    t0 = time.time()
    emb, labels = pool.train.embeddings, pool.train.labels
    if not self.config.selection.label_balanced:
      pos = np.asarray(kcenter_greedy(key, jnp.asarray(emb), budget))
    else:
      classes, take = label_quotas(labels, budget)
      parts = []
      for c, t in zip(classes, take):
        if t > 0:
          rows = np.flatnonzero(labels == c)
          parts.append(rows[np.asarray(kcenter_greedy(jax.random.fold_in(key, int(c)), jnp.asarray(emb[rows]),
                                                      int(t)))])
      pos = np.concatenate(parts)
    info = {"select_seconds": time.time() - t0, "label_balanced": bool(self.config.selection.label_balanced)}
    return Selection(pool.train.ids[pos], info)


@register("entropy")
class Entropy(Selector):
  """Highest predictive entropy of a linear probe on embeddings trained on the validation split (not the target
  model: cheap, and it does not spend pool labels)."""
  config_sections = PROBE_FIELDS + ("selection.label_balanced",)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    params, mean, std = fit_probe(jnp.asarray(pool.validation.embeddings), jnp.asarray(pool.validation.labels),
                                  num_classes=pool.num_classes, steps=int(s.probe_steps),
                                  lr=float(s.probe_learning_rate), l2=float(s.probe_l2))
    ent = np.asarray(probe_entropy(params, mean, std, jnp.asarray(pool.train.embeddings)))
    # Ties (e.g. duplicate rows) broken by a seeded random order, so the choice depends on the key only.
    order = numpy_rng(key).permutation(ent.shape[0])
    pos = order[top_k_positions(ent[order], budget, pool.train.labels[order] if s.label_balanced else None)]
    info = {"select_seconds": time.time() - t0, "mean_entropy_pool": float(ent.mean()),
            "mean_entropy_selected": float(ent[pos].mean())}
    return Selection(pool.train.ids[pos], info)


@register("cluster_balanced")
class ClusterBalanced(Selector):
  """k-means over the pool embeddings, then an equal random take from every cluster. With selection.label_balanced,
  one global k-means still, but each label's quota (pool proportions) is spread equally over the clusters holding
  that label's examples."""
  config_sections = CLUSTER_FIELDS + ("selection.label_balanced",)
  version = 2  # 2: per-label quotas (2026-12-01)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    t0 = time.time()
    kcl, kpick = jax.random.split(key)
    assign, k = pool_clusters(kcl, pool, self.config)
    rng = numpy_rng(kpick)
    sizes = np.bincount(assign, minlength=k)
    labels = pool.train.labels
    if not self.config.selection.label_balanced:
      strata = [(np.arange(len(pool.train)), balanced_quotas(rng, sizes, budget))]
    else:
      classes, take = label_quotas(labels, budget)
      strata = []
      for c, t in zip(classes, take):
        rows = np.flatnonzero(labels == c)
        strata.append((rows, balanced_quotas(rng, np.bincount(assign[rows], minlength=k), int(t))))
    pos = np.concatenate([rng.choice(rows[assign[rows] == cl], size=q, replace=False)
                          for rows, quota in strata for cl, q in enumerate(quota) if q > 0])
    quota = sum(q for _, q in strata)  # per-cluster takes over all labels
    info = {"select_seconds": time.time() - t0, "clusters": k, "nonempty_clusters": int((sizes > 0).sum()),
            "min_take": int(quota[sizes > 0].min()), "max_take": int(quota.max()),
            "label_balanced": bool(self.config.selection.label_balanced)}
    return Selection(pool.train.ids[pos], info)
