"""GRPO: G sampled completions per prompt, group-normalised advantages, a clipped ratio objective, optional KL to a
reference policy (beta) and an entropy bonus; a jitted update; greedy test accuracy; generation and update timed apart.

The clip is the off-policy-corrected one DOTS' rollout replay needs: with behaviour log-probs mu (the policy that
sampled), rho = pi_theta / mu and r_old = pi_old / mu, the per-token objective is
min(rho * A, clip(rho, r_old (1 - eps), r_old (1 + eps)) * A). For fresh samples mu = pi_old, r_old = 1, and this is
the usual PPO/GRPO clip. Rewards are checked on the host (strings), so the rollout is not inside the jitted update.
"""

import functools
import time
from typing import NamedTuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlsel.errors import UserError
from rlsel.rlvr import arithmetic
from rlsel.rlvr.decoder import make_generate, token_logprobs
from rlsel.rlvr.tokenizer import left_pad


class Groups(NamedTuple):
  """Rollouts of n prompts x G samples, flattened prompt-major to n*G rows (host numpy arrays)."""
  prompt: np.ndarray          # int32 [n*G, P], left-padded
  prompt_mask: np.ndarray     # bool [n*G, P]
  completion: np.ndarray      # int32 [n*G, N]
  mask: np.ndarray            # bool [n*G, N]
  behaviour_logp: np.ndarray  # float32 [n*G, N]; log-probs under the sampling policy (mu)
  rewards: np.ndarray         # float32 [n, G]
  prompt_ids: np.ndarray      # int64 [n]; index of each prompt in its pool


class Batch(NamedTuple):
  """One update's inputs (device arrays), rows as in `Groups`."""
  prompt: jax.Array
  prompt_mask: jax.Array
  completion: jax.Array
  mask: jax.Array
  behaviour_logp: jax.Array
  old_logp: jax.Array   # pi_old: the policy at the start of this step
  ref_logp: jax.Array   # the reference policy (KL anchor); zeros when kl_beta == 0
  advantages: jax.Array  # [n*G]


@flax.struct.dataclass
class TrainState:
  params: dict
  opt_state: optax.OptState
  step: jax.Array


def concat_groups(parts: list) -> Groups:
  return Groups(*[np.concatenate([getattr(p, f) for p in parts]) for f in Groups._fields])


def group_advantages(rewards: jax.Array, eps: float) -> jax.Array:
  """(r - group mean) / (group std + eps) per prompt; rewards [n, G] -> [n, G]; all-equal groups give 0."""
  chex.assert_rank(rewards, 2)
  mean = jnp.mean(rewards, axis=1, keepdims=True)
  std = jnp.std(rewards, axis=1, keepdims=True)
  return (rewards - mean) / (std + eps)


def clipped_objective(logp, old_logp, behaviour_logp, advantages, clip_eps: float):
  """Per-token objective to maximise: min(rho A, clip(rho, r_old(1-eps), r_old(1+eps)) A); A broadcasts over tokens."""
  rho = jnp.exp(logp - behaviour_logp)
  r_old = jnp.exp(old_logp - behaviour_logp)
  clipped = jnp.clip(rho, r_old * (1.0 - clip_eps), r_old * (1.0 + clip_eps))
  a = advantages[:, None]
  return jnp.minimum(rho * a, clipped * a)


def loss_fn(params, module, batch: Batch, clip_eps: float, kl_beta: float, entropy_coef: float):
  """GRPO loss: mean over sequences of the token-mean of -objective + beta KL(k3) - entropy_coef * entropy."""
  logp, entropy = token_logprobs(module, params, batch.prompt, batch.prompt_mask, batch.completion)
  obj = clipped_objective(logp, batch.old_logp, batch.behaviour_logp, batch.advantages, clip_eps)
  d = batch.ref_logp - logp
  kl = jnp.exp(d) - d - 1.0
  per_token = -obj + kl_beta * kl - entropy_coef * entropy
  m = batch.mask.astype(jnp.float32)
  n_tok = jnp.maximum(jnp.sum(m, axis=1), 1.0)
  loss = jnp.mean(jnp.sum(per_token * m, axis=1) / n_tok)
  stats = {"kl": jnp.sum(kl * m) / jnp.maximum(jnp.sum(m), 1.0),
           "entropy": jnp.sum(entropy * m) / jnp.maximum(jnp.sum(m), 1.0),
           "clip_fraction": jnp.sum((jnp.abs(jnp.exp(logp - batch.old_logp) - 1.0) > clip_eps) * m)
                            / jnp.maximum(jnp.sum(m), 1.0)}
  return loss, stats


def make_optimizer(g) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(g.grad_clip), optax.adamw(g.learning_rate, weight_decay=g.weight_decay))


def init_state(params, optimizer) -> TrainState:
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_update(module, optimizer, g):
  """A jitted `update(state, batch) -> (state, metrics)`: one gradient step on the GRPO loss (config `g` = rlvr.grpo)."""

  def update(state: TrainState, batch: Batch):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, module, batch, g.clip_eps, g.kl_beta, g.entropy_coef)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), {"loss": loss, **stats}

  return jax.jit(update)


def make_logprobs(module):
  """A jitted log-prob function for pi_old / the reference: (params, prompt, prompt_mask, completion) -> [B, N]."""
  return jax.jit(lambda params, *a: token_logprobs(module, params, *a)[0])


