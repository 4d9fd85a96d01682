"""The RLVR runner end to end on a tiny config: every method runs from the same start, writes results.json,
results.md and plots, and a rerun in the same workdir skips the finished cells."""

import json

import numpy as np
import pytest

from rlsel import configlib, rlvr
from rlsel.errors import UserError
from rlsel.rlvr import run

ALL = ("uniform", "dots", "dots_replay", "learnalign", "cropi")


def _config():
  c = configlib.base_config()
  c.seeds = (0,)
  c.rlvr = rlvr.default_config()
  r = c.rlvr
  r.data.levels = "1:1:+-"
  r.data.n_train, r.data.n_validation, r.data.n_test = 120, 16, 30
  r.data.prompt_len, r.grpo.max_new_tokens = 6, 3
  r.small.width, r.small.num_layers, r.small.mlp_dim, r.small.head_dim = 32, 1, 64, 8
  r.warmup.steps = 0  # no warm-up compile: the run is checked for plumbing, not learning
  r.grpo.steps, r.grpo.prompts_per_step, r.grpo.group_size, r.grpo.learning_rate = 4, 8, 4, 3e-4
  r.grpo.eval_every = 2
  r.grpo.eval_size = r.grpo.eval_batch_size = 30
  r.dots.reestimate_every, r.dots.reference_size, r.dots.replay_capacity, r.dots.fit_steps = 2, 8, 16, 20
  r.dots.holdout_size = 8
  r.dots.informative_only = False  # so the buffer fills even when the tiny model's groups are uniform
  r.dots.embed_batch_size = 64
  r.learnalign.warmup_steps, r.learnalign.candidates, r.learnalign.top_fraction = 1, 40, 0.25
  r.learnalign.projection_dim, r.learnalign.projection_block, r.learnalign.grad_batch_prompts = 16, 2048, 8
  r.cropi.candidates, r.cropi.validation_size, r.cropi.keep_fraction, r.cropi.rounds = 40, 16, 0.25, 2
  r.cropi.sparse_coords, r.cropi.projection_dim, r.cropi.projection_block, r.cropi.grad_batch_prompts = 512, 16, 512, 8
  return c


@pytest.mark.slow
def test_run_writes_results_and_resumes(tmp_path):
  c = _config()
  c.rlvr.methods = ALL
  rows = run.run(c, tmp_path)
  assert [r["selector"] for r in rows] == list(ALL)
  assert len({r["initial_test_accuracy"] for r in rows}) == 1  # same warmed-up start
  for r in rows:
    assert 0.0 <= r["test_accuracy"] <= 1.0 and r["steps"] == 4 and r["generation_seconds_per_step"] > 0
    assert r["test_macro_f1"] is None and r["budget"] is None
    assert [h["step"] for h in r["history"]] == [0, 2, 4]
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(r["history"], r["history"][1:]))
    assert r["uniform_final_accuracy"] == rows[0]["test_accuracy"]
  by = {r["selector"]: r for r in rows}
  assert by["uniform"]["reached_uniform_final"] and by["uniform"]["steps_to_uniform_final"] <= 4
  assert by["uniform"]["fresh_rollouts"] == 4 * 8 * 4 and by["uniform"]["replayed_groups"] == 0
  assert by["dots"]["replayed_groups"] == 0 and by["dots_replay"]["replayed_groups"] > 0
  assert by["dots"]["estimation_seconds"] > 0
  for m in ("dots", "dots_replay"):  # the estimator is measured on held-out prompts at each re-estimate (steps 0, 2)
    checks = by[m]["selection_info"]["estimator"]
    assert [x["step"] for x in checks] == [0, 2] and all(0 <= x["mae"] <= 1 for x in checks)
    assert 8 < by[m]["selection_info"]["reference_prompts_used"] <= 16  # references drawn afresh at step 2
    assert "estimator_pearson" in by[m] and by[m]["estimator_mae"] == pytest.approx(
        sum(x["mae"] for x in checks) / 2)
  assert by["learnalign"]["n_selected"] <= 10 and by["learnalign"]["select_seconds"] > 0  # top 25% of 40
  assert by["cropi"]["selection_info"]["rounds"] == 2 and by["cropi"]["n_selected"] <= 20
  saved = json.loads((tmp_path / "results.json").read_text())
  assert [r["selector"] for r in saved] == list(ALL)
  md = (tmp_path / "results.md").read_text()
  assert all(f"| {m} |" in md for m in ALL) and "steps to uniform final" in md
  assert (tmp_path / "plots" / "rlvr_accuracy_vs_steps_arithmetic.png").stat().st_size > 0
  assert (tmp_path / "plots" / "rlvr_accuracy_vs_seconds_arithmetic.png").stat().st_size > 0

  # resume: finished cells are skipped (their rows kept as they were), a new method is added
  c.rlvr.methods = ("uniform", "grpo")
  again = run.run(c, tmp_path)
  assert [r["selector"] for r in again] == list(ALL) + ["grpo"]
  assert again[0]["seconds"] == rows[0]["seconds"]


