"""DOTS-style selection at adaptive difficulty: prefer examples the warmed model gets right about half the time.

Difficulty of an example = the warmed model's probability of its correct label, p. It is measured on a small reference
subset of the pool and estimated for the rest by attention over the reference set in the frozen-embedding space:
p_hat(q) = sum_k softmax_k(z_q . z_k / sqrt(h)) y_k, with separate query and key MLPs trained leave-one-out on the
reference set by binary cross-entropy against the measured p (as the reference implementation), then Platt-calibrated
on the leave-one-out predictions. The budget is sampled without replacement with P ~ exp(-|p_hat - alpha| / tau) by
Gumbel top-k, at the reference's tau = 1e-3 by default (`selection.dots_tau`): nearly the budget closest to alpha;
under `selection.label_balanced` (the default) within each label's share of the budget, as LESS, LearnAlign and CROPI
take their top (unbalanced, seed 0 of `bbc` drew 4 of its 85 examples from a class holding 24% of the pool). A
held-out part of the reference set measures the estimator. The estimator's form and the sampler are
`rlsel/difficulty.py`, shared with the RLVR track.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlsel import difficulty
from rlsel.selectors import gradients
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register
from rlsel.selectors.basic import numpy_rng
from rlsel.stats import pearson

_EPS = 1e-6  # keeps probabilities away from 0/1 before a logit


def init_estimator(key, emb_dim: int, hidden: int) -> dict:
  """Query and key MLPs (emb -> hidden -> hidden), LeCun-normal weights."""
  def mlp(k):
    k1, k2 = jax.random.split(k)
    return {"w1": jax.random.normal(k1, (emb_dim, hidden)) / np.sqrt(emb_dim), "b1": jnp.zeros((hidden,)),
            "w2": jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden), "b2": jnp.zeros((hidden,))}
  kq, kk = jax.random.split(key)
  return {"query": mlp(kq), "key": mlp(kk), "platt": jnp.array([1.0, 0.0])}


def _mlp(p, x):
  return jax.nn.gelu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def attention_predict(params: dict, queries: jax.Array, keys: jax.Array, y_keys: jax.Array,
                      leave_one_out: bool = False) -> jax.Array:
  """p_hat [nq] = attention-weighted mean of the keys' values y_keys [nk] (`rlsel.difficulty.attention`);
  leave_one_out masks the diagonal (queries == keys)."""
  return difficulty.attention(_mlp(params["query"], queries), _mlp(params["key"], keys), y_keys, leave_one_out)


def calibrate(params: dict, p_hat: jax.Array) -> jax.Array:
  """Platt scaling: sigmoid(a logit(p_hat) + b)."""
  return difficulty.calibrate(params["platt"], p_hat, _EPS)


def soft_bce(p: jax.Array, target: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of probabilities p against soft targets in [0, 1]."""
  p = jnp.clip(p, _EPS, 1.0 - _EPS)
  return -jnp.mean(target * jnp.log(p) + (1.0 - target) * jnp.log1p(-p))


@functools.partial(jax.jit, static_argnames=("hidden", "steps", "lr", "cal_steps", "cal_lr"))
def fit_estimator(key, ref_emb: jax.Array, ref_y: jax.Array, *, hidden: int, steps: int, lr: float, cal_steps: int,
                  cal_lr: float) -> dict:
  """Trains the query/key MLPs on the leave-one-out binary cross-entropy (soft targets: the measured p) over the
  reference set, then fits Platt's (a, b) on the leave-one-out predictions the same way. One jitted program (two
  lax.scans)."""
  params = init_estimator(key, ref_emb.shape[-1], hidden)
  mlps = {"query": params["query"], "key": params["key"]}

  def loss(m):
    p = attention_predict({**m, "platt": params["platt"]}, ref_emb, ref_emb, ref_y, leave_one_out=True)
    return soft_bce(p, ref_y)
  opt = optax.adam(lr)

  def step(carry, _):
    m, s = carry
    g = jax.grad(loss)(m)
    u, s = opt.update(g, s, m)
    return (optax.apply_updates(m, u), s), None
  (mlps, _), _ = jax.lax.scan(step, (mlps, opt.init(mlps)), None, length=steps)

  loo = attention_predict({**mlps, "platt": params["platt"]}, ref_emb, ref_emb, ref_y, leave_one_out=True)

  def cal_loss(platt):
    return soft_bce(calibrate({"platt": platt}, loo), ref_y)
  copt = optax.adam(cal_lr)

  def cal_step(carry, _):
    pl, s = carry
    u, s = copt.update(jax.grad(cal_loss)(pl), s, pl)
    return (optax.apply_updates(pl, u), s), None
  (platt, _), _ = jax.lax.scan(cal_step, (params["platt"], copt.init(params["platt"])), None, length=cal_steps)
  return {**mlps, "platt": platt}


