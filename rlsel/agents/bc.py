"""Behaviour cloning of the cluster network: cross-entropy of its masked logits on demonstrated actions.

Demonstrations are `rlsel.selectors.climb.Demo` records (taken, step, action, valid), time-major, any leading batch; the
observation is rebuilt from (taken, step) as in the agents' replay. Used to warm-start PPO (`rl_ppo_warm`).
"""

import jax
import jax.numpy as jnp
import optax

from rlsel.agents import batch_obs, policy_logits


def _flat(demo):
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[demo.step.ndim:]), demo)


def loss_and_accuracy(hidden: int, params, env_params, demo, size_prior: float = 0.0):
  """(mean cross-entropy, greedy accuracy) over the valid steps of the demonstrations, of the policy logits with
  the agent's `size_prior` (so the clone is the policy PPO then continues from)."""
  d = _flat(demo)
  logits, _ = policy_logits(hidden, params, env_params, batch_obs(d.taken, d.step, env_params), size_prior)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), d.action[:, None], -1)[:, 0]
  w = d.valid.astype(jnp.float32)
  denom = jnp.maximum(w.sum(), 1.0)
  acc = jnp.sum((jnp.argmax(logits, -1) == d.action) * w) / denom
  return -jnp.sum(logp * w) / denom, acc


def fit(params, hidden: int, env_params, demo, steps: int, lr: float, max_grad_norm: float, size_prior: float = 0.0):
  """Full-batch Adam on the cloning loss from `params`; returns (params, {"loss", "accuracy"} after fitting)."""
  tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))

  def one(carry, _):
    p, opt = carry
    g = jax.grad(lambda q: loss_and_accuracy(hidden, q, env_params, demo, size_prior)[0])(p)
    upd, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, upd), opt), None

  (params, _), _ = jax.lax.scan(one, (params, tx.init(params)), None, length=steps)
  loss, acc = loss_and_accuracy(hidden, params, env_params, demo, size_prior)
  return params, {"loss": loss, "accuracy": acc}