def test_estimator_measurement_leaves_the_dots_run_unchanged():
  """The held-out check uses its own keys and NumPy stream: DOTS trains identically with it switched off."""
  import jax

  c = _config()
  r = c.rlvr
  train, _, test = run.load_problems(r)
  key = jax.random.key(0)
  policy, params0, _ = run.build_policy(r, key, train)
  row_on, p_on = run.train_method("dots", r, policy, params0, train, test, jax.random.fold_in(key, 2))
  r.dots.holdout_size = 0
  row_off, p_off = run.train_method("dots", r, policy, params0, train, test, jax.random.fold_in(key, 2))
  assert len(row_on["selection_info"]["estimator"]) == 2 and row_off["selection_info"]["estimator"] == []
  assert "estimator_pearson" not in row_off
  assert [h["test_accuracy"] for h in row_on["history"]] == [h["test_accuracy"] for h in row_off["history"]]
  assert row_on["fresh_rollouts"] == row_off["fresh_rollouts"]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p_on, p_off)


def test_estimator_check_against_known_success_probabilities():
  """With p_hat = the true probabilities, the measured correlation matches the noise ceiling from the split halves;
  a constant p_hat has no correlation and the reference-mean baseline's error."""
  import types

  rng = np.random.default_rng(0)
  true_p = rng.uniform(0, 1, 3000)

  class Fake:
    def rollout(self, params, problems, ids, g, key):
      seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
      draws = np.random.default_rng(seed).uniform(size=(len(ids), g)) < true_p[ids, None]
      return types.SimpleNamespace(rewards=draws.astype(np.float32))

  import jax
  ids = np.arange(3000)
  got = run.estimator_check(Fake(), None, None, ids, true_p, true_p, 4, jax.random.key(1), step=0)
  assert got["pearson"] == pytest.approx(got["noise_ceiling_pearson"], abs=0.03)
  assert 0.5 < got["split_half_pearson"] < 0.75  # G=4 per half: a noisy measurement
  assert got["mae"] < got["mae_reference_mean"]
  flat = run.estimator_check(Fake(), None, None, ids, np.full(3000, 0.5), true_p, 4, jax.random.key(1), step=0)
  assert flat["pearson"] is None and flat["mae"] == pytest.approx(flat["mae_reference_mean"], abs=0.01)
  big = run.estimator_check(Fake(), None, None, ids, true_p, true_p, 400, jax.random.key(2), step=0)
  assert big["pearson"] > 0.99 and big["noise_ceiling_pearson"] > 0.99


def test_bad_method_task_and_foreign_results_are_user_errors(tmp_path):
  c = _config()
  c.rlvr.methods = ("nope",)
  with pytest.raises(UserError, match="unknown rlvr method"):
    run.run(c, tmp_path)
  c.rlvr.methods = ("uniform,nope",)  # what --config.rlvr.methods=uniform,nope gives: split on commas
  with pytest.raises(UserError, match="unknown rlvr method 'nope'"):
    run.run(c, tmp_path)
  c = _config()
  c.rlvr.task = "jsonl"
  with pytest.raises(UserError, match="jsonl_file"):
    run.load_problems(c.rlvr)
  assert not (tmp_path / "results.json").exists()
  (tmp_path / "results.json").write_text('{"not": "rows"}')
  with pytest.raises(UserError, match="not an rlvr results file"):
    run.run(_config(), tmp_path)


def test_report_pairs_methods_with_uniform_by_seed():
  from rlsel.rlvr import report

  def row(method, seed, accs):  # evaluations at steps 0, 10, 20, 30
    hist = [{"step": 10 * i, "seconds": float(i), "test_accuracy": a} for i, a in enumerate(accs)]
    return {"selector": method, "task": "arith", "seed": seed, "test_accuracy": accs[-1], "history": hist,
            "steps": 30, "initial_test_accuracy": accs[0], "select_seconds": 1.0, "finetune_seconds": 2.0,
            "n_selected": 8}
  rows = report.add_time_to_target([
      row("uniform", 0, [0.1, 0.2, 0.3, 0.4]), row("uniform", 1, [0.1, 0.3, 0.3, 0.5]),
      row("uniform", 2, [0.1, 0.2, 0.4, 0.4]),
      row("dots", 0, [0.1, 0.4, 0.5, 0.5]), row("dots", 1, [0.1, 0.5, 0.5, 0.6]),
      row("dots", 2, [0.1, 0.2, 0.3, 0.3]),   # never reaches uniform's 0.4: censored at 40
      row("cropi", 0, [0.1, 0.1, 0.1, 0.1])])  # one seed only
  (cropi,), (dots,) = ([p for p in report.paired_rows(rows) if p["method"] == m] for m in ("cropi", "dots"))
  assert dots["seeds"] == [0, 1, 2] and dots["censored"] == 1
  assert dots["final_accuracy"]["mean_diff"] == pytest.approx((0.1 + 0.1 - 0.1) / 3)
  assert dots["curve_mean_accuracy"]["mean_diff"] == pytest.approx(
      np.mean([(1.4 - 0.9) / 3, (1.6 - 1.1) / 3, (0.8 - 1.0) / 3]))
  # steps to uniform's final: dots 10, 10, censored 40; uniform reaches its own final at 30, 30, 20
  assert dots["steps_to_uniform_final"]["mean_diff"] == pytest.approx(((10 - 30) + (10 - 30) + (40 - 20)) / 3)
  assert dots["final_accuracy"]["ci_low"] is not None
  assert cropi["final_accuracy"]["verdict"] == "n = 1, no interval"
  md = report.markdown(rows)
  assert "Paired differences to uniform" in md and "| arith | dots | 3 |" in md and "(n = 1)" in md
