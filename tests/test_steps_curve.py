"""The steps-curve benchmark's summary and its validation-only choice of a step budget."""

import pytest

from rlsel.bench import steps_curve


def _row(seed, val, test, steps=100):
  return {"selector": "random", "seed": seed, "val_accuracy": val, "test_accuracy": test, "finetune_steps": steps,
          "best_step": steps, "finetune_seconds": 1.0}


def test_summary_pairs_seeds_and_choice_ignores_test():
  curve = {("rt", 50): [_row(0, 0.70, 0.70), _row(1, 0.72, 0.71)],
           ("rt", 200): [_row(0, 0.75, 0.60), _row(1, 0.76, 0.62)],   # best on validation, worst on test
           ("rt", 400): [_row(0, 0.752, 0.80), _row(1, 0.757, 0.81)]}
  summary = steps_curve.summarise(curve, {0, 1})
  pts = {p["steps"]: p for p in summary["rt"]}
  assert pts[200]["diff_vs_first"]["mean_diff"] == pytest.approx(-0.095)
  assert pts[50]["diff_vs_first"]["ties"] == 2
  assert steps_curve.recommend(summary, tolerance=0.0) == 200       # chosen on validation, whatever test says
  assert steps_curve.recommend(summary, tolerance=0.1) == 50        # the slack prefers fewer steps
  # Averaged over tasks, only budgets every task has are candidates.
  curve[("tweets", 200)] = [_row(0, 0.5, 0.5)]
  assert steps_curve.recommend(steps_curve.summarise(curve, {0, 1}), tolerance=0.0) == 200


def test_cell_config_plans_exactly_s_steps():
  from tests.conftest import load_config
  c = steps_curve.cell_config(load_config("glue"), "tweets", 400, (0, 1, 2))
  assert (c.task, c.selectors, c.seeds) == ("tweets", ("random",), (0, 1, 2))
  assert c.finetune.min_steps == c.finetune.max_steps == 400


def test_benchmarks_define_no_flags_when_imported():
  """Several benchmark modules imported into one process (as test workers do) must not clash over absl flags."""
  import importlib

  from absl import flags
  for name in ("steps_curve", "proxy_fidelity", "selection_profile", "gradient_scopes"):
    importlib.import_module(f"rlsel.bench.{name}")
  assert "tolerance" not in flags.FLAGS and "retest_keys" not in flags.FLAGS and "scopes" not in flags.FLAGS
