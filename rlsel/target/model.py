"""The target model: a BERT encoder (all-MiniLM-L6-v2 weights, or a tiny random one) with a classification head.

Written in Flax linen rather than through transformers' Flax classes (deprecated, gone in transformers 5): the
weights are read straight from the asset's `model.safetensors`. Post-LayerNorm BERT, exact GELU, learned absolute
positions; the head reads the mask-aware mean of the last hidden states, as all-MiniLM-L6-v2 was trained to pool.
"""

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlsel.errors import UserError, require_choice

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DECODER_KINDS = ("smollm2", "decoder")  # the decoder targets of rlsel/target/llm.py
KINDS = ("minilm", "tiny") + DECODER_KINDS


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  dropout: float = 0.1
  dtype: str = "float32"

  @property
  def attention_width(self) -> int:
    """Query/key width per layer (the attention term of the FLOP estimate)."""
    return self.hidden_size


class Embeddings(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, deterministic):
    c, dt = self.config, DTYPES[self.config.dtype]
    pos = jnp.arange(input_ids.shape[-1])[None, :]
    x = (nn.Embed(c.vocab_size, c.hidden_size, dtype=dt, name="word_embeddings")(input_ids)
         + nn.Embed(c.max_position, c.hidden_size, dtype=dt, name="position_embeddings")(pos)
         + nn.Embed(c.type_vocab_size, c.hidden_size, dtype=dt, name="token_type_embeddings")(token_type_ids))
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt, name="LayerNorm")(x)
    return nn.Dropout(c.dropout)(x, deterministic=deterministic)


class Layer(nn.Module):
  """One post-LN transformer block: self-attention then a GELU feed-forward, each with residual and LayerNorm."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic):
    c, dt = self.config, DTYPES[self.config.dtype]
    h, d = c.num_heads, c.hidden_size // c.num_heads
    split = lambda t: t.reshape(t.shape[:-1] + (h, d))
    q = split(nn.Dense(c.hidden_size, dtype=dt, name="query")(x))
    k = split(nn.Dense(c.hidden_size, dtype=dt, name="key")(x))
    v = split(nn.Dense(c.hidden_size, dtype=dt, name="value")(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d).astype(np.float32)
    probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(dt)
    probs = nn.Dropout(c.dropout)(probs, deterministic=deterministic)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)
    attn = nn.Dense(c.hidden_size, dtype=dt, name="attention_output")(ctx)
    attn = nn.Dropout(c.dropout)(attn, deterministic=deterministic)
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt, name="attention_LayerNorm")(x + attn)
    ff = nn.gelu(nn.Dense(c.intermediate_size, dtype=dt, name="intermediate")(x), approximate=False)
    ff = nn.Dense(c.hidden_size, dtype=dt, name="output")(ff)
    ff = nn.Dropout(c.dropout)(ff, deterministic=deterministic)
    return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt, name="output_LayerNorm")(x + ff)


class Encoder(nn.Module):
  """Token ids -> last hidden states [B, L, H]."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids, deterministic=True):
    x = Embeddings(self.config, name="embeddings")(input_ids, token_type_ids, deterministic)
    bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    for i in range(self.config.num_layers):
      x = Layer(self.config, name=f"layer_{i}")(x, bias, deterministic)
    return x


def mean_pool(hidden, attention_mask):
  m = attention_mask[..., None].astype(hidden.dtype)
  return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1)


class Classifier(nn.Module):
  """Encoder, masked mean pooling, dropout, linear head -> float32 logits [B, num_classes]."""
  config: BertConfig
  num_classes: int

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids, deterministic=True):
    hidden = Encoder(self.config, name="encoder")(input_ids, attention_mask, token_type_ids, deterministic)
    pooled = nn.Dropout(self.config.dropout)(mean_pool(hidden, attention_mask), deterministic=deterministic)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="head")(pooled.astype(jnp.float32))


# ------------------------------------------------------------------------------------------------ weights
def _minilm_config(dropout: float, dtype: str) -> BertConfig:
  from rlsel.assets import minilm_dir
  raw = json.loads((minilm_dir() / "config.json").read_text())
  return BertConfig(vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"],
                    num_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"],
                    max_position=raw["max_position_embeddings"], type_vocab_size=raw["type_vocab_size"],
                    layer_norm_eps=raw["layer_norm_eps"], dropout=dropout, dtype=dtype)


@functools.lru_cache(maxsize=1)
def _minilm_tensors() -> dict:
  from safetensors.numpy import load_file
  from rlsel.assets import minilm_dir
  return load_file(str(minilm_dir() / "model.safetensors"))


