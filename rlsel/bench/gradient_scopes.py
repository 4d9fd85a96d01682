"""What each parameter scope of the gradient selectors costs, and whether its gradients say more than the head's.

  python -m rlsel.bench.gradient_scopes --config=configs/glue.py --workdir=DIR [--task=rt] [--examples=512]

It warms the target up as the gradient selectors do (`selection.warmup_*`, the run seed's key), then for each scope
in `--scopes` (`head`, `last_k:K`) takes the projected per-example gradients (`selection.projection_*`) of a
stratified sample of `--examples` pool rows and `--validation_examples` validation rows at the last warm-up
checkpoint, and reports:
- the parameters in scope, the feature width and the projection used;
- seconds per 1,000 examples, and that figure over a forward pass of the same rows timed in the same run;
- how collinear the unit gradients are (mean cosine between two rows of one class: a head's gradients of a binary
  task are +-1 times a class-signed embedding, so this is high);
- a LESS-style score (cosine of an example's unit gradient to its best validation class mean) and its Spearman
  against the example's loss under the warmed model (difficulty) and against the head scope's score.
Writes DIR/gradient_scopes/<task>.json; the last line is `<scope>_s_per_1k=<x>` for the widest scope.
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402


def define_flags() -> None:
  """Defines the command line's flags (only when run as a program, so importing defines none)."""
  global _CONFIG, _WORKDIR, _TASK, _EXAMPLES, _VAL, _SCOPES, _SEED
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/glue.py", "The run's config.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "A main-command workdir (its embedding cache is reused).")
  _TASK = flags.DEFINE_string("task", "rt", "Task whose pool is used.")
  _EXAMPLES = flags.DEFINE_integer("examples", 512, "Pool rows (stratified sample) whose gradients are timed.")
  _VAL = flags.DEFINE_integer("validation_examples", 256, "Validation rows for the LESS-style score.")
  _SCOPES = flags.DEFINE_list("scopes", ["head", "last_k:1", "last_k:2"], "Scopes: head or last_k:K.")
  _SEED = flags.DEFINE_integer("seed", 0, "Run seed (the warm-up key is derived as the selectors derive it).")


def parse_scope(text: str):
  """("head", 0) or ("last_k", K) from "head" / "last_k:K"."""
  from rlsel.errors import UserError
  name, _, k = text.partition(":")
  if name == "head" and not k:
    return "head", 0
  if name == "last_k" and k.isdigit() and int(k) >= 1:
    return "last_k", int(k)
  raise UserError(f"--scopes entry {text!r} must be head or last_k:K with K >= 1")


def within_class_cosine(feats, labels) -> float:
  """Mean cosine between two distinct rows of the same class (unit rows; 1 = all collinear)."""
  import numpy as np
  u = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
  vals = []
  for c in np.unique(labels):
    x = u[labels == c]
    if len(x) > 1:
      g = x @ x.T
      vals.append((g.sum() - np.trace(g)) / (len(x) * (len(x) - 1)))
  return float(np.mean(vals))


def class_alignment(feats, val_feats, val_labels, num_classes: int):
  """Per row: max over classes of the cosine to that class's mean unit validation gradient (LESS's score at one
  checkpoint)."""
  import jax.numpy as jnp
  import numpy as np

  from rlsel.selectors import gradients
  means, present = gradients.class_means(gradients.unit_rows(jnp.asarray(val_feats)), jnp.asarray(val_labels),
                                         num_classes)
  per = np.asarray(gradients.unit_rows(jnp.asarray(feats)) @ means.T)
  return np.max(np.where(np.asarray(present)[None], per, -np.inf), axis=1)


