"""LESS (Xia et al., 2024): select the pool examples whose Adam-aware gradients align with the validation gradients.

Warm up on a random share of the pool keeping a checkpoint (params + Adam moments) per epoch. At each checkpoint a pool
example's feature is the projected Adam update direction its gradient would cause (`gradients.adam_features`), a
validation example's the projected plain gradient; both are L2-normalised (`selection.less_feature="sgd"`: the pool's
plain gradient too, the reference's SGD option). `info["adam_term"]` logs the norm of the part of the Adam feature
every example shares (b1 m) against the example's own part ((1 - b1) g). An example's score is the sum over
checkpoints of (that epoch's mean learning rate) x (max over classes of the mean cosine to that class's validation
gradients). The top `budget` are chosen.
"""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlsel.selectors import gradients
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register


def less_scores(train_feats: jax.Array, val_feats: jax.Array, val_labels: jax.Array, lrs: jax.Array,
                num_classes: int) -> jax.Array:
  """Scores [n] from features per checkpoint: train [K, n, d], validation [K, m, d], lrs [K].

  mean_j cos(t, v_j) over a class = t_hat . mean_j v_hat_j, so no n x m matrix is formed.
  """
  chex.assert_rank([train_feats, val_feats, lrs], [3, 3, 1])
  chex.assert_equal_shape_prefix([train_feats, val_feats, lrs], 1)
  def one(t, v):
    means, present = gradients.class_means(gradients.unit_rows(v), val_labels, num_classes)
    per_class = gradients.unit_rows(t) @ means.T
    return jnp.max(jnp.where(present[None], per_class, -jnp.inf), axis=1)
  return jnp.einsum("k,kn->n", lrs, jax.vmap(one)(train_feats, val_feats))


@register("less")
class Less(gradients.WarmedSelector, Selector):
  """LESS with per-epoch warm-up checkpoints, Adam-aware pool features and class-wise max validation alignment."""

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    _, kproj = jax.random.split(key)
    warm = self.warm_up(key, pool)
    fns, paths, ckpts = warm.fns, warm.paths, warm.checkpoints
    if int(s.less_checkpoints) > 0:
      ckpts = ckpts[-int(s.less_checkpoints):]
    t1 = time.time()
    projector = gradients.make_projector(kproj, s, gradients.leaf_shapes(fns.params, paths), sparse=False)
    train_f, val_f = [], []
    for i, ck in enumerate(ckpts):
      common = dict(paths=paths, projector=projector, batch_size=int(s.grad_batch_size),
                    progress=bool(s.progress), length_multiple=int(self.config.features.length_multiple))
      use_adam = s.less_feature == "adam"
      train_f.append(gradients.gradient_features(fns, ck.params, pool.train, adam=ck if use_adam else None,
                                                 adam_hparams=gradients.adam_hparams(s),
                                                 label=f"less pool grads ckpt {i}", **common))
      val_f.append(gradients.gradient_features(fns, ck.params, pool.validation, label=f"less val grads ckpt {i}",
                                               **common))
    t2 = time.time()
    lrs = jnp.asarray([ck.lr_mean for ck in ckpts], jnp.float32)
    scores = np.asarray(less_scores(jnp.asarray(np.stack(train_f)), jnp.asarray(np.stack(val_f)),
                                    jnp.asarray(pool.validation.labels), lrs, pool.num_classes))
    pos = gradients.top_k_positions(scores, budget, pool.train.labels if s.label_balanced else None)
    info = {"warmup_reused": warm.reused, "warmup_seconds": t1 - t0, "gradient_seconds": t2 - t1,
            "score_seconds": time.time() - t2, "checkpoints": len(ckpts),
            "lr_means": [float(x) for x in lrs], "score_min_selected": float(scores[pos].min()),
            "score_mean": float(scores.mean()), "feature": str(s.less_feature), **projector.describe(),
            # the Adam feature's part shared by every example (b1 m) against the example's own (1 - b1) g, last ckpt
            "adam_term": gradients.adam_term_norms(fns, pool.train, paths, ckpts[-1], gradients.adam_hparams(s))}
    return Selection(pool.train.ids[pos], info)