def minilm_encoder_params(num_layers: int) -> dict:
  """The all-MiniLM-L6-v2 safetensors mapped onto `Encoder`'s parameter tree (torch [out, in] -> flax [in, out])."""
  w = _minilm_tensors()
  dense = lambda p: {"kernel": w[p + ".weight"].T.copy(), "bias": w[p + ".bias"]}
  norm = lambda p: {"scale": w[p + ".weight"], "bias": w[p + ".bias"]}
  emb = {name: {"embedding": w[f"embeddings.{name}.weight"]}
         for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
  emb["LayerNorm"] = norm("embeddings.LayerNorm")
  params = {"embeddings": emb}
  for i in range(num_layers):
    p = f"encoder.layer.{i}."
    params[f"layer_{i}"] = {
        "query": dense(p + "attention.self.query"), "key": dense(p + "attention.self.key"),
        "value": dense(p + "attention.self.value"), "attention_output": dense(p + "attention.output.dense"),
        "attention_LayerNorm": norm(p + "attention.output.LayerNorm"), "intermediate": dense(p + "intermediate.dense"),
        "output": dense(p + "output.dense"), "output_LayerNorm": norm(p + "output.LayerNorm"),
    }
  return jax.tree.map(jnp.asarray, params)


def pretrained_encoder(dtype: str = "float32"):
  """(Encoder module, params) of the frozen all-MiniLM-L6-v2, for pool features."""
  config = _minilm_config(dropout=0.0, dtype=dtype)
  return Encoder(config), minilm_encoder_params(config.num_layers)


def validate(config) -> None:
  """Checks `config.target` (the section this module owns) before any work; decoder kinds in rlsel/target/llm.py."""
  tc = config.target
  require_choice(tc.kind, "target.kind", KINDS)
  require_choice(tc.dtype, "target.dtype", tuple(DTYPES))
  if tc.kind in DECODER_KINDS:
    from rlsel.target import llm
    llm.validate(tc)
  elif tc.kind == "tiny" and tc.hidden_size % tc.num_heads:
    raise UserError(f"target.hidden_size={tc.hidden_size} must be divisible by target.num_heads={tc.num_heads}")


def tokenize(config, texts, pairs) -> dict:
  """The target's token arrays int32 [n, length]: MiniLM WordPiece at `features.max_length` for minilm and tiny
  (the pool features' own tokens), the decoder's own tokenizer and length for smollm2 and decoder."""
  if config.target.kind in DECODER_KINDS:
    from rlsel.target import llm
    return llm.tokenize(config, texts, pairs)
  from rlsel import features
  return features.tokenize(texts, pairs, config.features.max_length)


def shares_feature_tokens(config) -> bool:
  """Whether the target reads the same tokens as the frozen MiniLM features (not so for a decoder target)."""
  return config.target.kind not in DECODER_KINDS


def target_config(tc) -> BertConfig:
  """The BertConfig for `config.target` (a BERT kind: minilm or tiny)."""
  if tc.dtype not in DTYPES:
    raise UserError(f"target.dtype={tc.dtype!r} is not one of {', '.join(DTYPES)}")
  if tc.kind in DECODER_KINDS:
    raise UserError(f"target.kind={tc.kind!r} is a decoder, but a BERT is needed here (e.g. proxy.kind=transformer "
                    "runs the target's first BERT layers); use proxy.kind=head, or target.kind=minilm or tiny")
  if tc.kind == "minilm":
    return _minilm_config(tc.dropout, tc.dtype)
  if tc.kind == "tiny":
    if tc.hidden_size % tc.num_heads:
      raise UserError(f"target.hidden_size={tc.hidden_size} must be divisible by target.num_heads={tc.num_heads}")
    return BertConfig(hidden_size=tc.hidden_size, num_layers=tc.num_layers, num_heads=tc.num_heads,
                      intermediate_size=tc.intermediate_size, dropout=tc.dropout, dtype=tc.dtype)
  raise UserError(f"unknown target.kind={tc.kind!r}; use 'minilm' (pretrained) or 'tiny' (random init, for tests)")


def build(config, num_classes: int, key=None):
  """(Classifier module, params) for `config.target`: pretrained MiniLM encoder + fresh head, a random tiny BERT, or
  a decoder classifier (kinds smollm2 and decoder, rlsel/target/llm.py). Every module is called alike:
  `module.apply({"params": params}, input_ids, attention_mask, token_type_ids, deterministic)`."""
  key = jax.random.key(0) if key is None else key
  if config.target.kind in DECODER_KINDS:
    from rlsel.target import llm
    return llm.build(config, num_classes, key)
  bert = target_config(config.target)
  module = Classifier(bert, num_classes)
  length = config.features.max_length
  dummy = jnp.zeros((1, length), jnp.int32)
  params = jax.jit(module.init)(key, dummy, jnp.ones_like(dummy), dummy)["params"]
  if config.target.kind == "minilm":
    params = dict(params)
    params["encoder"] = minilm_encoder_params(bert.num_layers)
  return module, params


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
