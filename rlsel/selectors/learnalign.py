"""LearnAlign (gradient-alignment data selection with a learnability weight).

With V_i = p_i (1 - p_i) (p_i the warmed model's probability of the correct label: highest for examples the model is
unsure of) and phi_hat_i the unit projected gradient, an example's score is its mean weighted cosine alignment with the
whole pool, mean_j V_i V_j cos(phi_i, phi_j) = V_i phi_hat_i . mean_j (V_j phi_hat_j): O(n d), not O(n^2 d).

`selection.learnalign_alignment="pool"` is that formula. With a classifier it is degenerate: gradients point in
opposite directions by class, so the pool's weighted mean mostly says which class weighs more, every example of the
other class scores negative, and per-label top-k then takes that class's *least* aligned examples. The default,
"class", aligns each example with its own class's learnability-weighted mean gradient (mean over j with y_j = y_i).
"""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlsel.selectors import gradients
from rlsel.selectors.base import Pool, RunDirs, Selection, Selector, register


def learnability(p_correct: jax.Array) -> jax.Array:
  """V = p (1 - p): the Bernoulli variance of being right."""
  return p_correct * (1.0 - p_correct)


def learnalign_scores(feats: jax.Array, p_correct: jax.Array) -> jax.Array:
  """score_i = V_i phi_hat_i . mean_j V_j phi_hat_j for feats [n, d] and p_correct [n]."""
  chex.assert_rank([feats, p_correct], [2, 1])
  chex.assert_equal_shape_prefix([feats, p_correct], 1)
  u = learnability(p_correct)[:, None] * gradients.unit_rows(feats)
  return u @ u.mean(0)


def learnalign_class_scores(feats: jax.Array, p_correct: jax.Array, labels: jax.Array, num_classes: int):
  """score_i = V_i phi_hat_i . mean_{j: y_j = y_i} V_j phi_hat_j: alignment within the example's own class."""
  chex.assert_rank([feats, p_correct, labels], [2, 1, 1])
  u = learnability(p_correct)[:, None] * gradients.unit_rows(feats)
  means, _ = gradients.class_means(u, labels, num_classes)
  return jnp.sum(u * means[labels], axis=1)


def learnalign_scores_pairwise(feats: jax.Array, p_correct: jax.Array) -> jax.Array:
  """The O(n^2) definition, mean_j V_i V_j cos(phi_i, phi_j); for tests."""
  v = learnability(p_correct)
  unit = gradients.unit_rows(feats)
  return jnp.mean(v[:, None] * v[None, :] * (unit @ unit.T), axis=1)


@register("learnalign")
class LearnAlign(gradients.WarmedSelector, Selector):
  """Top of the budget by learnability-weighted gradient alignment under the warmed model."""
  version = 3  # 3: alignment within the example's class by default (selection.learnalign_alignment; 2026-12-02)

  def select(self, key, pool: Pool, budget: int, dirs: RunDirs = RunDirs()) -> Selection:
    s = self.config.selection
    t0 = time.time()
    _, kproj = jax.random.split(key)
    warm = self.warm_up(key, pool)
    fns, paths, ckpts = warm.fns, warm.paths, warm.checkpoints
    params = ckpts[-1].params
    t1 = time.time()
    probs = gradients.predict_proba(fns, params, pool.train, int(s.eval_batch_size),
                                    int(self.config.features.length_multiple))
    p_correct = probs[np.arange(len(pool.train)), pool.train.labels]
    projector = gradients.make_projector(kproj, s, gradients.leaf_shapes(params, paths), sparse=False)
    feats = gradients.gradient_features(fns, params, pool.train, paths, projector, int(s.grad_batch_size),
                                        progress=bool(s.progress), label="learnalign pool grads",
                                        length_multiple=int(self.config.features.length_multiple))
    t2 = time.time()
    if s.learnalign_alignment == "class":
      scores = np.asarray(learnalign_class_scores(jnp.asarray(feats), jnp.asarray(p_correct, jnp.float32),
                                                  jnp.asarray(pool.train.labels), pool.num_classes))
    else:
      scores = np.asarray(learnalign_scores(jnp.asarray(feats), jnp.asarray(p_correct, jnp.float32)))
    pos = gradients.top_k_positions(scores, budget, pool.train.labels if s.label_balanced else None)
    info = {"warmup_reused": warm.reused, "warmup_seconds": t1 - t0, "gradient_seconds": t2 - t1,
            "score_seconds": time.time() - t2,
            "mean_p_correct_pool": float(p_correct.mean()),
            "mean_p_correct_selected": float(p_correct[pos].mean()),
            "mean_learnability_selected": float(np.mean(p_correct[pos] * (1 - p_correct[pos]))),
            "alignment": str(s.learnalign_alignment), "share_of_pool_scoring_negative": float(np.mean(scores < 0)),
            **projector.describe()}
    return Selection(pool.train.ids[pos], info)
