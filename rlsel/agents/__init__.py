"""RL agents over the selection environment: PPO, DQN and REINFORCE, each `make_train(config, env_params) -> train`.

Shared here: the `Transition` record, batched rollouts with a policy, the greedy episode, best-episode tracking
and the host-side progress callback. `train(rng)` returns a dict with `params` (network), `metrics` (per update),
`best_score` / `best_mask` (best sampled episode scored by the real reward), `top_scores` [K] / `top_masks` [K, N]
(the `rl.keep_best` best sampled episodes, best first, for re-scoring with fresh proxy keys) and `real_evals`.

Every `make_train` returns a `TrainProgram`: calling it is one jitted run end to end, and its `init` / `segment` /
`finish` pieces let `rlsel/selectors/rl.py` run the same updates in segments with a checkpoint after each one.
With a `sharding` (a NamedSharding whose leading axis spans the mesh's devices), the parallel episodes are laid out
across devices: each device rolls out and scores its own episodes, and the update is one global computation under
jit (GSPMD), so the loss is averaged over every episode exactly as on one device.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel.agents import networks

ALGOS = ("ppo", "dqn", "reinforce")


class Transition(NamedTuple):
  taken: jnp.ndarray    # [C] counts before the step (the observation is rebuilt from these)
  step: jnp.ndarray
  action: jnp.ndarray
  logp: jnp.ndarray
  value: jnp.ndarray
  reward: jnp.ndarray   # unscaled
  done: jnp.ndarray     # the episode ended at this step
  valid: jnp.ndarray    # the episode had not ended before this step
  score: jnp.ndarray    # score before the step
  next_taken: jnp.ndarray
  next_step: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class TrainProgram:
  """An agent's training as pure pieces: `program(rng)` == `finish(*segment(init(rng), arange(num_updates)))`.

  A (weak-referenceable) dataclass, so `jax.jit(program)` and `jax.vmap(program)` work like on a function."""
  init: Callable[[Any], Any]          # rng -> carry (params, optimizer state, buffers, PRNG key, best episode)
  segment: Callable[[Any, Any], Any]  # (carry, update indices [n]) -> (carry, metrics with leading axis n)
  finish: Callable[[Any, Any], dict]  # (carry, all metrics) -> output dict
  num_updates: int

  def __call__(self, rng) -> dict:
    carry, metrics = self.segment(self.init(rng), jnp.arange(self.num_updates))
    return self.finish(carry, metrics)


def constrain_batch(tree, sharding, axis: int = 0):
  """Lays out the episode axis (`axis`) of every leaf over the mesh's devices; identity when `sharding` is None."""
  if sharding is None:
    return tree
  from jax.sharding import NamedSharding, PartitionSpec as P
  spec = sharding.spec[0]

  def one(x):
    return jax.lax.with_sharding_constraint(x, NamedSharding(sharding.mesh, P(*([None] * axis), spec)))
  return jax.tree.map(one, tree)


def batch_obs(taken, step, env_params):
  """Observations for a batch of (taken, step) [B, C], [B]."""
  return jax.vmap(env_lib.observe, in_axes=(0, 0, None))(taken, step, env_params)


def rollout(key, policy, env_params, num_envs: int, sharding=None):
  """Runs `num_envs` episodes for `max_steps` steps; `policy(key, obs) -> (action, logp, value)` on a batch.

  Returns (trajectory with leaves [T, E, ...], final EnvState batch). With `sharding`, episodes are split over
  devices (see the module docstring)."""
  k_reset, k_steps = jax.random.split(key)
  state, obs = jax.vmap(env_lib.reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), env_params)
  state, obs = constrain_batch((state, obs), sharding)

  def one(carry, k):
    state, obs = carry
    k_act, k_env = jax.random.split(k)
    action, logp, value = policy(k_act, obs)
    nstate, nobs, reward, done, _ = jax.vmap(env_lib.step, in_axes=(0, 0, 0, None))(
        jax.random.split(k_env, num_envs), state, action, env_params)
    nstate, nobs = constrain_batch((nstate, nobs), sharding)
    tr = Transition(state.taken, state.step, action, logp, value, reward, done, ~state.done, state.score,
                    nstate.taken, nstate.step)
    return (nstate, nobs), tr

  (final, _), traj = jax.lax.scan(one, (state, obs), jax.random.split(k_steps, env_params.max_steps))
  return traj, final.replace(reward_state=())  # the reward's carry ends with the episode (and differs by reward)


