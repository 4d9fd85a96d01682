"""Model wiring the gradient selectors share: a classifier as pure functions (`ModelFns`), injectable so tests can
use a tiny model; class probabilities in fixed-size batches; the batching helpers.
"""

import functools
from typing import Callable, NamedTuple

import jax
import numpy as np

from rlsel.selectors.base import Split


class ModelFns(NamedTuple):
  """A classifier as pure functions: `apply(params, input_ids, attention_mask, token_type_ids) -> logits [B, C]`."""
  apply: Callable
  params: dict


def target_model_fns(config, num_classes: int, key=None) -> ModelFns:
  """WIRING to the target model (`rlsel.target.model.build`), deterministic forward pass (no dropout)."""
  from rlsel.target import model as target_model  # heavy; only when a gradient selector actually runs
  module, params = target_model.build(config, num_classes, key)
  return ModelFns(module_apply(module), params)


@functools.lru_cache(maxsize=8)
def module_apply(module) -> Callable:
  """`apply(params, ids, mask, token_types)` of a linen classifier, one per module so jitted callers compile once."""
  def apply(p, input_ids, attention_mask, token_type_ids):
    return module.apply({"params": p}, input_ids, attention_mask, token_type_ids, deterministic=True)
  return apply


@functools.partial(jax.jit, static_argnames=("apply",))
def _probs(params, input_ids, attention_mask, token_type_ids, *, apply):
  return jax.nn.softmax(apply(params, input_ids, attention_mask, token_type_ids), axis=-1)


def predict_proba(fns: ModelFns, params, split: Split, batch_size: int) -> np.ndarray:
  """Class probabilities [n, C] of `split` under `params`, in fixed-size (padded) jitted batches."""
  out = []
  for pos in batch_starts(len(split), batch_size):
    pos_p = pad_positions(pos, batch_size)
    probs = _probs(params, split.input_ids[pos_p], split.attention_mask[pos_p], split.token_type_ids[pos_p],
                   apply=fns.apply)
    out.append(np.asarray(probs)[:pos.shape[0]])
  return np.concatenate(out, 0)


def batch_starts(n: int, batch_size: int):
  for s in range(0, n, batch_size):
    yield np.arange(s, min(n, s + batch_size))


def pad_positions(pos: np.ndarray, batch_size: int) -> np.ndarray:
  """Positions padded to `batch_size` by repeating the first (the padded rows' outputs are dropped)."""
  return np.concatenate([pos, np.full(batch_size - pos.shape[0], pos[0], pos.dtype)])


def batch_of(split: Split, pos: np.ndarray) -> dict:
  return {"input_ids": split.input_ids[pos], "attention_mask": split.attention_mask[pos],
          "token_type_ids": split.token_type_ids[pos], "labels": split.labels[pos].astype(np.int32)}
