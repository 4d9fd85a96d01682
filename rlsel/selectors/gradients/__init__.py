"""Per-example gradient features for the gradient-based selectors (LESS, LearnAlign, CROPI, DOTS' warm-up).

A pool example's feature is the gradient of its loss with respect to a subset of the model's parameters (the head, the
last k layers, the LoRA adapters and the head, or all), flattened and projected to `d` dimensions by a random
Johnson-Lindenstrauss map.

- `model`: the classifier as pure functions (`ModelFns`), probabilities, batching;
- `params`: which parameters, and flattening them;
- `projection`: dense and sparse projections regenerated blockwise under jit, `Projector`;
- `features`: per-example gradients, LESS's Adam feature, the projected features of a split;
- `warmup`: the Adam warm-up with a checkpoint per epoch, and `WarmedSelector` (one warm-up shared per seed).
Also here: `validate`, the check of the `selection` config section.
"""

from rlsel.selectors.basic import top_k_positions
from rlsel.selectors.gradients.features import (adam_features, adam_term_norms, gradient_features,
                                                per_example_grads)
from rlsel.selectors.gradients.model import ModelFns, batch_of, module_apply, predict_proba, target_model_fns
from rlsel.selectors.gradients.params import (flat_params, flatten_rows, flatten_vector, leaf_shapes, merge_params,
                                              num_coordinates, select_paths, split_params)
from rlsel.selectors.gradients.projection import (PROJECTION_KINDS, Projector, class_means, dense_project,
                                                  kronecker_dim, kronecker_factor, kronecker_project, make_projector,
                                                  project_columns, projection_rows, sparse_coordinates, sparse_project,
                                                  unit_rows)
from rlsel.selectors.gradients.warmup import (Checkpoint, WarmedSelector, Warmup, adam_hparams, clear_cache,
                                              warmup_train)

__all__ = ["Checkpoint", "ModelFns", "PROJECTION_KINDS", "Projector", "WarmedSelector", "Warmup", "adam_features",
           "adam_hparams", "adam_term_norms", "batch_of", "class_means", "clear_cache", "dense_project",
           "flat_params", "flatten_rows", "flatten_vector", "gradient_features", "kronecker_dim", "kronecker_factor",
           "kronecker_project", "leaf_shapes", "make_projector", "merge_params", "module_apply", "num_coordinates",
           "per_example_grads", "predict_proba", "project_columns", "projection_rows", "select_paths",
           "sparse_coordinates", "sparse_project", "split_params", "target_model_fns", "top_k_positions", "unit_rows",
           "validate", "warmup_train"]


def validate(config) -> None:
  """Checks `config.selection` before any work (the literature selectors and the embedding heuristics)."""
  from rlsel.errors import require, require_choice, require_int, require_number
  s = config.selection
  for f in ("label_balanced", "cropi_sparse"):
    require(isinstance(s[f], bool), f"selection.{f}={s[f]!r} must be True or False")
  from rlsel.selectors.gradients.params import SCOPES
  require_choice(s.param_scope, "selection.param_scope", SCOPES)
  from rlsel.target.model import DECODER_KINDS
  lora_target = config.target.kind in DECODER_KINDS and config.target.lora_rank > 0
  require(s.param_scope not in ("all", "last_k") or not lora_target,
          f"selection.param_scope={s.param_scope} takes gradients of the frozen base, but with target.lora_rank > 0 "
          "only the LoRA adapters and the head train; use --config.selection.param_scope=lora (as LESS) or head")
  require(s.param_scope != "lora" or lora_target,
          "selection.param_scope=lora needs LoRA adapters on the target: a decoder target (target.kind=smollm2 or "
          "decoder) with --config.target.lora_rank > 0; or use another --config.selection.param_scope")
  from rlsel.selectors.gradients.projection import PROJECTION_KINDS
  require_choice(s.projection_kind, "selection.projection_kind", PROJECTION_KINDS)
  require_choice(s.less_feature, "selection.less_feature", ("adam", "sgd"))
  require_choice(s.learnalign_alignment, "selection.learnalign_alignment", ("class", "pool"))
  for f in ("last_k", "projection_dim", "projection_block", "sparse_coords", "grad_batch_size", "eval_batch_size",
            "warmup_epochs", "train_batch_size", "cropi_rounds", "dots_reference_size", "estimator_hidden",
            "estimator_steps", "calibration_steps", "probe_steps", "kmeans_clusters", "kmeans_iters"):
    require_int(s[f], f"selection.{f}", low=1)
  require_int(s.cropi_round_epochs, "selection.cropi_round_epochs", low=0)
  require_int(s.warmup_steps, "selection.warmup_steps", low=0)
  require_int(s.warmup_checkpoints, "selection.warmup_checkpoints", low=0)
  require_int(s.rrf_top_n, "selection.rrf_top_n", low=-1)
  require(s.less_checkpoints == -1 or (isinstance(s.less_checkpoints, int) and s.less_checkpoints >= 1),
          f"selection.less_checkpoints={s.less_checkpoints!r} must be -1 (all) or a positive integer")
  require_number(s.warmup_fraction, "selection.warmup_fraction", low=0, high=1, low_open=True)
  for f in ("schedule_warmup_fraction", "adam_b1", "adam_b2", "dots_holdout_fraction"):
    require_number(s[f], f"selection.{f}", low=0, high=1, high_open=True)
  require_number(s.dots_alpha, "selection.dots_alpha", low=0, high=1)
  for f in ("learning_rate", "adam_eps", "dots_tau", "estimator_learning_rate", "calibration_learning_rate",
            "probe_learning_rate"):
    require_number(s[f], f"selection.{f}", low=0, low_open=True)
  for f in ("rrf_offset", "probe_l2"):
    require_number(s[f], f"selection.{f}", low=0)
