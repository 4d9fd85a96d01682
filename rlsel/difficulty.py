"""DOTS' difficulty estimator and sampler, shared by both tracks (`rlsel/selectors/dots.py`, `rlsel/rlvr/dots.py`).

A difficulty p (the warmed classifier's chance of the right label; a prompt's group success rate) is measured on a
reference set and carried to the rest of the pool by attention in an embedding space: p_hat(q) = sum_k
softmax_k(z_q . z_k / sqrt(h)) y_k, with z from a query and a key network that each track fits to its own kind of
target (leave-one-out on the reference set), then calibrated by a 1-D logistic map. The budget is drawn without
replacement with P proportional to exp(-|p_hat - alpha| / tau) (Gumbel top-k). The embedding networks and their losses
stay with each track; the estimator's form and the sampler live here once.
"""

import chex
import jax
import jax.numpy as jnp


def attention(zq: jax.Array, zk: jax.Array, y_keys: jax.Array, exclude_self: bool = False) -> jax.Array:
  """p_hat [nq] = attention-weighted mean of the keys' values y_keys [nk] from query / key embeddings zq [nq, h],
  zk [nk, h]; `exclude_self` masks the diagonal (queries are the keys: leave-one-out)."""
  chex.assert_rank([zq, zk, y_keys], [2, 2, 1])
  logits = zq @ zk.T / jnp.sqrt(jnp.float32(zq.shape[-1]))
  if exclude_self:
    logits = jnp.where(jnp.eye(logits.shape[0], dtype=bool), -jnp.inf, logits)
  return jax.nn.softmax(logits, axis=-1) @ y_keys


def logit(p: jax.Array, eps: float) -> jax.Array:
  p = jnp.clip(p, eps, 1.0 - eps)
  return jnp.log(p) - jnp.log1p(-p)


def calibrate(scale_shift: jax.Array, p_raw: jax.Array, eps: float) -> jax.Array:
  """The 1-D logistic calibration sigmoid(a logit(p_raw) + b), (a, b) = scale_shift."""
  return jax.nn.sigmoid(scale_shift[0] * logit(p_raw, eps) + scale_shift[1])


def selection_logits(p_hat: jax.Array, alpha: float, tau: float) -> jax.Array:
  """Log of the unnormalised sampling weight exp(-|p_hat - alpha| / tau)."""
  return -jnp.abs(p_hat - alpha) / tau


def gumbel_keys(key, p_hat: jax.Array, alpha: float, tau: float) -> jax.Array:
  """Perturbed log-weights [n]: the top k of any subset of rows is a draw without replacement from that subset with
  P proportional to exp(-|p_hat - alpha| / tau) (Gumbel top-k), e.g. within each label's share of the budget."""
  return selection_logits(p_hat, alpha, tau) + jax.random.gumbel(key, p_hat.shape)


def sample(key, p_hat: jax.Array, k: int, alpha: float, tau: float) -> jax.Array:
  """k distinct positions drawn with P proportional to exp(-|p_hat - alpha| / tau), without replacement (Gumbel
  top-k, which is exactly sequential sampling without replacement)."""
  return jax.lax.top_k(gumbel_keys(key, p_hat, alpha, tau), k)[1]