class Policy:
  """The pieces a GRPO/DOTS loop needs around one decoder: samplers, log-probs, rollouts and evaluation."""

  def __init__(self, module, tokenizer, prompt_len: int, max_new_tokens: int, temperature: float, top_p: float):
    self.module, self.tokenizer, self.prompt_len, self.max_new_tokens = module, tokenizer, prompt_len, max_new_tokens
    args = (max_new_tokens, tokenizer.eos_id, tokenizer.pad_id)
    self.sample = make_generate(module, args[0], temperature, top_p, *args[1:])
    self.greedy = make_generate(module, args[0], 0.0, 1.0, *args[1:])
    self.logprobs = make_logprobs(module)

  def check_prompt_len(self, problems: arithmetic.Problems) -> None:
    """A clear error instead of silently cutting prompts longer than `prompt_len` tokens."""
    longest = max(len(self.tokenizer.encode(p)) for p in problems.prompts)
    if longest > self.prompt_len:
      raise UserError(f"a prompt has {longest} tokens but rlvr.data.prompt_len is {self.prompt_len}; "
                      f"set --config.rlvr.data.prompt_len={longest} or more")

  def encode(self, prompts: list):
    return left_pad([self.tokenizer.encode(p) for p in prompts], self.prompt_len, self.tokenizer.pad_id)

  def rollout(self, params, problems: arithmetic.Problems, prompt_ids, group_size: int, key) -> Groups:
    """G samples for each of the prompts `prompt_ids` of `problems`, with their exact-match rewards."""
    prompt_ids = np.asarray(prompt_ids, np.int64)
    sub = problems.take(prompt_ids)
    ids, mask = self.encode(sub.prompts)
    ids, mask = np.repeat(ids, group_size, axis=0), np.repeat(mask, group_size, axis=0)
    r = jax.device_get(self.sample(params, ids, mask, key))
    texts = [self.tokenizer.decode(t) for t in r.tokens]
    answers = np.repeat(np.asarray(sub.answers, object), group_size)
    rewards = arithmetic.rewards(texts, answers).reshape(len(prompt_ids), group_size)
    return Groups(ids, mask, np.asarray(r.tokens), np.asarray(r.mask), np.asarray(r.logprobs, np.float32), rewards,
                  prompt_ids)

  def completions(self, params, problems: arithmetic.Problems, batch_size: int) -> list:
    """Greedy completions of every prompt (fixed batch shape, the last batch padded so nothing recompiles)."""
    out = []
    for s in range(0, len(problems), batch_size):
      ids, mask = self.encode(problems.prompts[s:s + batch_size])
      n = ids.shape[0]
      ids = np.concatenate([ids, np.repeat(ids[-1:], batch_size - n, axis=0)])
      mask = np.concatenate([mask, np.repeat(mask[-1:], batch_size - n, axis=0)])
      toks = np.asarray(self.greedy(params, ids, mask, jax.random.key(0)).tokens)[:n]
      out.extend(self.tokenizer.decode(t) for t in toks)
    return out

  def accuracy(self, params, problems: arithmetic.Problems, batch_size: int) -> float:
    texts = self.completions(params, problems, batch_size)
    return float(np.mean(arithmetic.rewards(texts, problems.answers)))


@functools.partial(jax.jit, static_argnums=1)
def _advantages(rewards, eps):
  return group_advantages(rewards, eps).reshape(-1)


def make_batch(policy: Policy, params, ref_params, groups: Groups, g) -> Batch:
  """Device batch for one step: pi_old log-probs at `params`, reference log-probs if KL is on, advantages."""
  args = (groups.prompt, groups.prompt_mask, groups.completion)
  old = policy.logprobs(params, *args)
  ref = policy.logprobs(ref_params, *args) if g.kl_beta > 0 else jnp.zeros_like(old)
  adv = _advantages(jnp.asarray(groups.rewards), g.adv_eps)
  return Batch(jnp.asarray(groups.prompt), jnp.asarray(groups.prompt_mask), jnp.asarray(groups.completion),
               jnp.asarray(groups.mask), jnp.asarray(groups.behaviour_logp), old, ref, adv)


def train_step(policy: Policy, update, state: TrainState, ref_params, groups: Groups, g):
  """Updates on already collected groups (`g.epochs` passes); returns (state, metrics, update seconds)."""
  t0 = time.perf_counter()
  batch = make_batch(policy, state.params, ref_params, groups, g)
  metrics = {}
  for _ in range(g.epochs):
    state, metrics = update(state, batch)
  jax.block_until_ready(state.params)
  return state, jax.device_get(metrics), time.perf_counter() - t0


def grpo_step(policy: Policy, update, state: TrainState, ref_params, problems, prompt_ids, key, g):
  """One plain GRPO step on the given prompts: rollout then update; metrics include generation/update seconds."""
  t0 = time.perf_counter()
  groups = policy.rollout(state.params, problems, prompt_ids, g.group_size, key)
  gen = time.perf_counter() - t0
  state, metrics, upd = train_step(policy, update, state, ref_params, groups, g)
  return state, groups, {**metrics, "reward": float(groups.rewards.mean()), "generation_seconds": gen,
                         "update_seconds": upd}
