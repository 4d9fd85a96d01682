"""CROPI-style curriculum selection by gradient influence on per-class validation subsets.

Influence of a pool example on a validation subset = cosine between its projected gradient and the subset's mean
projected gradient. The reference's sparse-then-Gaussian map is `selection.cropi_sparse=True`; by default CROPI uses
the Kronecker map of the other gradient selectors, which the sparse map's cost on a whole layer rules out on a CPU. The validation split is cut into one subset per class; each gives a ranking, merged by summed
reciprocal rank over each ranking's top N (`selection.rrf_top_n`; default the round's share, as the reference).
Selection runs in R rounds: pick 1/R of the budget, fine-tune from the current checkpoint on all that
has been picked so far, recompute the gradients there, pick the next share (never re-picking).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from rlsel.selectors import gradients
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register


def class_influence(pool_feats: jax.Array, val_feats: jax.Array, val_labels: jax.Array, num_classes: int):
  """Cosines [C, n] between pool features and each class's mean validation feature, and which classes exist [C]."""
  means, present = gradients.class_means(val_feats, val_labels, num_classes)
  return gradients.unit_rows(means) @ gradients.unit_rows(pool_feats).T, present


def reciprocal_rank_fusion(scores: jax.Array, use: jax.Array, offset: float, top_n: int = 0) -> jax.Array:
  """sum_c use_c / (offset + rank_c(i)) for scores [C, n], rank 1 = highest score (ties by position). With
  `top_n` > 0 only each list's top `top_n` count (the reference fuses the validation subsets' top-N lists)."""
  order = jnp.argsort(-scores, axis=1, stable=True)
  ranks = (jnp.argsort(order, axis=1, stable=True) + 1).astype(jnp.float32)
  terms = use[:, None] / (offset + ranks)
  if top_n > 0:
    terms = jnp.where(ranks <= top_n, terms, 0.0)
  return jnp.sum(terms, axis=0)


def fusion_top_n(setting: int, share: int) -> int:
  """`selection.rrf_top_n` for a round picking `share`: -1 = the share (each list's top share), 0 = every rank."""
  return int(share) if int(setting) == -1 else int(setting)


def round_shares(budget: int, rounds: int) -> list:
  """The budget cut into `rounds` near-equal positive shares (fewer rounds if the budget is smaller)."""
  rounds = max(1, min(rounds, budget))
  return [len(a) for a in np.array_split(np.arange(budget), rounds)]


@register("cropi")
class Cropi(gradients.WarmedSelector, Selector):
  """Curriculum of R rounds of sparse-gradient influence selection, fine-tuning on the picks between rounds."""
  version = 3  # 3: rank fusion over each class list's top share only, as the reference (selection.rrf_top_n)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    _, kproj, kround = jax.random.split(key, 3)
    warm = self.warm_up(key, pool)
    fns, paths, ckpts = warm.fns, warm.paths, warm.checkpoints
    params = ckpts[-1].params
    projector = gradients.make_projector(kproj, s, gradients.leaf_shapes(params, paths), sparse=bool(s.cropi_sparse))
    seconds = {"warmup": time.time() - t0, "gradients": 0.0, "finetune": 0.0}
    chosen = np.zeros(len(pool.train), bool)
    shares = round_shares(budget, int(s.cropi_rounds))
    for r, share in enumerate(shares):
      t = time.time()
      remaining = np.flatnonzero(~chosen)
      common = dict(paths=paths, projector=projector, batch_size=int(s.grad_batch_size),
                    progress=bool(s.progress), length_multiple=int(self.config.features.length_multiple))
      pool_f = gradients.gradient_features(fns, params, pool.train.take(remaining), label=f"cropi round {r} pool",
                                           **common)
      val_f = gradients.gradient_features(fns, params, pool.validation, label=f"cropi round {r} val", **common)
      infl, use = class_influence(jnp.asarray(pool_f), jnp.asarray(val_f), jnp.asarray(pool.validation.labels),
                                  pool.num_classes)
      fused = np.asarray(reciprocal_rank_fusion(infl, use.astype(jnp.float32), float(s.rrf_offset),
                                                fusion_top_n(s.rrf_top_n, share)))
      by_label = pool.train.labels[remaining] if s.label_balanced else None
      chosen[remaining[gradients.top_k_positions(fused, share, by_label)]] = True
      seconds["gradients"] += time.time() - t
      if r + 1 < len(shares):
        t = time.time()
        params = gradients.warmup_train(jax.random.fold_in(kround, r), fns, params,
                                        pool.train.take(np.flatnonzero(chosen)), int(s.cropi_round_epochs),
                                        int(s.train_batch_size), float(s.learning_rate),
                                        float(s.schedule_warmup_fraction), gradients.adam_hparams(s))[-1].params
        seconds["finetune"] += time.time() - t
    info = {f"{k}_seconds": v for k, v in seconds.items()}
    info.update(warmup_reused=warm.reused, rounds=len(shares), shares=shares,
                **projector.describe())
    return Selection(pool.train.ids[np.flatnonzero(chosen)], info)