def policy_logits(hidden: int, params, env_params, obs, size_prior: float = 0.0):
  """(masked policy logits [..., C], value [...]): the network's outputs plus the `rl.size_prior` term
  (`networks.with_size_prior`). Every policy-gradient agent samples, learns and clones through this."""
  logits, value = networks.apply(hidden, params, env_params.feats, obs)
  return networks.with_size_prior(logits, obs, env_params.sizes, size_prior), value


def sample_policy(hidden: int, params, env_params, size_prior: float = 0.0):
  """Samples from the masked softmax of the policy logits (`policy_logits`)."""
  def policy(key, obs):
    logits, value = policy_logits(hidden, params, env_params, obs, size_prior)
    a = jax.random.categorical(key, logits)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), a[..., None], -1)[..., 0]
    return a, logp, value
  return policy


def greedy_policy(hidden: int, params, env_params, size_prior: float = 0.0):
  """Arg-max of the masked network outputs (policy logits with their `size_prior`, or Q-values with 0)."""
  def policy(key, obs):
    out, value = policy_logits(hidden, params, env_params, obs, size_prior)
    return jnp.argmax(out, -1), jnp.zeros(out.shape[:-1]), value
  return policy


def greedy_episode(key, hidden: int, params, env_params, size_prior: float = 0.0):
  """One greedy episode of the trained network; returns the final EnvState (unbatched) and its return."""
  traj, final = rollout(key, greedy_policy(hidden, params, env_params, size_prior), env_params, 1)
  return jax.tree.map(lambda x: x[0], final), traj.reward.sum()


def greedy_every(rl_cfg, num_updates: int) -> int:
  """Updates between evaluations of the greedy policy (`rl.greedy_every`; 0 = never during training)."""
  return min(int(rl_cfg.greedy_every), num_updates)


def greedy_metric(u, every: int, key, hidden: int, params, env_params, size_prior: float = 0.0):
  """The greedy policy's episode return (real reward) after update `u` when `every` > 0 divides u + 1, else NaN:
  the learning curve's evidence that the policy itself, not only its luckiest samples, got better."""
  if every <= 0:
    return jnp.array(jnp.nan, jnp.float32)
  return jax.lax.cond((u + 1) % every == 0,
                      lambda: greedy_episode(key, hidden, params, env_params, size_prior)[1].astype(jnp.float32),
                      lambda: jnp.array(jnp.nan, jnp.float32))


