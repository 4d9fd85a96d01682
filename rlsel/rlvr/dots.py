"""DOTS: difficulty-targeted online data selection for GRPO.

A prompt's adaptive difficulty p is its group success rate under the current policy. Rolling out the whole pool to
measure it is what we want to avoid, so p is measured only on a small reference set (fresh rollouts every mu steps)
and carried to the rest of the pool by attention over frozen prompt embeddings: separate query and key MLPs,
p_hat(q) = sum_k softmax_k(z_q . z_k / sqrt(h)) y_k, trained leave-one-out on the reference set and then calibrated
with a 1-D logistic map. Prompts are drawn without replacement with P proportional to exp(-|p_hat - alpha| / tau).
The estimator's form and the sampler are `rlsel/difficulty.py`, shared with the selection track's `dots`; the query /
key MLPs and their leave-one-out BCE fit are this track's.
"""

from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rlsel import difficulty


class MLP(nn.Module):
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.out)(nn.gelu(nn.Dense(self.hidden)(x)))


class Estimator(NamedTuple):
  """A fitted difficulty estimator: MLP params, calibration (scale, shift), the reference set and its success rates."""
  params: dict        # {"query": ..., "key": ...}
  calibration: jax.Array  # [2]: p = sigmoid(a * logit(raw) + b)
  ref_emb: jax.Array  # [K, E]
  ref_y: jax.Array    # [K]


def init_params(key, emb_dim: int, hidden: int, out_dim: int) -> dict:
  kq, kk = jax.random.split(key)
  mlp = MLP(hidden, out_dim)
  x = jnp.zeros((1, emb_dim))
  return {"query": mlp.init(kq, x)["params"], "key": mlp.init(kk, x)["params"]}


def attention_estimate(params, query_emb, ref_emb, ref_y, hidden: int, out: int, exclude_self: bool = False):
  """Raw p_hat [N] = sum_k softmax_k(z_q . z_k / sqrt(h)) y_k; exclude_self masks the diagonal (N == K, leave-one-out)."""
  chex.assert_rank([query_emb, ref_emb, ref_y], [2, 2, 1])
  mlp = MLP(hidden, out)
  zq = mlp.apply({"params": params["query"]}, query_emb)
  zk = mlp.apply({"params": params["key"]}, ref_emb)
  return difficulty.attention(zq, zk, ref_y, exclude_self)


def _bce(p, y, eps):
  p = jnp.clip(p, eps, 1.0 - eps)
  return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def calibrate(calibration, raw, eps: float):
  return difficulty.calibrate(calibration, raw, eps)


def make_fit(d):
  """A jitted `fit(params, ref_emb, ref_y) -> Estimator`: `d.fit_steps` Adam steps of leave-one-out BCE on the
  reference set, then the same number of steps fitting the calibration on the leave-one-out predictions."""
  opt = optax.adam(d.fit_learning_rate)

  def loo_loss(params, emb, y):
    return _bce(attention_estimate(params, emb, emb, y, d.proj_hidden, d.proj_dim, exclude_self=True), y, d.prob_eps)

  def cal_loss(cal, raw, y):
    return _bce(calibrate(cal, raw, d.prob_eps), y, d.prob_eps)

  def descend(loss, x0, *args):
    def step(carry, _):
      x, s = carry
      l, g = jax.value_and_grad(loss)(x, *args)
      u, s = opt.update(g, s, x)
      return (optax.apply_updates(x, u), s), l
    (x, _), losses = jax.lax.scan(step, (x0, opt.init(x0)), None, length=d.fit_steps)
    return x, losses

  @jax.jit
  def fit(params, ref_emb, ref_y):
    params, _ = descend(loo_loss, params, ref_emb, ref_y)
    raw = attention_estimate(params, ref_emb, ref_emb, ref_y, d.proj_hidden, d.proj_dim, exclude_self=True)
    cal, _ = descend(cal_loss, jnp.array([1.0, 0.0]), raw, ref_y)
    return Estimator(params, cal, ref_emb, ref_y)

  return fit


def make_predict(d):
  """A jitted `predict(estimator, emb [N, E]) -> calibrated p_hat [N]`."""

  @jax.jit
  def predict(est: Estimator, emb):
    raw = attention_estimate(est.params, emb, est.ref_emb, est.ref_y, d.proj_hidden, d.proj_dim)
    return calibrate(est.calibration, raw, d.prob_eps)

  return predict


selection_logits = difficulty.selection_logits


def select(key, p_hat, n: int, alpha: float, tau: float):
  """n distinct prompt indices drawn with P proportional to exp(-|p_hat - alpha| / tau), without replacement
  (`rlsel.difficulty.sample`)."""
  return difficulty.sample(key, p_hat, n, alpha, tau)


def standardise(emb, mean=None, std=None, eps: float = 1e-6):
  """Embeddings with zero mean / unit variance per feature (statistics of the pool unless given)."""
  mean = jnp.mean(emb, axis=0) if mean is None else mean
  std = jnp.std(emb, axis=0) if std is None else std
  return (emb - mean) / (std + eps)
