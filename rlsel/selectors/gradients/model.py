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


def predict_proba(fns: ModelFns, params, split: Split, batch_size: int, length_multiple: int = 0) -> np.ndarray:
  """Class probabilities [n, C] of `split` under `params`, in fixed-size (padded) jitted batches; `length_multiple`
  > 0 sorts the rows by length and cuts each batch to its longest row (`length_sorted`): the same probabilities up
  to float rounding, fewer padding columns paid for."""
  out = None
  for pos, real, cols in length_sorted(split, batch_size, length_multiple):
    probs = np.asarray(_probs(params, split.input_ids[pos, :cols], split.attention_mask[pos, :cols],
                              split.token_type_ids[pos, :cols], apply=fns.apply))
    out = np.zeros((len(split), probs.shape[1]), np.float32) if out is None else out
    out[pos[:real]] = probs[:real]
  return out


def length_sorted(split: Split, batch_size: int, length_multiple: int):
  """(positions [batch_size], real rows, columns) of `split`'s batches: `features.length_sorted_batches` (in row order
  at full width when `length_multiple` is 0). Per-example outputs do not depend on the batch a row lands in, so
  callers scatter them back by position."""
  from rlsel import features
  return features.length_sorted_batches(split.attention_mask, batch_size, int(length_multiple))


def batch_of(split: Split, pos: np.ndarray, cols: int = None) -> dict:
  """The batch of rows `pos`, its token arrays cut to the first `cols` columns (default all)."""
  return {"input_ids": split.input_ids[pos, :cols], "attention_mask": split.attention_mask[pos, :cols],
          "token_type_ids": split.token_type_ids[pos, :cols], "labels": split.labels[pos].astype(np.int32)}
