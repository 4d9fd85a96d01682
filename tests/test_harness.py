"""The harness's cell plan, result tables and plots."""

import numpy as np
import pytest

from rlsel import harness, plots, results
from tests.conftest import load_config


def test_plan_grid_sweep_and_shared_full():
  c = load_config("benchmark")
  n_sel = len(c.selectors)
  cells = harness.plan(c)
  main = [x for x in cells if x[3] == 0.05]
  assert len(main) == 4 * 2 * (n_sel - 1)  # tasks x seeds x selectors except full
  fulls = [x for x in cells if x[2] == "full"]
  assert len(fulls) == 4 * 2 and all(x[3] == 1.0 for x in fulls)  # budget-free, run once per task and seed
  sweep = [x for x in cells if x[3] not in (0.05, 1.0)]
  assert len(sweep) == 4 * 3 * 2 * 3
  assert len(set(cells)) == len(cells)
  assert [x[0] for x in cells] == sorted([x[0] for x in cells], key=list(c.tasks).index)


def test_selection_names():
  assert harness.selection_name("random", "rt", 0, 0.05, 0.05) == "random-rt-0"
  assert harness.selection_name("full", "rt", 1, 1.0, 0.05) == "full-rt-1"
  assert harness.selection_name("random", "rt", 0, 0.25, 0.05) == "random-rt-0-b0.25"


def _rows():
  rng = np.random.default_rng(0)
  rows = []
  for seed in (0, 1):
    for sel, budgets in (("full", [1.0]), ("random", [0.05, 0.1]), ("kcenter", [0.05, 0.1])):
      for b in budgets:
        rows.append({"selector": sel, "task": "rt", "seed": seed, "budget": b, "n_selected": int(b * 1000),
                     "test_accuracy": float(rng.uniform(0.6, 0.8)), "test_macro_f1": 0.6, "select_seconds": 1.0,
                     "finetune_seconds": 2.0})
  return rows


def test_results_files_and_plot(tmp_path):
  rows = _rows()
  results.write(tmp_path, rows)
  assert results.load_rows(tmp_path) == rows
  md = (tmp_path / "results.md").read_text()
  mean = np.mean([r["test_accuracy"] for r in rows if r["selector"] == "random" and r["budget"] == 0.05])
  assert f"| rt | 0.05 | random | 2 | 50 | {mean:.4f} ± " in md
  paths = plots.accuracy_vs_budget(tmp_path, rows)
  assert [p.name for p in paths] == ["accuracy_vs_budget_rt.png"]
  assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_workdirs(tmp_path):
  """Cells run in parallel workdirs merge into one table; a baseline copied into each is kept once."""
  rows = [dict(r, config_id="abc") for r in _rows()]
  full = [r for r in rows if r["selector"] == "full"]
  a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
  results.write(a, full + [r for r in rows if r["seed"] == 0 and r["selector"] != "full"])
  results.write(b, full + [r for r in rows if r["seed"] == 1 and r["selector"] != "full"])
  (b / "selections").mkdir()
  (b / "selections" / "random-rt-1.json").write_text("[1, 2]")
  assert results.main(["merge", str(out), str(a), str(b)]) == 0
  merged = results.load_rows(out)
  assert sorted(map(results.cell_key, merged)) == sorted(map(results.cell_key, rows))
  assert (out / "selections" / "random-rt-1.json").read_text() == "[1, 2]"
  assert (out / "plots" / "accuracy_vs_budget_rt.png").exists()
  assert "| rt | 0.05 | random | 2 |" in (out / "results.md").read_text()
  # Merging again into one of the sources is idempotent.
  results.merge(a, [a, b])
  assert sorted(map(results.cell_key, results.load_rows(a))) == sorted(map(results.cell_key, rows))


def test_merge_refuses_conflicts(tmp_path, capsys):
  rows = [dict(r, config_id="abc") for r in _rows()]
  a, b = tmp_path / "a", tmp_path / "b"
  results.write(a, rows)
  results.write(b, [dict(rows[0], test_accuracy=0.123)])
  assert results.main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 2
  assert "different results" in capsys.readouterr().err
  results.write(b, [dict(r, config_id="xyz", seed=r["seed"] + 5) for r in rows])
  assert results.main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 2
  assert "different settings" in capsys.readouterr().err
  assert results.main(["merge", str(tmp_path / "out"), str(tmp_path / "missing")]) == 2
  assert "results.json not found" in capsys.readouterr().err
  assert not (tmp_path / "out" / "results.json").exists()


def test_config_fields_added_since_keep_the_workdir(tmp_path):
  """A workdir made before a config field existed resumes if that field is at its default, and not otherwise."""
  import json
  from rlsel import configlib
  from rlsel.errors import UserError
  c = load_config("debug")
  current, defaults = results.result_config(c), results.result_config(configlib.base_config())
  same = next(k for k in sorted(current) if defaults.get(k) == current[k])
  changed = next(k for k in sorted(current) if k in defaults and defaults[k] != current[k])
  for missing, ok in ((same, True), (changed, False)):
    wd = tmp_path / missing
    (wd / "configs").mkdir(parents=True)
    (wd / "configs" / "old.json").write_text(json.dumps({k: v for k, v in current.items() if k != missing}))
    rows = [dict(_rows()[0], config_id="old")]
    if ok:
      assert results.check_same_config(wd, rows, c) == "old"
    else:
      with pytest.raises(UserError, match=missing):
        results.check_same_config(wd, rows, c)
  # ... and not when the workdir also holds rows of a really different config.
  wd = tmp_path / same
  (wd / "configs" / "other.json").write_text(json.dumps(dict(current, **{same: "other"})))
  rows = [dict(_rows()[0], config_id="old"), dict(_rows()[1], config_id="other")]
  with pytest.raises(UserError, match=same):
    results.check_same_config(wd, rows, c)
  # A field whose value changed is still a difference.
  wd = tmp_path / "changed_value"
  (wd / "configs").mkdir(parents=True)
  (wd / "configs" / "old.json").write_text(json.dumps(dict(current, **{same: "other"})))
  with pytest.raises(UserError, match=same):
    results.check_same_config(wd, [dict(_rows()[0], config_id="old")], c)


def test_selection_profile_names_and_figures():
  from rlsel import harness
  from rlsel.bench.selection_profile import parse_selection_name, profile
  for args in (("random", "rt", 0, 0.05, 0.05), ("cluster_balanced", "rt_subj", 1, 0.25, 0.05),
               ("full", "bbc", 2, 1.0, 0.05)):
    name = harness.selection_name(*args)
    sel, task, seed, budget = parse_selection_name(name)
    assert (sel, task, seed) == args[:3] and budget == (None if args[3] in (0.05, 1.0) else args[3])
  assert parse_selection_name("notes") is None and parse_selection_name("a-b-c") is None
  labels = np.array([0, 0, 1, 1, 1])
  p_label = np.array([0.9, 0.2, 0.6, 0.4, 0.8])
  got = profile(labels, p_label, np.array([0, 1, 4]))
  assert got == {"n": 3, "labels": [2, 1], "probe_agreement": 2 / 3, "mean_p_label": pytest.approx(1.9 / 3)}
