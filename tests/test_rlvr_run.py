"""The RLVR runner end to end on a tiny config: every method runs from the same start, writes results.json,
results.md and plots, and a rerun in the same workdir skips the finished cells."""

import json

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


def test_bad_method_task_and_foreign_results_are_user_errors(tmp_path):
  c = _config()
  c.rlvr.methods = ("nope",)
  with pytest.raises(UserError, match="unknown rlvr method"):
    run.run(c, tmp_path)
  c = _config()
  c.rlvr.task = "jsonl"
  with pytest.raises(UserError, match="jsonl_file"):
    run.load_problems(c.rlvr)
  assert not (tmp_path / "results.json").exists()
  (tmp_path / "results.json").write_text('{"not": "rows"}')
  with pytest.raises(UserError, match="not an rlvr results file"):
    run.run(_config(), tmp_path)
