"""How many fine-tune steps a budget-sized subset needs: random subsets at several step budgets, paired seeds.

  python -m rlsel.bench.steps_curve --config=configs/glue.py --workdir=DIR [--tasks=rt,tweets] \
      [--steps=50,100,200,400] [--seeds=0,1,2] [--run=True]

For each task and step budget S, `random` at the config's budget is fine-tuned with `finetune.min_steps = S` and
`finetune.max_steps = S` (so the plan is exactly S steps; early stopping on validation still in charge) in
`DIR/<task>_s<S>/`, through the main harness (resumable; the same seed gives the same subset at every S, so the
comparison is paired). With `--run=False` it only reads finished workdirs. Prints, per task and S, mean validation
and test accuracy, the steps taken and kept, and the paired test difference to the smallest S (95% interval). The
recommended S is chosen on *validation* accuracy (never test): the smallest S whose mean validation accuracy over the
tasks is within `--tolerance` of the best S's. Last line: `recommended_min_steps=<S>`.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

def define_flags() -> None:
  """Defines the command line's flags: called only when this module runs as a program, so that importing it for
  its functions (tests import several benchmarks into one process) defines none."""
  global _CONFIG, _WORKDIR, _TASKS, _STEPS, _SEEDS, _RUN, _TOLERANCE
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/glue.py", "Main-command config (target, budget).",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Folder holding one sub-workdir per (task, step budget).")
  _TASKS = flags.DEFINE_list("tasks", ["rt", "tweets"], "Tasks of the curve.")
  _STEPS = flags.DEFINE_list("steps", ["50", "100", "200", "400"], "Step budgets S (min_steps = max_steps = S).")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Paired run seeds.")
  _RUN = flags.DEFINE_bool("run", True, "Run missing cells (False: only summarise finished workdirs).")
  _TOLERANCE = flags.DEFINE_float("tolerance", 0.0025, "Validation-accuracy slack when preferring fewer steps.")


def cell_config(config, task: str, steps: int, seeds):
  """The main config for one point of the curve: `random` on `task`, exactly `steps` planned steps."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.task, c.tasks, c.selectors, c.seeds = task, (), ("random",), tuple(seeds)
    c.sweep.budgets = ()
    c.finetune.min_steps = c.finetune.max_steps = int(steps)
  return c


def summarise(curve: dict, seeds) -> dict:
  """{task: [{steps, n, val, test, steps_taken, best_step, seconds, diff_vs_first}]} from {(task, S): rows}."""
  import numpy as np

  from rlsel.stats import paired_difference
  out = {}
  for task in dict.fromkeys(t for t, _ in curve):
    budgets = sorted(s for t, s in curve if t == task)
    first = {r["seed"]: r for r in curve[(task, budgets[0])]}
    points = []
    for s in budgets:
      rows = sorted((r for r in curve[(task, s)] if r["seed"] in seeds), key=lambda r: r["seed"])
      if not rows:
        continue
      paired = [(r["test_accuracy"], first[r["seed"]]["test_accuracy"]) for r in rows if r["seed"] in first]
      mean = lambda k: float(np.mean([r[k] for r in rows]))
      points.append({"steps": s, "n": len(rows), "val": mean("val_accuracy"), "test": mean("test_accuracy"),
                     "test_std": float(np.std([r["test_accuracy"] for r in rows], ddof=1)) if len(rows) > 1 else None,
                     "steps_taken": mean("finetune_steps"), "best_step": mean("best_step"),
                     "seconds": mean("finetune_seconds"),
                     "diff_vs_first": paired_difference(*zip(*paired)) if paired else None})
    out[task] = points
  return out


def recommend(summary: dict, tolerance: float):
  """The smallest S whose validation accuracy, averaged over the tasks that have it, is within `tolerance` of the
  best S's (validation only, so test stays untouched by the choice)."""
  import numpy as np
  common = set.intersection(*({p["steps"] for p in pts} for pts in summary.values())) if summary else set()
  if not common:
    return None
  val = {s: float(np.mean([p["val"] for pts in summary.values() for p in pts if p["steps"] == s])) for s in common}
  best = max(val.values())
  return min(s for s, v in val.items() if v >= best - tolerance)


def main(argv) -> None:
  del argv
  from rlsel.errors import UserError, fail
  if not _WORKDIR.value:
    fail("steps_curve", "--workdir is required")
  try:
    steps = [int(s) for s in _STEPS.value]
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    fail("steps_curve", "--steps and --seeds must be comma-separated integers, e.g. --steps=50,100,200,400")
  from rlsel import harness, results, validation
  curve = {}
  try:
    for task in _TASKS.value:
      for s in steps:
        c = cell_config(_CONFIG.value, task, s, seeds)
        wd = pathlib.Path(_WORKDIR.value) / f"{task}_s{s}"
        if _RUN.value:
          validation.validate(c)
          rows = harness.run(c, str(wd))
        else:
          rows = results.load_rows(wd)
        rows = [r for r in rows if r["selector"] == "random"]
        if rows:
          curve[(task, s)] = rows
  except UserError as e:
    fail("steps_curve", str(e))
  summary = summarise(curve, set(seeds))
  print("\n| task | steps S | seeds | val acc | test acc | steps taken | best step | fine-tune s | "
        "test diff vs smallest S (points, 95% interval) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for task, pts in summary.items():
    for p in pts:
      d = p["diff_vs_first"]
      ci = "" if d is None or d["ci_low"] is None else f" [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"
      spread = "" if p["test_std"] is None else f" ± {p['test_std']:.4f}"
      print(f"| {task} | {p['steps']} | {p['n']} | {p['val']:.4f} | {p['test']:.4f}{spread} | {p['steps_taken']:.0f} | "
            f"{p['best_step']:.0f} | {p['seconds']:.0f} | {100 * d['mean_diff']:+.2f}{ci} |" if d else "")
  rec = recommend(summary, _TOLERANCE.value)
  print(f"recommended_min_steps={rec}")
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
