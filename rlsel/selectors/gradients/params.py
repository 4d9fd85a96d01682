"""Parameter subsets whose per-example gradients are taken: the head, the last k layers, the LoRA adapters and the
head, or all; flattening them.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rlsel.errors import UserError
from rlsel.rlvr.decoder import LORA_ADAPTERS

_SEP = "/"
SCOPES = ("head", "last_k", "lora", "all")


def flat_params(tree) -> dict:
  return traverse_util.flatten_dict(tree, sep=_SEP)


def select_paths(params, scope: str, last_k: int, head_patterns, layer_pattern: str) -> list:
  """Sorted parameter paths ("a/b/kernel") that get gradients.

  scope "head": paths containing any of `head_patterns`; "last_k": the head plus the `last_k` highest-numbered layers
  (layer number = first group of `layer_pattern` in the path); "lora": the head plus the LoRA adapters (a decoder
  target with `target.lora_rank` > 0, as LESS takes them); "all": every parameter.
  """
  paths = sorted(flat_params(params))
  if scope == "all":
    return paths
  if scope not in SCOPES:
    raise UserError(f"selection.param_scope={scope!r} is not one of {', '.join(SCOPES)}; set "
                    "--config.selection.param_scope")
  head = [p for p in paths if any(h in p for h in head_patterns)]
  if not head:
    raise UserError(f"no parameter path contains any of selection.head_patterns={tuple(head_patterns)}; "
                    f"paths look like {paths[:3]} ... {paths[-3:]}; set --config.selection.head_patterns")
  if scope == "head":
    return head
  if scope == "lora":
    adapters = [p for p in paths if p.split(_SEP)[-1] in LORA_ADAPTERS]
    if not adapters:
      raise UserError("selection.param_scope=lora but the target has no LoRA adapters; set --config.target.lora_rank "
                      "(a decoder target, kind smollm2 or decoder) or another --config.selection.param_scope")
    return sorted(set(head) | set(adapters))
  rx = re.compile(layer_pattern)
  layer_of = {}
  for p in paths:
    m = rx.search(p)
    if m:
      layer_of[p] = int(m.group(1))
  if not layer_of:
    raise UserError(f"no parameter path matches selection.layer_pattern={layer_pattern!r}; paths look like "
                    f"{paths[:3]}; set --config.selection.layer_pattern or use param_scope=head")
  keep = set(sorted(set(layer_of.values()))[-last_k:]) if last_k > 0 else set()
  return sorted(set(head) | {p for p, l in layer_of.items() if l in keep})


def split_params(params, paths: list):
  """(selected, frozen) flat dicts; `merge_params` undoes it."""
  flat = flat_params(params)
  chosen = set(paths)
  return {p: flat[p] for p in paths}, {p: v for p, v in flat.items() if p not in chosen}


def merge_params(selected: dict, frozen: dict):
  return traverse_util.unflatten_dict({**frozen, **selected}, sep=_SEP)


def flatten_rows(tree: dict, paths: list) -> jax.Array:
  """A per-example flat dict of [B, ...] arrays -> [B, P] in `paths` order."""
  return jnp.concatenate([tree[p].reshape(tree[p].shape[0], -1) for p in paths], axis=1)


def flatten_vector(tree: dict, paths: list) -> jax.Array:
  """A flat dict of parameter-shaped arrays -> [P] in `paths` order (matches one row of `flatten_rows`)."""
  return jnp.concatenate([jnp.ravel(tree[p]) for p in paths])


def leaf_shapes(params, paths: list) -> tuple:
  """The shapes of the leaves at `paths`, in `paths` order (the layout of a `flatten_rows` row)."""
  flat = flat_params(params)
  return tuple(tuple(int(d) for d in flat[p].shape) for p in paths)


def num_coordinates(selected: dict) -> int:
  return int(sum(int(np.prod(v.shape)) for v in selected.values()))
