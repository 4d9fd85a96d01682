"""The RLVR runner end to end on a tiny config: both methods run from the same start and write their rows."""

import json

import pytest

from rlsel import configlib, rlvr
from rlsel.errors import UserError
from rlsel.rlvr import run


def _config():
  c = configlib.base_config()
  c.seeds = (0,)
  c.rlvr = rlvr.default_config()
  r = c.rlvr
  r.data.levels = "1:1:+-"
  r.data.n_train, r.data.n_validation, r.data.n_test = 120, 10, 30
  r.data.prompt_len, r.grpo.max_new_tokens = 6, 3
  r.small.width, r.small.num_layers, r.small.mlp_dim, r.small.head_dim = 32, 1, 64, 8
  r.warmup.steps = 0  # no warm-up compile: the run is checked for plumbing, not learning
  r.grpo.steps, r.grpo.prompts_per_step, r.grpo.group_size, r.grpo.learning_rate = 4, 8, 4, 3e-4
  r.grpo.eval_every = r.grpo.eval_size = r.grpo.eval_batch_size = 30
  r.dots.reestimate_every, r.dots.reference_size, r.dots.replay_capacity, r.dots.fit_steps = 2, 8, 16, 20
  r.dots.informative_only = False  # so the buffer fills even when the tiny model's groups are uniform
  r.dots.embed_batch_size = 64
  return c


@pytest.mark.slow
def test_run_writes_rows_for_grpo_and_dots(tmp_path):
  rows = run.run(_config(), tmp_path)
  assert [r["selector"] for r in rows] == ["grpo", "dots"]
  assert rows[0]["initial_test_accuracy"] == rows[1]["initial_test_accuracy"]  # same warmed-up start
  for r in rows:
    assert 0.0 <= r["test_accuracy"] <= 1.0 and r["steps"] == 4 and r["generation_seconds_per_step"] > 0
  grpo_row, dots_row = rows
  assert grpo_row["fresh_rollouts"] == 4 * 8 * 4 and grpo_row["replayed_groups"] == 0
  assert dots_row["replayed_groups"] > 0 and dots_row["estimation_seconds"] > 0
  assert json.loads((tmp_path / "rlvr_results.json").read_text())[1]["selector"] == "dots"


def test_bad_method_and_task_are_user_errors(tmp_path):
  c = _config()
  c.rlvr.methods = ("nope",)
  with pytest.raises(UserError, match="unknown rlvr method"):
    run.run(c, tmp_path)
  c = _config()
  c.rlvr.task = "jsonl"
  with pytest.raises(UserError, match="jsonl_file"):
    run.load_problems(c.rlvr)
  assert not (tmp_path / "rlvr_results.json").exists()
