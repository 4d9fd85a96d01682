"""REINFORCE with a learned baseline (the network's value head): `make_train(config, env_params) -> train(rng)`.

Each update rolls out `num_envs` episodes, then takes one Adam step on
-mean(logp * (G - V)) + vf_coef * mean((V - G)^2) - ent_coef * mean(H), with G the returns-to-go.
"""

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlsel import env as env_lib
from rlsel.agents import (TrainProgram, batch_obs, finish_best, greedy_evals, greedy_every, greedy_metric, init_best,
                          losses, networks, policy_logits, progress, rollout, sample_policy, track_best)


@struct.dataclass
class ReinforceState:
  """REINFORCE's train state between updates (checkpointed whole; field order is the checkpoint's leaf order)."""
  params: dict
  opt_state: object
  best_score: jax.Array
  best_mask: jax.Array
  rng: jax.Array


def make_train(config, env_params: env_lib.EnvParams, name: str = "rl_reinforce", sharding=None) -> TrainProgram:
  rl_cfg = config.rl
  num_envs, horizon, num_updates = int(rl_cfg.num_envs), env_params.max_steps, int(rl_cfg.num_updates)
  hidden, scale, prior = int(rl_cfg.hidden), float(rl_cfg.reward_scale), float(rl_cfg.size_prior)
  tx = optax.chain(optax.clip_by_global_norm(rl_cfg.max_grad_norm), optax.adam(rl_cfg.learning_rate))
  report = progress(name, int(rl_cfg.log_every))
  every = greedy_every(rl_cfg, num_updates)

  def loss_fn(params, tr, ret):
    logits, value = policy_logits(hidden, params, env_params, batch_obs(tr.taken, tr.step, env_params), prior)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tr.action[:, None], -1)[:, 0]
    w = tr.valid.astype(jnp.float32)
    adv = losses.normalise(ret - jax.lax.stop_gradient(value), w)
    n = jnp.maximum(w.sum(), 1.0)
    pg = -jnp.sum(w * logp * adv) / n
    vl = jnp.sum(w * (value - ret) ** 2) / n
    ent = jnp.sum(w * losses.masked_entropy(logits)) / n
    return pg + rl_cfg.vf_coef * vl - rl_cfg.ent_coef * ent, ent

  def init(rng):
    rng, k_init = jax.random.split(rng)
    obs0 = env_lib.observe(jnp.zeros_like(env_params.sizes), jnp.zeros((), jnp.int32), env_params)
    params = networks.init(k_init, hidden, env_params.feats, obs0)
    best_score, best_mask = init_best(int(rl_cfg.keep_best), env_params.num_rows)
    return ReinforceState(params=params, opt_state=tx.init(params), best_score=best_score, best_mask=best_mask,
                          rng=rng)

  def segment(carry, updates):
    def update(state: ReinforceState, u):
      params, opt, best_score, best_mask, rng = (state.params, state.opt_state, state.best_score, state.best_mask,
                                                 state.rng)
      rng, k_roll = jax.random.split(rng)
      traj, final = rollout(k_roll, sample_policy(hidden, params, env_params, prior), env_params, num_envs,
                            sharding)
      best_score, best_mask = track_best(best_score, best_mask, final, jnp.array(True))
      ret = losses.returns_to_go(traj.reward * scale, traj.done, rl_cfg.gamma)
      flat = jax.tree.map(lambda x: x.reshape((horizon * num_envs,) + x.shape[2:]), (traj, ret))
      (loss, ent), g = jax.value_and_grad(loss_fn, has_aux=True)(params, *flat)
      upd, opt = tx.update(g, opt, params)
      params = optax.apply_updates(params, upd)
      total = traj.reward.sum(0)
      metrics = {"mean_return": total.mean(), "max_return": total.max(), "final_score": final.score.mean(),
                 "best_score": best_score[0], "loss": loss, "entropy": ent,
                 "greedy_return": greedy_metric(u, every, jax.random.fold_in(k_roll, 1), hidden, params, env_params,
                                                prior)}
      report(u, metrics["mean_return"], best_score[0])
      return ReinforceState(params=params, opt_state=opt, best_score=best_score, best_mask=best_mask, rng=rng), metrics

    return jax.lax.scan(update, carry, updates)

  def finish(state: ReinforceState, metrics):
    evals = (num_updates * num_envs * (horizon if env_params.timing == "step" else 1)
             + greedy_evals(every, num_updates, horizon, env_params.timing))
    return {"params": state.params, "metrics": metrics, **finish_best(state.best_score, state.best_mask),
            "real_evals": jnp.asarray(evals)}

  return TrainProgram(init, segment, finish, num_updates)
