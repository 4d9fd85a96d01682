"""PPO over the selection environment: `make_train(config, env_params) -> train(rng)`, one jit end to end.

Nested `lax.scan`: updates -> env steps (num_envs episodes via vmap) -> GAE in reverse -> epochs -> minibatches.
With `rl.surrogate_share < 1` and a proxy reward, only that share of updates roll out with the real proxy; the
others are scored by the surrogate MLP, trained online on the real rollouts' (mask features, score) pairs.
`jax.jit(jax.vmap(train))` over seeds works. `train` is a `TrainProgram` (see `rlsel/agents/__init__.py`).
"""

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlsel import env as env_lib
from rlsel import surrogate as surrogate_lib
from rlsel.agents import (TrainProgram, batch_obs, finish_best, greedy_evals, greedy_every, greedy_metric, init_best,
                          losses, networks, policy_logits, progress, rollout, sample_policy, track_best)


def real_update_schedule(share: float, num_updates: int):
  """Which updates use the real reward: update 0, then evenly spaced so their share is `share`."""
  u = jnp.arange(num_updates)
  return (u == 0) | (jnp.floor(u * share) > jnp.floor((u - 1) * share))


@struct.dataclass
class PPOState:
  """PPO's train state between updates (checkpointed whole; field order is the checkpoint's leaf order)."""
  params: dict            # policy / value network
  opt_state: object       # Adam moments
  surrogate: object       # rlsel.surrogate state when rl.surrogate_share < 1, else None
  best_score: jax.Array   # the rl.keep_best best real-reward episodes so far [K], best first ...
  best_mask: jax.Array    # ... and their selection masks [K, N]
  rng: jax.Array


