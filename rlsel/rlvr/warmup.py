"""Supervised warm-up of the small decoder on a task's (prompt, answer) pairs, so GRPO starts from a policy that
sometimes succeeds (GRPO learns nothing from groups that all fail). One jitted `lax.scan` over the steps."""

import jax
import jax.numpy as jnp
import optax

from rlsel.rlvr.decoder import token_logprobs
from rlsel.rlvr.tokenizer import left_pad, right_pad


def encode_pairs(tokenizer, problems, prompt_len: int, completion_len: int):
  """(prompt, prompt_mask, completion = answer + EOS, completion_mask) as numpy arrays."""
  prompt, pmask = left_pad([tokenizer.encode(p) for p in problems.prompts], prompt_len, tokenizer.pad_id)
  comp, cmask = right_pad([tokenizer.encode(a, bos=False) + [tokenizer.eos_id] for a in problems.answers],
                          completion_len, tokenizer.pad_id)
  return prompt, pmask, comp, cmask


def make_warmup(module, tokenizer, problems, w, prompt_len: int, completion_len: int):
  """`warmup(key, params) -> (params, losses [steps])`: `w.steps` Adam steps of teacher-forced NLL on the answers."""
  data = [jnp.asarray(a) for a in encode_pairs(tokenizer, problems, prompt_len, completion_len)]
  n = data[0].shape[0]
  opt = optax.chain(optax.clip_by_global_norm(w.grad_clip), optax.adamw(w.learning_rate, weight_decay=w.weight_decay))

  def loss(params, prompt, pmask, comp, cmask):
    logp, _ = token_logprobs(module, params, prompt, pmask, comp)
    m = cmask.astype(jnp.float32)
    return -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)

  def step(carry, key):
    params, opt_state = carry
    idx = jax.random.randint(key, (w.batch_size,), 0, n)
    l, grads = jax.value_and_grad(loss)(params, *[d[idx] for d in data])
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), l

  @jax.jit
  def warmup(key, params):
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, w.steps))
    return params, losses

  return warmup