def dots_sample(key, p_hat: jax.Array, k: int, alpha: float, tau: float, labels=None) -> np.ndarray:
  """k positions without replacement with P ~ exp(-|p_hat - alpha| / tau) (`rlsel.difficulty.sample`); with
  `labels`, the same draw within each label's share of k (the pool's proportions, `top_k_positions`), as the other
  score-based selectors take their top (sorted positions)."""
  if labels is None:
    return np.asarray(difficulty.sample(key, p_hat, k, alpha, tau))
  return gradients.top_k_positions(np.asarray(difficulty.gumbel_keys(key, p_hat, alpha, tau)), k, labels)


@register("dots")
class Dots(gradients.WarmedSelector, Selector):
  """Gumbel top-k sampling around p_hat = alpha, p_hat from an attention estimator fit on a measured reference set."""
  # 3: estimator fit by BCE, tau 1e-3, 512 reference examples, as the reference (2026-12-02); 4: the draw within each
  # label's share of the budget under selection.label_balanced (2026-12-07)
  version = 4

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    _, kref, kfit, ksample = jax.random.split(key, 4)
    warm = self.warm_up(key, pool)
    fns, ckpts, warm_pos = warm.fns, warm.checkpoints, warm.positions
    t1 = time.time()
    n = len(pool.train)
    candidates = np.setdiff1d(np.arange(n), warm_pos)
    if candidates.shape[0] < 4:
      candidates = np.arange(n)
    ref = numpy_rng(kref).permutation(candidates)[:int(s.dots_reference_size)]
    n_hold = int(round(float(s.dots_holdout_fraction) * ref.shape[0]))
    n_hold = min(max(n_hold, 0), ref.shape[0] - 2)
    fit_pos, hold_pos = np.sort(ref[n_hold:]), np.sort(ref[:n_hold])
    probs = gradients.predict_proba(fns, ckpts[-1].params, pool.train.take(ref), int(s.eval_batch_size),
                                    int(self.config.features.length_multiple))
    measured = np.zeros(n, np.float32)
    measured[ref] = probs[np.arange(ref.shape[0]), pool.train.labels[ref]]
    correct = np.zeros(n, bool)
    correct[ref] = probs.argmax(-1) == pool.train.labels[ref]
    t2 = time.time()

    emb = pool.train.embeddings
    mean, std = emb[fit_pos].mean(0), emb[fit_pos].std(0) + 1e-6
    z = jnp.asarray((emb - mean) / std, jnp.float32)
    y_fit = jnp.asarray(measured[fit_pos])
    est = fit_estimator(kfit, z[fit_pos], y_fit, hidden=int(s.estimator_hidden), steps=int(s.estimator_steps),
                        lr=float(s.estimator_learning_rate), cal_steps=int(s.calibration_steps),
                        cal_lr=float(s.calibration_learning_rate))
    predict = jax.jit(lambda q: calibrate(est, attention_predict(est, q, z[fit_pos], y_fit)))
    p_hat = np.asarray(predict(z))
    t3 = time.time()
    info = {"warmup_seconds": t1 - t0, "reference_seconds": t2 - t1, "estimator_seconds": t3 - t2,
            "reference_size": int(ref.shape[0]), "heldout_size": int(n_hold),
            "platt_a": float(est["platt"][0]), "platt_b": float(est["platt"][1]),
            "mean_p_reference": float(measured[ref].mean())}
    if n_hold:
      info["heldout_corr_p"] = pearson(p_hat[hold_pos], measured[hold_pos])
      info["heldout_corr_correct"] = pearson(p_hat[hold_pos], correct[hold_pos])
      info["heldout_mae"] = float(np.mean(np.abs(p_hat[hold_pos] - measured[hold_pos])))
    p_use = p_hat.copy()
    p_use[ref] = measured[ref]  # measured beats estimated where we have it
    pos = dots_sample(ksample, jnp.asarray(p_use), budget, float(s.dots_alpha), float(s.dots_tau),
                      pool.train.labels if s.label_balanced else None)
    info.update(sample_seconds=time.time() - t3, mean_p_hat_pool=float(p_use.mean()),
                mean_p_hat_selected=float(p_use[pos].mean()),
                mean_abs_gap_selected=float(np.abs(p_use[pos] - float(s.dots_alpha)).mean()))
    info = dict(info, warmup_reused=warm.reused)
    return Selection(pool.train.ids[pos], info)