def make_train(config, env_params: env_lib.EnvParams, name: str = "rl_ppo", init_params=None,
               sharding=None) -> TrainProgram:
  """`init_params` (optional): network params to start from (e.g. behaviour cloning); fresh ones when None.
  `sharding` (optional): lay the parallel episodes out over a mesh's devices."""
  rl_cfg = config.rl
  num_envs, horizon, num_updates = int(rl_cfg.num_envs), env_params.max_steps, int(rl_cfg.num_updates)
  hidden, scale, prior = int(rl_cfg.hidden), float(rl_cfg.reward_scale), float(rl_cfg.size_prior)
  batch = num_envs * horizon
  num_mb = max(1, min(int(rl_cfg.num_minibatches), batch))
  mb = batch // num_mb
  tx = optax.chain(optax.clip_by_global_norm(rl_cfg.max_grad_norm), optax.adam(rl_cfg.learning_rate))
  use_sur = float(rl_cfg.surrogate_share) < 1.0 and isinstance(env_params.reward, env_lib.ProxyReward)
  schedule = (real_update_schedule(float(rl_cfg.surrogate_share), num_updates) if use_sur
              else jnp.ones(num_updates, bool))
  feat_dim = 2 * env_params.sizes.shape[0]
  report = progress(name, int(rl_cfg.log_every))
  every = greedy_every(rl_cfg, num_updates)

  def loss_fn(params, tr, adv, target):
    obs = batch_obs(tr.taken, tr.step, env_params)
    logits, value = policy_logits(hidden, params, env_params, obs, prior)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, tr.action[:, None], -1)[:, 0]
    w = tr.valid.astype(jnp.float32)
    return losses.ppo_loss(logp, tr.logp, adv, value, tr.value, target, losses.masked_entropy(logits), w,
                           rl_cfg.clip_eps, rl_cfg.vf_coef, rl_cfg.ent_coef)

  def init(rng):
    rng, k_init, k_sur = jax.random.split(rng, 3)
    obs0 = env_lib.observe(jnp.zeros_like(env_params.sizes), jnp.zeros((), jnp.int32), env_params)
    params = networks.init(k_init, hidden, env_params.feats, obs0) if init_params is None else init_params
    opt = tx.init(params)
    sur = (surrogate_lib.init(k_sur, feat_dim, int(rl_cfg.surrogate_hidden), int(rl_cfg.surrogate_buffer),
                              float(rl_cfg.surrogate_lr)) if use_sur else None)
    best_score, best_mask = init_best(int(rl_cfg.keep_best), env_params.num_rows)
    return PPOState(params=params, opt_state=opt, surrogate=sur, best_score=best_score, best_mask=best_mask, rng=rng)

  def segment(carry, updates):
    def update(state: PPOState, u):
      params, opt, sur, best_score, best_mask, rng = (state.params, state.opt_state, state.surrogate,
                                                      state.best_score, state.best_mask, state.rng)
      rng, k_roll, k_ep, k_sur = jax.random.split(rng, 4)
      policy = sample_policy(hidden, params, env_params, prior)
      use_real = schedule[u]
      if use_sur:
        sur_params = env_params.replace(reward=env_lib.SurrogateReward(int(rl_cfg.surrogate_hidden)),
                                        surrogate=sur.params)
        traj, final = jax.lax.cond(use_real, lambda: rollout(k_roll, policy, env_params, num_envs, sharding),
                                   lambda: rollout(k_roll, policy, sur_params, num_envs, sharding))
      else:
        traj, final = rollout(k_roll, policy, env_params, num_envs, sharding)
      best_score, best_mask = track_best(best_score, best_mask, final, use_real)

      adv, target = losses.gae(traj.reward * scale, traj.value, traj.done, jnp.zeros((num_envs,)), rl_cfg.gamma,
                               rl_cfg.gae_lambda)
      flat = jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]), (traj, adv, target))
      flat_w = flat[0].valid.astype(jnp.float32)
      flat = (flat[0], losses.normalise(flat[1], flat_w), flat[2])

      def epoch(c, k):
        def minibatch(c2, idx):
          p, o = c2
          tr, a, t = jax.tree.map(lambda x: x[idx], flat)
          (loss, info), g = jax.value_and_grad(loss_fn, has_aux=True)(p, tr, a, t)
          upd, o = tx.update(g, o, p)
          return (optax.apply_updates(p, upd), o), (loss, info)
        perm = jax.random.permutation(k, batch)[:num_mb * mb].reshape(num_mb, mb)
        return jax.lax.scan(minibatch, c, perm)

      (params, opt), (loss, info) = jax.lax.scan(epoch, (params, opt),
                                                 jax.random.split(k_ep, int(rl_cfg.update_epochs)))

      sur_loss = jnp.zeros(())
      if use_sur:
        def fit(s):
          taken = traj.next_taken.reshape(batch, -1)
          feats = jax.vmap(env_lib.mask_features, in_axes=(0, None))(taken, env_params)
          scores = jnp.concatenate([traj.score[1:].reshape(-1), final.score])
          s = surrogate_lib.add(s, feats, scores)
          return surrogate_lib.train(k_sur, s, int(rl_cfg.surrogate_steps), 64)
        sur, sur_loss = jax.lax.cond(use_real, fit, lambda s: (s, jnp.zeros(())), sur)

      ret = traj.reward.sum(0)
      metrics = {"mean_return": ret.mean(), "max_return": ret.max(), "final_score": final.score.mean(),
                 "best_score": best_score[0], "loss": loss.mean(), "entropy": info.entropy.mean(),
                 "approx_kl": info.approx_kl.mean(), "value_loss": info.value.mean(),
                 "real_reward": use_real.astype(jnp.float32), "surrogate_loss": sur_loss,
                 "greedy_return": greedy_metric(u, every, jax.random.fold_in(k_roll, 1), hidden, params, env_params,
                                                prior)}
      report(u, metrics["mean_return"], best_score[0])
      return PPOState(params=params, opt_state=opt, surrogate=sur, best_score=best_score, best_mask=best_mask,
                      rng=rng), metrics

    return jax.lax.scan(update, carry, updates)

  def finish(state: PPOState, metrics):
    evals_per_rollout = num_envs * (horizon if env_params.timing == "step" else 1)
    return {"params": state.params, "metrics": metrics, **finish_best(state.best_score, state.best_mask),
            "real_evals": jnp.sum(schedule) * evals_per_rollout
            + greedy_evals(every, num_updates, horizon, env_params.timing)}

  return TrainProgram(init, segment, finish, num_updates)

