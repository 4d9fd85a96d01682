"""A Llama-style decoder in Flax linen with a KV cache, jitted batched sampling and per-token log-probs.

RMSNorm, RoPE, grouped-query attention, SwiGLU and (optionally) tied embeddings. The layers are one `nn.scan`, so a
30-layer model compiles as fast as a 1-layer one and the KV cache is a single stacked array per key/value.
Optional LoRA adapters on chosen projections (`lora_rank` > 0) and a compute dtype (`dtype`, e.g. bfloat16; norms
and softmax stay float32) serve the selection track's decoder classifier (rlsel/target/llm.py); the defaults leave
the GRPO track's float32 model unchanged.

Sequences are laid out as `[prompt (left-padded) | completion]`; `kv_mask` marks the slots holding real tokens and a
token's RoPE position is the number of real tokens before it. Sampling (prefill + one token per step with the cache)
and the full forward pass used for training see exactly the same positions and masks, so their log-probs agree.
"""

from typing import Callable, NamedTuple

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
  lora_rank: int = 0             # > 0: the projections named in lora_targets get rank-r adapters (LoRADense)
  lora_alpha: float = 0.0        # LoRA scale numerator: the update is (lora_alpha / lora_rank) x A B
  lora_targets: tuple = ()       # Block projections with adapters, among q, k, v, o, gate, up, down
  dtype: str = "float32"         # compute dtype of the projections and embeddings ("bfloat16" on accelerators)

  @property
  def attention_width(self) -> int:
    """Query width per layer, num_heads x head_dim (the attention term of a FLOP estimate)."""
    return self.num_heads * self.head_dim


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
  """Root-mean-square norm, computed in float32 and returned in the input's dtype."""
  eps: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps) * scale).astype(x.dtype)


LORA_A_SCALE = 1.0 / 3.0  # A ~ U(-1/sqrt(in), 1/sqrt(in)): variance 1/(3 in), as peft's kaiming_uniform(a=sqrt(5))
LORA_ADAPTERS = ("lora_a", "lora_b")  # parameter names of the adapters (everything else in a LoRA model is frozen)


class LoRADense(nn.Module):
  """A bias-free dense layer plus a low-rank update: x W + (alpha / rank) (x A) B.

  W is `kernel` [in, out] (the name and shape of `nn.Dense`'s, so pretrained weights load unchanged), A `lora_a`
  [in, rank] small random, B `lora_b` [rank, out] zero: a fresh adapter leaves the layer's output unchanged.
  """
  features: int
  rank: int
  alpha: float
  kernel_init: Callable
  dtype: str

  @nn.compact
  def __call__(self, x):
    d_in = x.shape[-1]
    w = self.param("kernel", self.kernel_init, (d_in, self.features), jnp.float32)
    a = self.param("lora_a", nn.initializers.variance_scaling(LORA_A_SCALE, "fan_in", "uniform"),
                   (d_in, self.rank), jnp.float32)
    b = self.param("lora_b", nn.initializers.zeros, (self.rank, self.features), jnp.float32)
    dt = jnp.dtype(self.dtype)
    x, w, a, b = (t.astype(dt) for t in (x, w, a, b))
    return x @ w + (self.alpha / self.rank) * ((x @ a) @ b)


class Block(nn.Module):
  """One pre-norm transformer layer; `layer_cache` is this layer's (k, v) or None (no cache)."""
  cfg: DecoderConfig

  @nn.compact
  def __call__(self, x, layer_cache, positions, mask, cache_index):
    cfg = self.cfg
    b, s, _ = x.shape
    init = nn.initializers.normal(cfg.init_std)

    def dense(n, name):
      if cfg.lora_rank > 0 and name in cfg.lora_targets:
        return LoRADense(n, cfg.lora_rank, cfg.lora_alpha, init, cfg.dtype, name=name)
      return nn.Dense(n, use_bias=False, kernel_init=init, dtype=jnp.dtype(cfg.dtype), name=name)
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
    scores = jnp.einsum("bskgd,btkd->bkgst", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(cfg.head_dim))
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(scores.dtype).min)
    w = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    att = jnp.einsum("bkgst,btkd->bskgd", w, v).reshape(b, s, cfg.num_heads * cfg.head_dim)
    x = x + dense(cfg.width, "o")(att)
    h = RMSNorm(cfg.rms_eps, name="mlp_norm")(x)
    h = nn.silu(dense(cfg.mlp_dim, "gate")(h)) * dense(cfg.mlp_dim, "up")(h)
    return x + dense(cfg.width, "down")(h), layer_cache


class Decoder(nn.Module):
  """Token ids -> (logits [B, S, V], final normed hidden states [B, S, W], updated cache or None).

  tokens/positions [B, S]; kv_mask [B, T] marks real tokens among the T key slots (T = S without a cache, the cache
  length with one); the S query tokens occupy slots cache_index .. cache_index + S - 1. `with_logits=False` skips
  the vocabulary projection (logits None) for callers that only read the hidden states.
  """
  cfg: DecoderConfig

  @nn.compact
  def __call__(self, tokens, positions, kv_mask, cache=None, cache_index=0, with_logits=True):
    cfg = self.cfg
    s, t = tokens.shape[1], kv_mask.shape[1]
    embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=nn.initializers.normal(cfg.init_std),
                     dtype=jnp.dtype(cfg.dtype), name="embed")
    x = embed(tokens)
    q_slots = cache_index + jnp.arange(s)
    mask = (jnp.arange(t)[None, None, :] <= q_slots[None, :, None]) & kv_mask[:, None, :].astype(bool)
    layers = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers)
    layer_cache = None if cache is None else (cache.k, cache.v)
    x, layer_cache = layers(cfg, name="layers")(x, layer_cache, positions, mask, cache_index)
    h = RMSNorm(cfg.rms_eps, name="final_norm")(x)
    if not with_logits:
      logits = None
    elif cfg.tie_embeddings:
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