def run(config, workdir: str, task_name: str, examples: int, val_examples: int, scopes, seed: int) -> dict:
  import jax
  import numpy as np
  from scipy import stats as sstats

  from rlsel import harness
  from rlsel.errors import require
  from rlsel.io import atomic_write_json
  from rlsel.selectors import gradients
  from rlsel.selectors.basic import numpy_rng, stratified_sample

  parsed = [parse_scope(s) for s in scopes]
  require(examples >= 8 and val_examples >= 8, "--examples and --validation_examples must be at least 8")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.task = task_name
  task = harness.load_task_for_run(config, workdir)
  pool, _ = harness.build_pool(config, task, workdir)
  s = config.selection

  class Warm(gradients.WarmedSelector):
    def __init__(self, cfg):
      self.config = cfg

  key = jax.random.key(seed)
  t0 = time.time()
  warm = Warm(config).warm_up(key, pool)
  warm_s = time.time() - t0
  fns, params = warm.fns, warm.checkpoints[-1].params
  rng = numpy_rng(jax.random.fold_in(key, 1))
  rows = pool.train.take(stratified_sample(rng, pool.train.labels, min(examples, len(pool.train))))
  val = pool.validation.take(stratified_sample(rng, pool.validation.labels, min(val_examples, len(pool.validation))))
  bs = int(s.grad_batch_size)
  gradients.predict_proba(fns, params, rows.take(np.arange(min(bs, len(rows)))), bs)  # compile
  t0 = time.time()
  probs = gradients.predict_proba(fns, params, rows, bs)
  forward_s = time.time() - t0
  loss = -np.log(np.maximum(probs[np.arange(len(rows)), rows.labels], 1e-12))
  out = {"task": task_name, "seed": seed, "examples": len(rows), "validation_examples": len(val),
         "warmup_seconds": warm_s, "forward_s_per_1k": 1000 * forward_s / len(rows), "scopes": []}
  head_score = None
  for text, (scope, k) in zip(scopes, parsed):
    paths = gradients.select_paths(params, scope, max(k, 1), tuple(s.head_patterns), s.layer_pattern)
    shapes = gradients.leaf_shapes(params, paths)
    proj = gradients.make_projector(jax.random.fold_in(key, 2), s, shapes, sparse=False)
    common = dict(paths=paths, projector=proj, batch_size=bs)
    gradients.gradient_features(fns, params, rows.take(np.arange(min(bs, len(rows)))), **common)  # compile
    t0 = time.time()
    feats = gradients.gradient_features(fns, params, rows, **common)
    grad_s = time.time() - t0
    val_feats = gradients.gradient_features(fns, params, val, **common)
    score = class_alignment(feats, val_feats, val.labels, pool.num_classes)
    head_score = score if head_score is None and scope == "head" else head_score
    out["scopes"].append({
        "scope": text, **proj.describe(), "s_per_1k": 1000 * grad_s / len(rows),
        "vs_forward": grad_s / max(forward_s, 1e-9),
        "within_class_cosine": within_class_cosine(feats, rows.labels),
        "spearman_score_vs_loss": float(sstats.spearmanr(score, loss)[0]),
        "spearman_score_vs_head": None if head_score is None else float(sstats.spearmanr(score, head_score)[0])})
  atomic_write_json(pathlib.Path(workdir) / "gradient_scopes" / f"{task_name}.json", out)
  return out


def main(argv):
  del argv
  from rlsel.errors import UserError, fail
  if not _WORKDIR.value:
    fail("gradient_scopes", "--workdir is required: a main-command workdir for the same config")
  try:
    for s in _SCOPES.value:
      parse_scope(s)
    out = run(_CONFIG.value, _WORKDIR.value, _TASK.value, _EXAMPLES.value, _VAL.value, _SCOPES.value, _SEED.value)
  except UserError as e:
    fail("gradient_scopes", str(e))
  print(f"\n{out['task']}: {out['examples']} pool rows, {out['validation_examples']} validation rows; warm-up "
        f"{out['warmup_seconds']:.0f} s; forward pass {out['forward_s_per_1k']:.1f} s per 1k rows\n")
  print("| scope | params | projection | feature dim | s per 1k | vs forward | within-class cos | "
        "Spearman(score, loss) | Spearman(score, head score) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in out["scopes"]:
    vs_head = "—" if r["spearman_score_vs_head"] is None else f"{r['spearman_score_vs_head']:+.3f}"
    print(f"| {r['scope']} | {r['num_grad_params']:,} | {r['projection']} | {r['feature_dim']:,} | "
          f"{r['s_per_1k']:.1f} | {r['vs_forward']:.2f}x | {r['within_class_cosine']:.3f} | "
          f"{r['spearman_score_vs_loss']:+.3f} | {vs_head} |")
  last = out["scopes"][-1]
  print(f"{last['scope'].replace(':', '')}_s_per_1k={last['s_per_1k']:.2f}")
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
