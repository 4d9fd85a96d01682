"""DQN over the selection environment: replay buffer in JAX arrays, target network, masked epsilon-greedy.

`make_train(config, env_params) -> train(rng)`, one jit. Each round: `num_envs` episodes with epsilon-greedy over
the available clusters, their transitions appended to a ring buffer (observations stored as per-cluster counts and
rebuilt on demand), then `dqn_grad_steps` double-DQN Huber updates; the target network is copied every
`dqn_target_every` rounds. The network's per-cluster outputs are the Q-values (masked for unavailable clusters).
`train` is a `TrainProgram` (see `rlsel/agents/__init__.py`); its carry holds the replay buffer.
"""

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlsel import env as env_lib
from rlsel.agents import (TrainProgram, batch_obs, finish_best, greedy_evals, greedy_every, greedy_metric, init_best,
                          networks, progress, rollout, track_best)


@struct.dataclass
class Replay:
  taken: jnp.ndarray       # [S, C]
  step: jnp.ndarray        # [S]
  action: jnp.ndarray      # [S]
  reward: jnp.ndarray      # [S] scaled
  next_taken: jnp.ndarray  # [S, C]
  next_step: jnp.ndarray   # [S]
  done: jnp.ndarray        # [S]
  count: jnp.ndarray       # transitions ever added


def replay_init(size: int, num_clusters: int) -> Replay:
  z = lambda *s, d=jnp.int32: jnp.zeros(s, d)
  return Replay(z(size, num_clusters), z(size), z(size), z(size, d=jnp.float32), z(size, num_clusters), z(size),
                z(size, d=bool), jnp.zeros((), jnp.int32))


def replay_add(buf: Replay, taken, step, action, reward, next_taken, next_step, done) -> Replay:
  """Appends n transitions (leading axis n) to the ring buffer."""
  n, size = action.shape[0], buf.action.shape[0]
  chex.assert_rank(taken, 2)
  idx = (buf.count + jnp.arange(n)) % size
  put = lambda a, v: a.at[idx].set(v)
  return buf.replace(taken=put(buf.taken, taken), step=put(buf.step, step), action=put(buf.action, action),
                     reward=put(buf.reward, reward), next_taken=put(buf.next_taken, next_taken),
                     next_step=put(buf.next_step, next_step), done=put(buf.done, done), count=buf.count + n)


def eps_greedy_policy(hidden: int, params, feats, eps):
  """With probability eps a uniformly random available cluster, else the arg-max Q."""
  def policy(key, obs):
    q, _ = networks.apply(hidden, params, feats, obs)
    k1, k2 = jax.random.split(key)
    rand = jax.random.categorical(k1, jnp.where(obs.action_mask, 0.0, networks.MASKED))
    explore = jax.random.uniform(k2, q.shape[:-1]) < eps
    return jnp.where(explore, rand, jnp.argmax(q, -1)), jnp.zeros(q.shape[:-1]), jnp.zeros(q.shape[:-1])
  return policy


@struct.dataclass
class DQNState:
  """DQN's train state between rollout rounds (checkpointed whole; field order is the checkpoint's leaf order)."""
  params: dict            # online Q-network
  target_params: dict     # target network, copied every `rl.dqn_target_every` rounds
  opt_state: object
  replay: object          # the replay buffer (JAX arrays)
  best_score: jax.Array
  best_mask: jax.Array
  rng: jax.Array


