"""Which parameters of a target train: all of them, or with LoRA adapters only the adapters and the head.

A params tree holding LoRA adapters (leaves named `lora_a` / `lora_b`, see rlsel/rlvr/decoder.py's `LoRADense`)
is split into the trainable part (adapters + the `head` subtree) and the frozen rest (the base model). The fine-tune
loop differentiates and optimises the trainable part only and passes the frozen part as a plain argument, so the
base model costs no gradient or optimiser memory. A tree without adapters is all trainable (full fine-tuning).
"""

from flax import traverse_util

from rlsel.rlvr.decoder import LORA_ADAPTERS

HEAD = "head"  # the classifier's output layer, trained alongside the adapters


def has_adapters(params) -> bool:
  return any(path[-1] in LORA_ADAPTERS for path in traverse_util.flatten_dict(params))


def is_trainable(path: tuple) -> bool:
  """Whether the leaf at `path` (a tuple of keys) of a model with adapters trains: the adapters and the head."""
  return path[-1] in LORA_ADAPTERS or path[0] == HEAD


def partition(params) -> tuple:
  """(trainable, frozen) nested dicts; frozen is {} and trainable `params` itself when there are no adapters."""
  if not has_adapters(params):
    return params, {}
  flat = traverse_util.flatten_dict(params)
  train = {p: v for p, v in flat.items() if is_trainable(p)}
  frozen = {p: v for p, v in flat.items() if not is_trainable(p)}
  return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def combine(trainable, frozen):
  """The whole params tree again (`partition` undone)."""
  if not frozen:
    return trainable
  return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen), **traverse_util.flatten_dict(trainable)})