def greedy_evals(every: int, num_updates: int, horizon: int, timing: str) -> int:
  """Real reward evaluations the in-training greedy episodes cost."""
  return 0 if every <= 0 else (num_updates // every) * (horizon if timing == "step" else 1)


def init_best(keep: int, num_rows: int):
  """Empty top-`keep` tracking: scores [keep] of -inf, masks [keep, num_rows] all False."""
  return jnp.full((keep,), -jnp.inf, jnp.float32), jnp.zeros((keep, num_rows), bool)


def track_best(best_score, best_mask, final, use):
  """Keeps the K best final episodes (by score, best first; K = best_score.shape[0]) seen in rollouts scored by the
  real reward (`use`). An episode found again is kept again: the caller drops repeated masks before re-scoring."""
  k = best_score.shape[0]
  scores = jnp.concatenate([best_score, jnp.where(use, final.score, -jnp.inf).astype(best_score.dtype)])
  masks = jnp.concatenate([best_mask, final.mask])
  _, top = jax.lax.top_k(scores, k)
  return scores[top], masks[top]


def finish_best(best_score, best_mask) -> dict:
  """The best-episode entries of `train`'s result: the best one and the top K."""
  return {"best_score": best_score[0], "best_mask": best_mask[0], "top_scores": best_score, "top_masks": best_mask}


def progress(name: str, log_every: int):
  """The progress report to call inside a traced update, `report(u, mean_return, best_score)`: a `jax.debug.callback`
  that prints every `log_every` updates; with 0, nothing is compiled in, so the program stays eligible for JAX's
  persistent compilation cache (which never stores a program holding a host callback)."""
  if log_every <= 0:
    return lambda u, ret, best: None

  def show(u, ret, best):
    u = np.asarray(u).reshape(-1)
    if int(u[0]) % log_every == 0:
      print(f"[{name}] update {int(u[0])}: mean return {np.asarray(ret).round(4).tolist()} "
            f"best score {np.asarray(best).round(4).tolist()}", flush=True)

  return lambda u, ret, best: jax.debug.callback(show, u, ret, best)


def validate(config) -> None:
  """Checks `config.rl` before any work (the environment's chunking and every agent's settings)."""
  from rlsel.env import resolve_chunk
  from rlsel.errors import require_int, require_number
  rl_cfg = config.rl
  resolve_chunk(rl_cfg.chunk, 1, rl_cfg.episode_steps if str(rl_cfg.chunk).strip().lower() == "auto" else 1)
  for f in ("episode_steps", "num_envs", "num_updates", "keep_best", "update_epochs", "num_minibatches", "hidden",
            "dqn_buffer", "dqn_batch", "dqn_grad_steps", "dqn_target_every", "surrogate_hidden", "surrogate_buffer",
            "surrogate_steps"):
    require_int(rl_cfg[f], f"rl.{f}", low=1)
  for f in ("log_every", "checkpoint_every", "greedy_every"):
    require_int(rl_cfg[f], f"rl.{f}", low=0)
  for f in ("learning_rate", "max_grad_norm", "clip_eps", "reward_scale", "surrogate_lr"):
    require_number(rl_cfg[f], f"rl.{f}", low=0, low_open=True)
  for f in ("gamma", "gae_lambda", "dqn_eps_start", "dqn_eps_end"):
    require_number(rl_cfg[f], f"rl.{f}", low=0, high=1)
  for f in ("ent_coef", "vf_coef", "size_prior"):
    require_number(rl_cfg[f], f"rl.{f}", low=0)
  require_number(rl_cfg.surrogate_share, "rl.surrogate_share", low=0, high=1, low_open=True)
  from rlsel.env.build import WITHIN_ORDERS
  from rlsel.errors import require
  require(rl_cfg.within_order in WITHIN_ORDERS,
          f"rl.within_order={rl_cfg.within_order!r} must be one of {', '.join(WITHIN_ORDERS)}")
  require_number(rl_cfg.confident_pool, "rl.confident_pool", low=0)
  require(float(rl_cfg.confident_pool) == 0 or float(rl_cfg.confident_pool) >= 1,
          f"rl.confident_pool={rl_cfg.confident_pool} must be 0 (off) or >= 1 (a multiple of the budget)")
  require_number(rl_cfg.confident_pool_noise_scale, "rl.confident_pool_noise_scale", low=0)
  require(float(rl_cfg.confident_pool_noise_scale) == 0 or float(rl_cfg.confident_pool) > 0,
          f"rl.confident_pool_noise_scale={rl_cfg.confident_pool_noise_scale} sizes rl.confident_pool, which is off: "
          "add --config.rl.confident_pool=4 or drop the scale")
  require(isinstance(rl_cfg.label_quotas, bool), f"rl.label_quotas={rl_cfg.label_quotas!r} must be True or False")
  require_number(rl_cfg.coverage_share, "rl.coverage_share", low=0, high=1, high_open=True)
  require(float(rl_cfg.coverage_share) == 0 or not rl_cfg.label_quotas,
          "rl.coverage_share > 0 and rl.label_quotas=True cannot be combined yet; drop one of them")
  require(not rl_cfg.label_quotas or bool(config.kmeans.stratified),
          "rl.label_quotas=True needs clusters of one label each: add --config.kmeans.stratified=True")