def make_train(config, env_params: env_lib.EnvParams, name: str = "rl_dqn", sharding=None) -> TrainProgram:
  rl_cfg = config.rl
  num_envs, horizon, rounds = int(rl_cfg.num_envs), env_params.max_steps, int(rl_cfg.num_updates)
  hidden, scale, gamma = int(rl_cfg.hidden), float(rl_cfg.reward_scale), float(rl_cfg.gamma)
  size, bsz = int(rl_cfg.dqn_buffer), int(rl_cfg.dqn_batch)
  tx = optax.chain(optax.clip_by_global_norm(rl_cfg.max_grad_norm), optax.adam(rl_cfg.learning_rate))
  report = progress(name, int(rl_cfg.log_every))
  every = greedy_every(rl_cfg, rounds)
  c = env_params.sizes.shape[0]

  def td_loss(params, target, b):
    q, _ = networks.apply(hidden, params, env_params.feats, batch_obs(b.taken, b.step, env_params))
    q_a = jnp.take_along_axis(q, b.action[:, None], -1)[:, 0]
    nobs = batch_obs(b.next_taken, b.next_step, env_params)
    q_next_online, _ = networks.apply(hidden, params, env_params.feats, nobs)
    q_next_target, _ = networks.apply(hidden, target, env_params.feats, nobs)
    a_star = jnp.argmax(q_next_online, -1)
    boot = jnp.take_along_axis(q_next_target, a_star[:, None], -1)[:, 0]
    y = b.reward + gamma * (1.0 - b.done.astype(jnp.float32)) * jax.lax.stop_gradient(boot)
    return jnp.mean(optax.huber_loss(q_a, y))

  def init(rng):
    rng, k_init = jax.random.split(rng)
    obs0 = env_lib.observe(jnp.zeros_like(env_params.sizes), jnp.zeros((), jnp.int32), env_params)
    params = networks.init(k_init, hidden, env_params.feats, obs0)
    best_score, best_mask = init_best(int(rl_cfg.keep_best), env_params.num_rows)
    return DQNState(params=params, target_params=params, opt_state=tx.init(params), replay=replay_init(size, c),
                    best_score=best_score, best_mask=best_mask, rng=rng)

  def segment(carry, updates):
    def round_(state: DQNState, u):
      params, target, opt, buf, best_score, best_mask, rng = (state.params, state.target_params, state.opt_state,
                                                              state.replay, state.best_score, state.best_mask,
                                                              state.rng)
      rng, k_roll, k_fit = jax.random.split(rng, 3)
      frac = u / jnp.maximum(rounds - 1, 1)
      eps = rl_cfg.dqn_eps_start + (rl_cfg.dqn_eps_end - rl_cfg.dqn_eps_start) * frac
      traj, final = rollout(k_roll, eps_greedy_policy(hidden, params, env_params.feats, eps), env_params, num_envs,
                            sharding)
      best_score, best_mask = track_best(best_score, best_mask, final, jnp.array(True))
      flat = jax.tree.map(lambda x: x.reshape((horizon * num_envs,) + x.shape[2:]), traj)
      buf = replay_add(buf, flat.taken, flat.step, flat.action, flat.reward * scale, flat.next_taken,
                       flat.next_step, flat.done)
      filled = jnp.minimum(buf.count, size)

      def grad_step(c2, k):
        p, o = c2
        idx = jax.random.randint(k, (bsz,), 0, filled)
        b = jax.tree.map(lambda x: x[idx], buf.replace(count=jnp.zeros((size,), jnp.int32)))
        loss, g = jax.value_and_grad(td_loss)(p, target, b)
        upd, o = tx.update(g, o, p)
        return (optax.apply_updates(p, upd), o), loss

      (params, opt), loss = jax.lax.scan(grad_step, (params, opt), jax.random.split(k_fit, int(rl_cfg.dqn_grad_steps)))
      target = jax.tree.map(lambda t, p: jnp.where((u + 1) % int(rl_cfg.dqn_target_every) == 0, p, t), target, params)
      ret = traj.reward.sum(0)
      metrics = {"mean_return": ret.mean(), "max_return": ret.max(), "final_score": final.score.mean(),
                 "best_score": best_score[0], "loss": loss.mean(), "epsilon": eps,
                 "greedy_return": greedy_metric(u, every, jax.random.fold_in(k_roll, 1), hidden, params, env_params)}
      report(u, metrics["mean_return"], best_score[0])
      return DQNState(params=params, target_params=target, opt_state=opt, replay=buf, best_score=best_score,
                      best_mask=best_mask, rng=rng), metrics

    return jax.lax.scan(round_, carry, updates)

  def finish(state: DQNState, metrics):
    evals = (rounds * num_envs * (horizon if env_params.timing == "step" else 1)
             + greedy_evals(every, rounds, horizon, env_params.timing))
    return {"params": state.params, "metrics": metrics, **finish_best(state.best_score, state.best_mask),
            "real_evals": jnp.asarray(evals)}

  return TrainProgram(init, segment, finish, rounds)
