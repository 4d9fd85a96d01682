"""A real pool -> the environment: reward split, standardised features, k-means clusters, initial proxy, EnvParams.

`build_env` is what every selector on the environment (rl_*, climb, rl_ppo_warm) and the benchmarks that rebuild it
(proxy_fidelity, throughput, memory) call, so they all see the same reward split and clusters for a key.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel import kmeans as kmeans_lib
from rlsel import proxy as proxy_lib
from rlsel.data.splits import stratified_fractions
from rlsel.env.rewards import proxy_reward
from rlsel.errors import require
from rlsel.selectors.basic import label_quotas, numpy_rng, stratified_sample

_STD_EPS = 1e-6  # added to per-dimension std before dividing (constant dimensions)
# rl.within_order: the order a cluster hands out its rows ("confident": `label_confidence`, highest first).
WITHIN_ORDERS = ("random", "confident")
# Config fields a selector on the environment reads (its cell identity): the environment's sections, plus the
# out-of-fold probe behind rl.within_order="confident" and rl.confident_pool, and the confident-learning flags behind
# rl.drop_label_issues and rl.confident_pool_noise_scale.
ENV_SECTIONS = ("kmeans", "proxy", "rl", "selection.probe_steps", "selection.probe_learning_rate",
                "selection.probe_l2", "selection.probe_folds", "selection.clean_filter_by")


def confident_pool_size(n: int, multiple: float, budget: int, noise_scale: float = 0.0,
                        flagged_share: float = 0.0) -> int:
  """Rows rl.confident_pool keeps of `n`: ceil(`multiple` x `budget`), or more where the pool looks clean,
  floor((1 - `noise_scale` x `flagged_share`) x n) (rl.confident_pool_noise_scale; `flagged_share` is the share
  confident learning flags); never more than `n`. A fixed multiple of the budget suits heavy noise but on a
  clean-looking pool keeps only prototypical rows, which teach a target little."""
  keep = int(np.ceil(float(multiple) * budget))
  if noise_scale > 0:
    keep = max(keep, int(np.floor((1.0 - float(noise_scale) * float(flagged_share)) * n)))
  return min(n, keep)


def confident_subset(labels: np.ndarray, confidence: np.ndarray, multiple: float, budget: int,
                     size: int = None) -> np.ndarray:
  """Sorted positions of the ceil(`multiple` * `budget`) rows (`size` rows if given; all rows if fewer) of highest
  `confidence`, each class in its share of `labels` (`coverage.confident_positions`): rl.confident_pool's
  selectable rows."""
  from rlsel.selectors import coverage
  labels = np.asarray(labels)
  n = int(np.ceil(float(multiple) * budget)) if size is None else int(size)
  n = min(labels.shape[0], n)
  return np.sort(coverage.confident_positions(labels, np.zeros(labels.shape[0], bool), confidence, n))


def standardise(x: np.ndarray, reference: np.ndarray = None) -> np.ndarray:
  """Per-dimension z-scores over sqrt(d) (rows of norm ~1): the proxy trains at one learning rate without blowing up.
  The mean and std are `reference`'s (default: `x`'s own; e.g. the pool's, to put test rows in the proxy's space).
  float32, built in place in one copy of `x` (pools of millions of rows)."""
  x = np.asarray(x, np.float32)
  ref = x if reference is None else np.asarray(reference, np.float32)
  out = x - ref.mean(0)
  out /= ref.std(0) + _STD_EPS
  out /= np.sqrt(x.shape[1])
  return out


def pca(x: np.ndarray, dim: int, *others: np.ndarray):
  """Projection on the top `dim` principal components of `x` (from the d x d covariance; no n x n array); `others`
  (e.g. held-out rows) are projected on the same components, and then the result is a tuple (x's first)."""
  mean = x.mean(0)
  xc = x - mean
  _, vecs = np.linalg.eigh(xc.T @ xc)
  basis = vecs[:, ::-1][:, :dim]
  out = tuple(((a - mean) @ basis).astype(np.float32) for a in (x,) + others)
  return out if others else out[0]


def split_reward(rng: np.random.Generator, config, labels: np.ndarray) -> tuple:
  """(selectable positions, reward-split positions) of a pool: a stratified `proxy.reward_fraction` carved out as
  the reward split, drawn from `rng` (build_env's, so callers that rebuild the environment see the same split)."""
  frac = float(config.proxy.reward_fraction)
  require(0.0 < frac < 1.0, f"proxy.reward_fraction={frac} must be in (0, 1), e.g. --config.proxy.reward_fraction=0.2")
  selectable, reward = stratified_fractions(np.asarray(labels, np.int32), (frac,), int(rng.integers(2**31)))
  require(reward.shape[0] > 0, "the reward split is empty; raise --config.proxy.reward_fraction")
  return selectable, reward


def label_confidence(key, config, embeddings: np.ndarray, labels: np.ndarray, num_classes: int):
  """(each row's out-of-fold linear-probe probability of its given label [n], the probe's probabilities [n, C])
  (`coverage.configured_oof_probs`): low where the label disagrees with what its neighbours' labels predict."""
  from rlsel.selectors import coverage
  probs = coverage.configured_oof_probs(key, config, embeddings, labels, num_classes)
  return probs[np.arange(labels.shape[0]), labels], probs


def trusted_reward_rows(config, embeddings: np.ndarray, labels: np.ndarray, selectable: np.ndarray,
                        reward: np.ndarray, num_classes: int) -> np.ndarray:
  """The reward split's positions that proxy.reward_trusted keeps: each class's share of the rows a linear probe fit
  on the selectable rows (selection.probe_* settings) gives the highest probability of their given label. On a noisy
  pool a reward split with wrong labels pays a proxy for hedging (log-loss) rather than for being right."""
  from rlsel.selectors import heuristics
  s = config.selection
  params, mean, std = heuristics.fit_probe(jnp.asarray(embeddings[selectable]), jnp.asarray(labels[selectable]),
                                           num_classes=num_classes, steps=int(s.probe_steps),
                                           lr=float(s.probe_learning_rate), l2=float(s.probe_l2))
  logp = np.asarray(heuristics.probe_log_probs(params, mean, std, jnp.asarray(embeddings[reward])))
  confidence = logp[np.arange(reward.shape[0]), labels[reward]]
  keep = confident_subset(labels[reward], confidence, float(config.proxy.reward_trusted), reward.shape[0])
  return reward[keep]


def split_pick(key, config, labels: np.ndarray, reward: np.ndarray) -> tuple:
  """(reward rows, pick rows): `proxy.pick_share` of the reward split's positions (stratified by label, drawn from
  its own key so the environment's other draws do not move) set aside to judge the final pick only. An agent that
  maximises its reward overfits the rows it is scored on; candidates judged on rows no episode was scored on are not
  biased by that search. Share 0: (reward, None)."""
  share = float(config.proxy.pick_share)
  require(0 <= share < 1, f"proxy.pick_share={share} must be in [0, 1), e.g. --config.proxy.pick_share=0.5")
  if share == 0:
    return reward, None
  seed = int(numpy_rng(jax.random.fold_in(key, 2)).integers(2**31))
  keep, pick = stratified_fractions(np.asarray(labels)[reward], (share,), seed)
  require(keep.shape[0] > 0 and pick.shape[0] > 0, f"proxy.pick_share={share} leaves the reward split of "
          f"{reward.shape[0]} rows empty on one side; raise --config.proxy.reward_fraction or change the share")
  return reward[keep], reward[pick]


class HeldOut(NamedTuple):
  """Rows outside the pool that can serve as the reward split (proxy.reward_source="validation"): the validation
  split's embeddings [m, d], labels [m] and, for the transformer proxy, tokens [m, L] (pad 0)."""
  embeddings: np.ndarray
  labels: np.ndarray
  tokens: Optional[np.ndarray] = None


def build_pool_env(key, config, pool, budget: int):
  """`build_env` on a selector's `Pool` (rlsel.selectors.base): its training split is the pool, and its validation
  split is the reward split when proxy.reward_source="validation"."""
  held = None
  if str(config.proxy.reward_source) == "validation":
    v = pool.validation
    require(v is not None and len(v) > 0, "proxy.reward_source='validation' needs a validation split; this task has "
            "none (use --config.proxy.reward_source=pool)")
    held = HeldOut(embeddings=v.embeddings, labels=v.labels, tokens=v.input_ids)
  return build_env(key, config, pool.train.embeddings, pool.train.labels, pool.num_classes, budget,
                   tokens=pool.train.input_ids, held_out=held)


def coverage_base(assign: np.ndarray, num_clusters: int, n: int) -> np.ndarray:
  """[C] counts of `n` examples shared over the clusters in proportion to their sizes (`label_quotas`' largest
  remainder over the cluster ids): the take of a cluster-stratified random sample, which `rl.coverage_share` starts
  every episode from (`rlsel.env.make_params(base=...)`)."""
  assign = np.asarray(assign, np.int64)
  if not 0 <= n <= assign.shape[0]:
    raise ValueError(f"a coverage base of {n} examples must lie between 0 and the pool's {assign.shape[0]} rows")
  base = np.zeros(num_clusters, np.int64)
  clusters, take = label_quotas(assign, n)
  base[clusters] = take
  return base


def build_env(key, config, embeddings: np.ndarray, labels: np.ndarray, num_classes: int, budget: int,
              tokens: np.ndarray = None, held_out: HeldOut = None):
  """Reward split, clusters, initial proxy and EnvParams for a pool. Returns (env_params, selectable positions,
  the random budget-sized sample behind the initial proxy). The reward split is a stratified share of the pool
  (proxy.reward_source="pool") or `held_out` ("validation"; every pool row is then selectable, and the held-out rows
  are put in the pool's feature space). With rl.drop_label_issues the rows confident learning flags as likely
  mislabelled (`label_clean`'s confident learning with the same probe settings) are not selectable. With
  rl.confident_pool = m > 0 only the m x budget rows the out-of-fold probe is surest carry their given label
  (`confident_subset`) are selectable, or with rl.confident_pool_noise_scale more where confident learning flags
  few rows (`confident_pool_size`); with proxy.reward_trusted < 1 the reward split keeps its most trusted rows
  (`trusted_reward_rows`), and with proxy.pick_share > 0 hands a share of it to `EnvParams.pick` (`split_pick`).
  With rl.label_quotas every episode keeps the pool's label proportions (label-stratified
  clusters). With rl.coverage_share = s > 0 every episode starts from s x budget rows taken in proportion to the
  cluster sizes (`coverage_base`), and the chunk is sized for the rest. `tokens` [n, L] (pad 0): needed by the
  transformer proxy, which trains on them; clusters always come from the embeddings."""
  labels = np.asarray(labels, np.int32)
  rng = numpy_rng(key)
  source = str(config.proxy.reward_source)
  require(source in proxy_lib.REWARD_SOURCES,
          f"proxy.reward_source={source!r} must be one of {', '.join(proxy_lib.REWARD_SOURCES)}")
  if source == "validation":
    require(held_out is not None, "proxy.reward_source='validation' needs the validation split; this caller passes "
            "the pool only")
    selectable, reward = np.arange(labels.shape[0]), None
  else:
    selectable, reward = split_reward(rng, config, labels)
  require(budget <= selectable.shape[0],
          f"the budget of {budget} examples exceeds the {selectable.shape[0]} selectable examples (the reward split "
          f"holds {0 if reward is None else reward.shape[0]}); lower --config.budget or --config.proxy.reward_fraction")
  trusted = float(config.proxy.reward_trusted)
  require(0 < trusted <= 1, f"proxy.reward_trusted={trusted} must be in (0, 1], e.g. --config.proxy.reward_trusted=0.5")
  require(reward is not None or trusted == 1, f"proxy.reward_trusted={trusted} thins a reward split carved from the "
          "pool; with proxy.reward_source='validation' leave it at 1")
  if trusted < 1:
    reward = trusted_reward_rows(config, np.asarray(embeddings), labels, selectable, reward, num_classes)
  require(reward is not None or float(config.proxy.pick_share) == 0, f"proxy.pick_share={config.proxy.pick_share} "
          "splits a reward split carved from the pool; with proxy.reward_source='validation' leave it at 0")
  picked = None
  if reward is not None:
    reward, picked = split_pick(key, config, labels, reward)
  order = str(config.rl.within_order)
  require(order in WITHIN_ORDERS, f"rl.within_order={order!r} must be one of {', '.join(WITHIN_ORDERS)}")
  multiple = float(config.rl.confident_pool)
  require(multiple == 0 or multiple >= 1, f"rl.confident_pool={multiple} must be 0 (off) or >= 1 (a multiple of the "
          "budget), e.g. --config.rl.confident_pool=2")
  scale = float(config.rl.confident_pool_noise_scale)
  require(scale >= 0, f"rl.confident_pool_noise_scale={scale} must be >= 0 (0 = off), e.g. 3")
  require(scale == 0 or multiple > 0, f"rl.confident_pool_noise_scale={scale} sizes rl.confident_pool, which is off; "
          "add --config.rl.confident_pool=4 or drop the scale")
  drop = bool(config.rl.drop_label_issues)
  priority, flagged_share = None, 0.0
  if order == "confident" or multiple > 0 or drop:  # its own key: the other draws of the environment are unchanged
    priority, probs = label_confidence(jax.random.fold_in(key, 1), config, np.asarray(embeddings)[selectable],
                                       labels[selectable], num_classes)
  if drop or scale > 0:
    from rlsel.selectors.coverage import label_issues
    who = "rl.drop_label_issues" if drop else "rl.confident_pool_noise_scale"
    flags = label_issues(labels[selectable], probs, str(config.selection.clean_filter_by), who)
    flagged_share = float(flags.mean())
  candidates = selectable.shape[0]  # before the drop: the scaled pool is a share of every row outside the reward split
  if drop:
    clean = ~flags
    require(budget <= int(clean.sum()), f"the budget of {budget} examples exceeds the {int(clean.sum())} selectable "
            "examples confident learning does not flag; lower --config.budget or drop --config.rl.drop_label_issues")
    selectable, priority = selectable[clean], priority[clean]
  if multiple > 0:
    size = confident_pool_size(candidates, multiple, budget, scale, flagged_share)
    keep = confident_subset(labels[selectable], priority, multiple, budget, size)
    selectable, priority = selectable[keep], priority[keep]
  x = standardise(embeddings)
  hx = None if reward is not None else standardise(held_out.embeddings, reference=embeddings)
  dim = int(config.proxy.pca_dim)
  require(dim >= 0, f"proxy.pca_dim={dim} must be >= 0 (0 = no projection)")
  if 0 < dim < x.shape[1]:
    if hx is None:
      x = standardise(pca(x, dim))
    else:
      x, hx = pca(x, dim, hx)
      x, hx = standardise(x), standardise(hx, reference=x)
  sx, sy = jnp.asarray(x[selectable]), labels[selectable]
  rx = jnp.asarray(x[reward]) if reward is not None else jnp.asarray(hx)
  pick_x = None if picked is None else jnp.asarray(x[picked])
  ry = labels[reward] if reward is not None else np.asarray(held_out.labels, np.int32)
  del x, hx  # from here on only the device copies (shared by k-means and the proxy) hold the pool
  spec = proxy_lib.spec_from_config(config, num_classes)
  px, prx = sx, rx
  if spec.kind == "transformer":
    require(tokens is not None, "proxy.kind='transformer' needs the pool's tokens; this caller passes embeddings only")
    tokens = np.asarray(tokens, np.int32)
    px = jnp.asarray(tokens[selectable])
    if reward is not None:
      prx = jnp.asarray(tokens[reward])
      pick_x = None if picked is None else jnp.asarray(tokens[picked])
    else:
      require(held_out.tokens is not None, "proxy.kind='transformer' needs the validation split's tokens")
      prx = jnp.asarray(np.asarray(held_out.tokens, np.int32))
  k_km, k_init, k_fit = jax.random.split(key, 3)

  k = int(min(int(config.kmeans.num_clusters), selectable.shape[0]))
  require(k >= 1, f"kmeans.num_clusters={config.kmeans.num_clusters} must be positive")
  if config.kmeans.stratified:
    cents, assign = kmeans_lib.stratified_kmeans(k_km, np.asarray(sx), sy, k, int(config.kmeans.iters),
                                                 int(config.kmeans.batch_size))
  else:
    cents, assign = kmeans_lib.kmeans(k_km, sx, k, int(config.kmeans.iters), int(config.kmeans.batch_size))
  cents, assign = kmeans_lib.compact(np.asarray(assign), np.asarray(cents))

  data = proxy_lib.ProxyData(x=px, y=jnp.asarray(sy), rx=prx, ry=jnp.asarray(ry),
                             init_params=proxy_lib.init_params(k_init, spec, px.shape[1]))
  sample = stratified_sample(rng, sy, budget)
  init = proxy_lib.fit_initial(k_fit, spec, data, sample, int(config.proxy.init_steps))
  loss, ent = proxy_lib.loss_and_entropy(spec, init, data.x, data.y)
  feats = kmeans_lib.cluster_features(assign, cents, sy, num_classes, np.asarray(loss), np.asarray(ent))
  share = float(config.rl.coverage_share)
  base = coverage_base(assign, feats.shape[0], int(round(share * budget))) if share > 0 else None
  spend = budget - (0 if base is None else int(base.sum()))  # what the actions choose
  chunk, whole = env_lib.resolve_chunk(config.rl.chunk, spend, config.rl.episode_steps)
  quota = None
  if bool(config.rl.label_quotas):  # the whole pool's label proportions, as the stratified baselines keep
    classes, take = label_quotas(labels, budget)
    quota = np.zeros(num_classes, np.int64)
    quota[classes] = take
  params = env_lib.make_params(feats=feats, assign=assign, budget=budget, chunk=chunk, whole=whole,
                               reward=proxy_reward(config.proxy), timing=str(config.proxy.reward_timing),
                               proxy_spec=spec, proxy_data=data, priority=priority if order == "confident" else None,
                               labels=None if quota is None else sy, quota=quota, base=base)
  if picked is not None:
    params = params.replace(pick=data.replace(rx=pick_x, ry=jnp.asarray(labels[picked])))
  return params, selectable, sample
