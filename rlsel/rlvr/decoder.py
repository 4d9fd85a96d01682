"""A Llama-style decoder in Flax linen with a KV cache, jitted batched sampling and per-token log-probs.

RMSNorm, RoPE, grouped-query attention, SwiGLU and (optionally) tied embeddings. The layers are one `nn.scan`, so a
30-layer model compiles as fast as a 1-layer one and the KV cache is a single stacked array per key/value.

Sequences are laid out as `[prompt (left-padded) | completion]`; `kv_mask` marks the slots holding real tokens and a
token's RoPE position is the number of real tokens before it. Sampling (prefill + one token per step with the cache)
and the full forward pass used for training see exactly the same positions and masks, so their log-probs agree.
"""

from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class DecoderConfig(NamedTuple):
  """Architecture of the decoder (hashable, so it can be a static module attribute)."""
  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float
  rms_eps: float
  rope_interleaved: bool  # True: rotate pairs (x[2i], x[2i+1]) (GGUF layout); False: halves (x[i], x[i+d/2])
  tie_embeddings: bool = True
  init_std: float = 0.02


class Cache(NamedTuple):
  """Keys and values of every layer: [layers, batch, slots, kv_heads, head_dim] each."""
  k: jax.Array
  v: jax.Array


class Rollout(NamedTuple):
  """Sampled completions: tokens, log-probs of the sampled tokens under the model (temperature 1), validity mask."""
  tokens: jax.Array    # int32 [B, N]; pad after the first EOS
  logprobs: jax.Array  # float32 [B, N]; 0 where mask is False
  mask: jax.Array      # bool [B, N]; True up to and including the first EOS


def init_cache(cfg: DecoderConfig, batch: int, slots: int) -> Cache:
  shape = (cfg.num_layers, batch, slots, cfg.num_kv_heads, cfg.head_dim)
  return Cache(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))


def rope(x: jax.Array, positions: jax.Array, theta: float, interleaved: bool) -> jax.Array:
  """Rotary embedding of x [B, S, H, D] at integer positions [B, S]."""
  d = x.shape[-1]
  inv = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  ang = positions.astype(jnp.float32)[..., None] * inv  # [B, S, D/2]
  cos, sin = jnp.cos(ang)[:, :, None, :], jnp.sin(ang)[:, :, None, :]
  if interleaved:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).reshape(x.shape)
  x1, x2 = x[..., :d // 2], x[..., d // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class RMSNorm(nn.Module):
  eps: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * scale


class Block(nn.Module):
  """One pre-norm transformer layer; `layer_cache` is this layer's (k, v) or None (no cache)."""
  cfg: DecoderConfig

  @nn.compact
  def __call__(self, x, layer_cache, positions, mask, cache_index):
    cfg = self.cfg
    b, s, _ = x.shape
    init = nn.initializers.normal(cfg.init_std)
    dense = lambda n, name: nn.Dense(n, use_bias=False, kernel_init=init, name=name)
    h = RMSNorm(cfg.rms_eps, name="attn_norm")(x)
    q = dense(cfg.num_heads * cfg.head_dim, "q")(h).reshape(b, s, cfg.num_heads, cfg.head_dim)
    k = dense(cfg.num_kv_heads * cfg.head_dim, "k")(h).reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
    v = dense(cfg.num_kv_heads * cfg.head_dim, "v")(h).reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
    q = rope(q, positions, cfg.rope_theta, cfg.rope_interleaved)
    k = rope(k, positions, cfg.rope_theta, cfg.rope_interleaved)
    if layer_cache is not None:
      ck, cv = layer_cache
      k = jax.lax.dynamic_update_slice(ck, k, (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(cv, v, (0, cache_index, 0, 0))
      layer_cache = (k, v)
    g = cfg.num_heads // cfg.num_kv_heads
    q = q.reshape(b, s, cfg.num_kv_heads, g, cfg.head_dim)
    scores = jnp.einsum("bskgd,btkd->bkgst", q, k) / jnp.sqrt(jnp.float32(cfg.head_dim))
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(scores.dtype).min)
    w = jax.nn.softmax(scores, axis=-1)
    att = jnp.einsum("bkgst,btkd->bskgd", w, v).reshape(b, s, cfg.num_heads * cfg.head_dim)
    x = x + dense(cfg.width, "o")(att)
    h = RMSNorm(cfg.rms_eps, name="mlp_norm")(x)
    h = nn.silu(dense(cfg.mlp_dim, "gate")(h)) * dense(cfg.mlp_dim, "up")(h)
    return x + dense(cfg.width, "down")(h), layer_cache


class Decoder(nn.Module):
  """Token ids -> (logits [B, S, V], final normed hidden states [B, S, W], updated cache or None).

  tokens/positions [B, S]; kv_mask [B, T] marks real tokens among the T key slots (T = S without a cache, the cache
  length with one); the S query tokens occupy slots cache_index .. cache_index + S - 1.
  """
  cfg: DecoderConfig

  @nn.compact
  def __call__(self, tokens, positions, kv_mask, cache=None, cache_index=0):
    cfg = self.cfg
    s, t = tokens.shape[1], kv_mask.shape[1]
    embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=nn.initializers.normal(cfg.init_std), name="embed")
    x = embed(tokens)
    q_slots = cache_index + jnp.arange(s)
    mask = (jnp.arange(t)[None, None, :] <= q_slots[None, :, None]) & kv_mask[:, None, :].astype(bool)
    layers = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers)
    layer_cache = None if cache is None else (cache.k, cache.v)
    x, layer_cache = layers(cfg, name="layers")(x, layer_cache, positions, mask, cache_index)
    h = RMSNorm(cfg.rms_eps, name="final_norm")(x)
    if cfg.tie_embeddings:
      logits = embed.attend(h)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, name="lm_head")(h)
    return logits, h, (None if layer_cache is None else Cache(*layer_cache))


