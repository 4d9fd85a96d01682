"""Per-example gradients (`vmap` of `grad`), LESS's Adam-aware feature, and the batched, projected features of a split.
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import progress as progress_lib
from rlsel.selectors.base import Split
from rlsel.selectors.gradients.model import ModelFns, batch_of, length_sorted
from rlsel.selectors.gradients.params import flat_params, flatten_rows, flatten_vector, merge_params, split_params
from rlsel.selectors.gradients.projection import Projector, apply_projection
from rlsel.selectors.gradients.warmup import Checkpoint


def per_example_grads(apply: Callable, selected: dict, frozen: dict, batch: dict) -> dict:
  """Gradients of each example's cross-entropy w.r.t. the selected params: flat dict of [B, ...]."""
  def loss_one(sel, ids, mask, tt, label):
    logits = apply(merge_params(sel, frozen), ids[None], mask[None], tt[None])[0]
    return -jax.nn.log_softmax(logits)[label]
  return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0, 0, 0))(
      selected, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["labels"])


def adam_features(g: jax.Array, mu: jax.Array, nu: jax.Array, count: int, b1: float, b2: float, eps: float):
  """LESS's Adam-aware feature: the Adam update direction after one moment update with the example's gradient.

  m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2, bias-corrected at step t = count + 1, Gamma = m^ / (sqrt(v^) + eps).
  """
  t = jnp.asarray(count, jnp.float32) + 1.0
  m = b1 * mu + (1.0 - b1) * g
  v = b2 * nu + (1.0 - b2) * jnp.square(g)
  m_hat = m / (1.0 - jnp.power(b1, t))
  v_hat = v / (1.0 - jnp.power(b2, t))
  return m_hat / (jnp.sqrt(v_hat) + eps)


def adam_term_norms(fns: ModelFns, split: Split, paths: list, ck: Checkpoint, hparams, n: int = 8) -> dict:
  """How much of LESS's Adam feature is shared by every example: for the first `n` examples of `split`, the mean
  norms of the two parts of m^ / (sqrt(v^) + eps), the shared b1 m and the example's own (1 - b1) g (same
  denominator). A shared part much larger than the own part makes all features nearly collinear."""
  b1, b2, eps = (float(h) for h in hparams)
  selected, frozen = split_params(ck.params, paths)
  pos = np.arange(min(n, len(split)))
  g = flatten_rows(per_example_grads(fns.apply, selected, frozen, batch_of(split, pos)), list(paths))
  mu = flatten_vector(flat_params(ck.mu), paths)[None]
  nu = flatten_vector(flat_params(ck.nu), paths)[None]
  t = float(ck.count) + 1.0
  denom = jnp.sqrt((b2 * nu + (1.0 - b2) * jnp.square(g)) / (1.0 - b2 ** t)) + eps
  shared = jnp.linalg.norm(b1 * mu / (1.0 - b1 ** t) / denom, axis=1)
  own = jnp.linalg.norm((1.0 - b1) * g / (1.0 - b1 ** t) / denom, axis=1)
  return {"shared_norm": float(shared.mean()), "own_norm": float(own.mean()),
          "shared_over_own": float((shared / jnp.maximum(own, 1e-30)).mean())}


@functools.partial(jax.jit, static_argnames=("apply", "paths", "kind", "dim", "block", "shapes", "use_adam",
                                             "hparams"))
def _batch_features(selected, frozen, mu, nu, count, key, coords, batch, *, apply, paths, kind, dim, block, shapes,
                    use_adam, hparams):
  """One batch of projected (optionally Adam-transformed) per-example gradients; compiled once per model/setting."""
  g = flatten_rows(per_example_grads(apply, selected, frozen, batch), list(paths))
  if use_adam:
    g = adam_features(g, mu[None], nu[None], count, *hparams)
  return apply_projection(g, key, coords, kind, dim, block, shapes)


def gradient_features(fns: ModelFns, params, split: Split, paths: list, projector: Projector, batch_size: int,
                      adam: Optional[Checkpoint] = None, adam_hparams=(0.9, 0.999, 1e-8), progress: bool = False,
                      label: str = "gradients", length_multiple: int = 0) -> np.ndarray:
  """Projected per-example gradients [n, dim] of `split` (Adam-transformed if `adam` is given), one jitted batch at a
  time on the host, with progress lines on stderr if `progress`. `length_multiple` > 0 runs length-sorted batches
  cut to their longest row (`model.length_sorted`; one compile per width): padding columns carry no gradient, so the
  features are the same up to float rounding, for less time on short texts."""
  selected, frozen = split_params(params, paths)
  if adam is not None:
    mu = flatten_vector(flat_params(adam.mu), paths)
    nu = flatten_vector(flat_params(adam.nu), paths)
  else:
    mu = nu = jnp.zeros((1,), jnp.float32)
  count = jnp.asarray(0 if adam is None else int(adam.count), jnp.int32)
  coords = projector.coords if projector.coords is not None else jnp.zeros((1,), jnp.int32)
  static = dict(apply=fns.apply, paths=tuple(paths), kind=projector.kind, dim=projector.dim, block=projector.block,
                shapes=tuple(projector.shapes), use_adam=adam is not None, hparams=tuple(float(h) for h in adam_hparams))
  out = None
  bar = progress_lib.bar(len(split), label) if progress else None
  for pos, real, cols in length_sorted(split, batch_size, length_multiple):
    feats = np.asarray(_batch_features(selected, frozen, mu, nu, count, projector.key, coords,
                                       batch_of(split, pos, cols), **static))
    out = np.zeros((len(split), feats.shape[1]), np.float32) if out is None else out
    out[pos[:real]] = feats[:real]
    if bar:
      bar.update(real)
  if bar:
    bar.close()
  return out
