"""RL losses as small pure functions (each tested on its own in tests/test_agents.py)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp


def gae(rewards, values, dones, last_value, gamma: float, lam: float):
  """Generalised advantage estimation over time-major arrays [T, ...]; returns (advantages, value targets).

  `dones[t]` is True when the episode ended at step t (no bootstrap from the next value).
  """
  def back(carry, x):
    adv_next, v_next = carry
    r, v, d = x
    nonterm = 1.0 - d.astype(jnp.float32)
    delta = r + gamma * v_next * nonterm - v
    adv = delta + gamma * lam * nonterm * adv_next
    return (adv, v), adv

  _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True)
  return adv, adv + values


def returns_to_go(rewards, dones, gamma: float):
  """Discounted returns [T, ...] restarting after each done."""
  def back(g_next, x):
    r, d = x
    g = r + gamma * g_next * (1.0 - d.astype(jnp.float32))
    return g, g

  _, g = jax.lax.scan(back, jnp.zeros_like(rewards[0]), (rewards, dones), reverse=True)
  return g


class PPOLossInfo(NamedTuple):
  policy: jnp.ndarray
  value: jnp.ndarray
  entropy: jnp.ndarray
  approx_kl: jnp.ndarray
  clip_frac: jnp.ndarray


def _wmean(x, w):
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def ppo_loss(logp, old_logp, adv, value, old_value, target, entropy, weight, clip_eps: float, vf_coef: float,
             ent_coef: float):
  """Clipped PPO objective with a clipped value loss and an entropy bonus; `weight` masks padded steps.

  total = -mean(min(r A, clip(r, 1-eps, 1+eps) A)) + vf_coef * 0.5 * mean(max((V-T)^2, (V_clip-T)^2))
          - ent_coef * mean(H), with r = exp(logp - old_logp).
  """
  ratio = jnp.exp(logp - old_logp)
  pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
  v_clip = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
  vl = 0.5 * jnp.maximum((value - target) ** 2, (v_clip - target) ** 2)
  pol, val, ent = _wmean(pg, weight), _wmean(vl, weight), _wmean(entropy, weight)
  total = pol + vf_coef * val - ent_coef * ent
  info = PPOLossInfo(pol, val, ent, _wmean(old_logp - logp, weight),
                     _wmean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), weight))
  return total, info


def masked_entropy(logits):
  """Entropy of a categorical given masked logits (masked entries have ~zero probability)."""
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


def normalise(adv, weight):
  mu = _wmean(adv, weight)
  sd = jnp.sqrt(_wmean((adv - mu) ** 2, weight))
  return (adv - mu) / (sd + 1e-8)