def init_params(cfg: DecoderConfig, key: jax.Array):
  module = Decoder(cfg)
  tok = jnp.zeros((1, 2), jnp.int32)
  return module, jax.jit(module.init)(key, tok, tok, jnp.ones((1, 2), bool))["params"]


def positions_of(kv_mask: jax.Array) -> jax.Array:
  """RoPE position of each slot: the number of real tokens before it."""
  return jnp.maximum(jnp.cumsum(kv_mask.astype(jnp.int32), axis=1) - 1, 0)


def forward(module: Decoder, params, prompt, prompt_mask, completion):
  """Full forward pass over [prompt | completion] -> (logits predicting each completion token [B, N, V], hidden)."""
  p = prompt.shape[1]
  tokens = jnp.concatenate([prompt, completion], axis=1)
  kv_mask = jnp.concatenate([prompt_mask.astype(bool), jnp.ones(completion.shape, bool)], axis=1)
  logits, hidden, _ = module.apply({"params": params}, tokens, positions_of(kv_mask), kv_mask)
  return logits[:, p - 1:-1], hidden


def token_logprobs(module: Decoder, params, prompt, prompt_mask, completion):
  """Log-probs [B, N] of the completion tokens and the policy entropy [B, N] at each of them (temperature 1)."""
  logits, _ = forward(module, params, prompt, prompt_mask, completion)
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  # a one-hot contraction, not take_along_axis: its gradient is a dense multiply instead of a slow CPU scatter
  logp = jnp.sum(logp_all * jax.nn.one_hot(completion, logits.shape[-1], dtype=logp_all.dtype), axis=-1)
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


def prompt_embeddings(module: Decoder, params, prompt, prompt_mask):
  """Mean-pooled final hidden states over the real prompt tokens [B, W] (frozen features for DOTS)."""
  kv_mask = prompt_mask.astype(bool)
  _, hidden, _ = module.apply({"params": params}, prompt, positions_of(kv_mask), kv_mask)
  w = kv_mask.astype(hidden.dtype)[..., None]
  return jnp.sum(hidden * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def sample_token(key, logits, temperature: float, top_p: float):
  """Greedy when temperature == 0, else temperature + nucleus (top-p) sampling; logits [B, V] -> ids [B]."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < top_p  # always keeps the most likely token
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, -jnp.inf)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def make_generate(module: Decoder, max_new_tokens: int, temperature: float, top_p: float, eos_id: int, pad_id: int):
  """A jitted `generate(params, prompt [B, P], prompt_mask [B, P], key) -> Rollout` using the KV cache."""
  cfg = module.cfg

  def generate(params, prompt, prompt_mask, key):
    chex.assert_equal_shape([prompt, prompt_mask])
    b, p = prompt.shape
    slots = p + max_new_tokens
    kv_mask = jnp.concatenate([prompt_mask.astype(bool), jnp.zeros((b, max_new_tokens), bool)], axis=1)
    lengths = jnp.sum(prompt_mask.astype(jnp.int32), axis=1)
    logits, _, cache = module.apply({"params": params}, prompt, positions_of(prompt_mask), kv_mask,
                                    init_cache(cfg, b, slots), 0)

    def step(carry, t):
      cache, last, kv_mask, done, key = carry
      key, sub = jax.random.split(key)
      tok = sample_token(sub, last, temperature, top_p)
      logp = jnp.take_along_axis(jax.nn.log_softmax(last, axis=-1), tok[:, None], axis=-1)[:, 0]
      valid = ~done
      tok = jnp.where(valid, tok, pad_id)
      done = done | (tok == eos_id)
      kv_mask = kv_mask.at[:, p + t].set(True)
      out, _, cache = module.apply({"params": params}, tok[:, None], (lengths + t)[:, None], kv_mask, cache, p + t)
      return (cache, out[:, -1], kv_mask, done, key), (tok, jnp.where(valid, logp, 0.0), valid)

    init = (cache, logits[:, -1], kv_mask, jnp.zeros((b,), bool), key)
    _, (toks, logps, valid) = jax.lax.scan(step, init, jnp.arange(max_new_tokens))
    return Rollout(toks.T, logps.T, valid.T)

  return jax.jit(generate)
