"""The harness's cell plan, result tables and plots."""

import numpy as np
import pytest

from rlsel import harness, plots, results
from tests.conftest import load_config


def test_benchmark_grid_under_the_protocol():
  """rt and tweets on 5 paired seeds, rt_subj and bbc on 3, one experiment (the same cell ids) for both variants."""
  main, more = load_config("benchmark"), load_config("benchmark", "more")
  cells = harness.plan(main) + harness.plan(more)
  seeds = {t: {x[1] for x in cells if x[0] == t} for t in ("rt", "tweets", "rt_subj", "bbc")}
  assert seeds == {"rt": set(range(5)), "tweets": set(range(5)), "rt_subj": {0, 1, 2}, "bbc": {0, 1, 2}}
  assert {x[2] for x in cells} >= {"full", "random", "cluster_stratified", "ccs", "label_clean", "kcenter", "rl_ppo",
                                   "climb"}
  assert all(results.config_id(main, s) == results.config_id(more, s) for s in main.selectors)
  assert main.finetune.min_steps > 0 and main.finetune.min_steps <= main.finetune.max_steps


def test_main_job_cells_are_the_benchmark_seed_0_cells(tmp_path):
  """The main job runs under the benchmark's fine-tune protocol, so its cells are the committed grid's seed-0 rt
  cells (the same cell ids, and settings that the committed rows' saved configs accept): its results can be read
  against that table, and a workdir seeded with the committed rows skips them."""
  import json, pathlib, shutil
  glue, bench = load_config("glue"), load_config("benchmark")
  committed = pathlib.Path(__file__).parent.parent / "benchmarks" / "benchmark_protocol"
  rows = [r for r in json.loads((committed / "results.json").read_text()) if r["task"] == "rt" and r["seed"] == 0]
  shutil.copytree(committed / "configs", tmp_path / "configs")
  assert {s: results.config_id(glue, s) for s in glue.selectors} == {s: results.config_id(bench, s)
                                                                       for s in glue.selectors}
  rows = [r for r in rows if r["selector"] in glue.selectors]
  assert sorted(r["selector"] for r in rows) == ["full", "random", "rl_ppo"]
  results.check_same_config(tmp_path, rows, glue, glue.selectors)   # raises on a field a cell reads
  assert (glue.finetune.min_steps, glue.finetune.max_steps, glue.features.max_length) == (200, 200, 40)
  assert glue.rl.drop_label_issues   # the environment filter chosen on validation (session 21)
  rl_rows = [r for r in rows if r["selector"] == "rl_ppo"]
  glue.unlock()
  glue.rl.drop_label_issues = False  # the environment before it: another rl_ppo cell than the committed one
  with pytest.raises(Exception, match="different settings"):
    results.check_same_config(tmp_path, rl_rows, glue, ("rl_ppo",))
  glue.rl.drop_label_issues = True
  glue.features.max_length = 48    # the old main-job setting is another experiment
  with pytest.raises(Exception, match="different settings"):
    results.check_same_config(tmp_path, rows, glue, ("full", "random"))


def test_noisy_configs_keep_their_measured_environment():
  """configs/noisy.py's RL environment filters with its confident pool and was measured without the protocol's
  confident-learning filter: every variant turns that filter off again."""
  for variant in ("rt_sym20", "rt_sym40", "rt_inst30", "tweets_trusted"):
    c = load_config("noisy", variant)
    assert not c.rl.drop_label_issues and c.rl.confident_pool == 4.0, variant
    assert c.rl.confident_pool_noise_scale == 3.0, variant  # chosen on tweets_trusted's validation (session 23)
  assert load_config("benchmark").rl.drop_label_issues


def test_literature_variants_pair_with_the_grid():
  """The literature grid reuses the main grid's random cells (same cell ids); the 'before' variant changes only
  selection settings, so its literature cells are other cells and its random cells the same."""
  main, lit, head = (load_config("benchmark", v) for v in (None, "literature", "literature_head"))
  lit_more = load_config("benchmark", "literature_more")
  assert set(lit.selectors) == {"random", "less", "learnalign", "cropi", "dots"} and lit.seeds == main.seeds
  assert lit_more.tasks == load_config("benchmark", "more").tasks and lit_more.seeds == (0, 1, 2)
  assert results.config_id(lit, "random") == results.config_id(main, "random") == results.config_id(head, "random")
  for sel in ("less", "learnalign", "cropi", "dots"):
    assert results.config_id(lit, sel) == results.config_id(lit_more, sel) != results.config_id(head, sel)
  assert (head.selection.param_scope, lit.selection.param_scope) == ("head", "last_k")
  assert (head.selection.learnalign_alignment, head.selection.rrf_top_n, head.selection.dots_tau) == ("pool", 0, 0.1)


def test_plan_grid_sweep_and_shared_full():
  c = load_config("benchmark", "legacy")
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


def test_summary_shows_noise_rates_and_confidence_only_where_rows_carry_them():
  """A noisy pool's summary gives each selector's selected noise (mean and range over seeds) beside the pool's."""
  rows = _rows()
  assert "noise" not in results.summary(rows) and "confidence" not in results.summary(rows)
  noisy = [dict(r, pool_noise_rate=0.4,
                selected_noise_rate=(0.1 + 0.1 * r["seed"] if r["selector"] == "kcenter" else 0.4)) for r in rows]
  noisy[0]["selected_noise_rate"] = None  # a row of older code without the field leaves the others' mean alone
  md = results.summary(noisy)
  head = md.splitlines()[0]
  assert head.endswith("| pool noise | selected noise |") and "confidence" not in head
  line = next(x for x in md.splitlines() if "| 0.05 | kcenter |" in x)
  assert line.endswith("| 0.400 | 0.150 (0.100-0.200) |")
  full = next(x for x in md.splitlines() if "| full |" in x)
  assert full.endswith("| 0.400 | 0.400 |")
  conf = [dict(r, selected_mean_confidence=0.9) for r in rows]
  assert results.summary(conf).splitlines()[0].endswith("| selected confidence |")


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
  assert "different settings for full" in capsys.readouterr().err  # no configs/ to compare them: refused
  import json
  for d, cid, steps in ((a, "abc", 40), (b, "xyz", 41)):
    (d / "configs").mkdir(exist_ok=True)
    (d / "configs" / f"{cid}.json").write_text(json.dumps({"finetune.max_steps": steps}))
  assert results.main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 2
  assert "finetune.max_steps differ" in capsys.readouterr().err
  assert results.main(["merge", str(tmp_path / "out"), str(tmp_path / "missing")]) == 2
  assert "results.json not found" in capsys.readouterr().err
  assert not (tmp_path / "out" / "results.json").exists()


def test_config_fields_added_since_keep_the_workdir(tmp_path):
  """A workdir made before a config field existed resumes if that field is at its default, and not otherwise."""
  import json
  from rlsel import configlib
  from rlsel.errors import UserError
  c = load_config("debug")
  current, defaults = results.result_config(c, "full"), results.result_config(configlib.base_config())
  same = next(k for k in sorted(current) if defaults.get(k) == current[k])
  changed = next(k for k in sorted(current) if k in defaults and defaults[k] != current[k])
  for missing, ok in ((same, True), (changed, False)):
    wd = tmp_path / missing
    (wd / "configs").mkdir(parents=True)
    (wd / "configs" / "old.json").write_text(json.dumps({k: v for k, v in current.items() if k != missing}))
    rows = [dict(_rows()[0], config_id="old")]
    if ok:
      assert results.check_same_config(wd, rows, c)["full"] == results.config_id(c, "full")
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


def test_cell_identity_covers_what_the_cell_reads(tmp_path):
  """A proxy change leaves full / random cells valid (they never read it) but not an rl_ppo cell; a fine-tune
  change invalidates every cell. Whole-experiment configs from before per-cell ids compare on the cell's fields."""
  import json
  from rlsel.errors import UserError
  c = load_config("debug")
  ids = results.check_same_config(tmp_path, [], c, selectors=["full", "random", "rl_ppo"])
  assert ids["full"] == ids["random"] != ids["rl_ppo"]
  assert not any(k.startswith("proxy.") for k in results.result_config(c, "random"))
  assert any(k.startswith("proxy.") for k in results.result_config(c, "rl_ppo"))
  rows = [dict(r, config_id=ids[r["selector"]]) for r in _rows() if r["selector"] != "kcenter"]
  rows.append(dict(rows[-1], selector="rl_ppo", config_id=ids["rl_ppo"]))
  proxy = c.copy_and_resolve_references()
  proxy.proxy.steps += 1
  with pytest.raises(UserError, match="rl_ppo .*proxy.steps"):
    results.check_same_config(tmp_path, rows, proxy)
  kept = results.check_same_config(tmp_path, [r for r in rows if r["selector"] != "rl_ppo"], proxy)
  assert kept["random"] == ids["random"]
  tuned = c.copy_and_resolve_references()
  tuned.finetune.min_steps = 5
  with pytest.raises(UserError, match="full .*finetune.min_steps: 0 -> 5"):
    results.check_same_config(tmp_path, rows, tuned)
  # A row made under an old whole-experiment id: only the fields its cell reads are compared.
  wd = tmp_path / "old"
  (wd / "configs").mkdir(parents=True)
  (wd / "configs" / "whole.json").write_text(json.dumps(results.result_config(c)))
  old_rows = [dict(rows[0], config_id="whole")]
  assert results.check_same_config(wd, old_rows, proxy)["full"] == ids["full"]


def test_selector_version_refuses_cells_of_older_code(tmp_path):
  """kcenter gained per-label quotas (version 2): a kcenter row saved under a config without the version is refused,
  while a selector still at version 1 keeps the identity it had before versions existed."""
  import json
  from rlsel.errors import UserError
  c = load_config("debug")
  assert results.result_config(c, "kcenter")["selector_version.kcenter"] == 2
  assert not any(k.startswith("selector_version") for k in results.result_config(c, "random"))
  (tmp_path / "configs").mkdir()
  old = {k: v for k, v in results.result_config(c, "kcenter").items() if not k.startswith("selector_version")}
  (tmp_path / "configs" / "old.json").write_text(json.dumps(old))
  row = dict(_rows()[2], selector="kcenter", config_id="old")
  with pytest.raises(UserError, match="selector_version.kcenter"):
    results.check_same_config(tmp_path, [row], c)
  assert results.check_same_config(tmp_path, [dict(row, selector="entropy")], c)["entropy"]


def test_paired_comparisons_and_forest_plot(tmp_path):
  """Differences are taken seed by seed against random (same budget) and full; one seed gives no interval."""
  rows = _rows()
  entries = results.paired(rows)
  e = next(x for x in entries if (x["selector"], x["reference"], x["budget"]) == ("kcenter", "random", 0.05))
  acc = {(r["selector"], r["seed"]): r["test_accuracy"] for r in rows if r["budget"] in (0.05, 1.0)}
  diffs = [acc[("kcenter", s)] - acc[("random", s)] for s in (0, 1)]
  assert e["n"] == 2 and e["seeds"] == [0, 1] and e["mean_diff"] == pytest.approx(np.mean(diffs))
  assert e["ci_low"] < e["mean_diff"] < e["ci_high"]
  assert e["wins"] + e["ties"] + e["losses"] == 2
  assert {(x["selector"], x["reference"]) for x in entries if x["budget"] == 0.05} == {
      ("kcenter", "random"), ("kcenter", "full"), ("random", "full")}
  one = results.paired([r for r in rows if r["seed"] == 0])
  assert all(x["n"] == 1 and x["ci_low"] is None and x["verdict"] == "n = 1, no interval" for x in one)
  results.write(tmp_path, [r for r in rows if r["seed"] == 0])
  md = (tmp_path / "results.md").read_text()
  assert "(n = 1)" in md and "± 0.0000" not in md and "n = 1, no interval" in md
  import json
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["confidence"] == 0.95 and len(summary["comparisons"]) == len(one)
  assert json.loads((tmp_path / "results.json").read_text()) == [r for r in rows if r["seed"] == 0]
  paths = plots.paired_forest(tmp_path, entries)
  assert [p.name for p in paths] == ["paired_rt.png"] and paths[0].read_bytes()[:4] == b"\x89PNG"


def test_compare_against_any_reference_and_an_archived_run(tmp_path, capsys):
  """`compare` pairs seed by seed against the named reference, reads archives tagged with @TAG, and names bad
  input in one line."""
  import json
  rows = _rows()
  results.write(tmp_path / "w", rows)
  acc = {(r["selector"], r["seed"], r["budget"]): r["test_accuracy"] for r in rows}
  (e,) = results.compare([str(tmp_path / "w")], "kcenter", ["random"])[:1]
  assert (e["selector"], e["reference"], e["budget"]) == ("random", "kcenter", 0.05)
  assert e["mean_diff"] == pytest.approx(np.mean([acc[("random", s, 0.05)] - acc[("kcenter", s, 0.05)]
                                                  for s in (0, 1)]))
  # An archive of an older run of kcenter, compared with today's under a tag.
  old = [dict(r, test_accuracy=r["test_accuracy"] - 0.01 * (1 + r["seed"]))
         for r in rows if r["selector"] == "kcenter"]
  (tmp_path / "old.json").write_text(json.dumps({"note": "archived", "rows": old}))
  entries = results.compare([str(tmp_path / "w"), f"{tmp_path / 'old.json'}@old"], "kcenter@old", ["kcenter"])
  assert [(x["budget"], x["n"]) for x in entries] == [(0.05, 2), (0.1, 2)]
  assert entries[0]["mean_diff"] == pytest.approx(0.015) and entries[0]["wins"] == 2
  # A metric where lower may be better gets a neutral verdict; accuracy keeps better / worse.
  noisy = [dict(r, selected_noise_rate=0.4 if r["selector"] == "random" else 0.1 + 0.01 * r["seed"]) for r in rows]
  results.write(tmp_path / "n", noisy)
  (e,) = results.compare([str(tmp_path / "n")], "random", ["kcenter"], "selected_noise_rate")[:1]
  assert e["verdict"] == "lower" and e["losses"] == 2
  results.write(tmp_path / "c", [dict(rows[0], test_accuracy=0.123)])
  assert results.main(["compare", str(tmp_path / "w"), "--reference", "random", "--selectors", "kcenter"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("test_accuracy: selector minus random") and "| rt | 0.05 | kcenter | random | 2 |" in out
  for argv, message in (([str(tmp_path / "w"), "--reference", "rndom"], "no rows of selector 'rndom'"),
                        ([str(tmp_path / "w"), "--reference", "random", "--metric", "foo"], "metric 'foo'"),
                        ([str(tmp_path / "nowhere"), "--reference", "random"], "neither a results file"),
                        ([str(tmp_path / "w"), str(tmp_path / "c"), "--reference", "random"], "different results")):
    assert results.main(["compare", *argv]) == 2
    assert message in capsys.readouterr().err


def test_paired_difference_verdicts():
  from rlsel.stats import paired_difference
  better = paired_difference([0.75, 0.76, 0.77, 0.76], [0.70, 0.72, 0.71, 0.70])
  assert better["verdict"] == "better" and better["ci_low"] > 0 and better["wins"] == 4
  worse = paired_difference([0.70, 0.72, 0.71, 0.70], [0.75, 0.76, 0.77, 0.76])
  assert worse["verdict"] == "worse" and worse["ci_high"] < 0
  flat = paired_difference([0.70, 0.75, 0.72], [0.72, 0.72, 0.72])
  assert flat["verdict"] == "no detectable difference" and flat["ci_low"] < 0 < flat["ci_high"]
  assert (flat["wins"], flat["ties"], flat["losses"]) == (1, 1, 1)
  # The paired-t half-width for n = 3: t(0.975, 2) = 4.3027 times sd / sqrt(3).
  d = np.array([0.70, 0.75, 0.72]) - 0.72
  assert flat["ci_high"] - flat["mean_diff"] == pytest.approx(4.302653 * d.std(ddof=1) / np.sqrt(3), rel=1e-5)
  # Identical nonzero differences: no zero-width interval, no verdict; identical subsets are a plain tie.
  same = paired_difference([0.7516, 0.7484], [0.7532, 0.7500])
  assert same["ci_low"] is None and same["verdict"] == "zero spread, no interval" and same["losses"] == 2
  tied = paired_difference([0.75, 0.74], [0.75, 0.74])
  assert tied["verdict"] == "no detectable difference" and tied["ci_low"] == tied["ci_high"] == 0.0
  with pytest.raises(ValueError):
    paired_difference([0.1, 0.2], [0.1])


def test_spearman_interval_and_paired_bootstrap_difference():
  from rlsel.stats import spearman, spearman_difference, spearman_interval
  lo, hi = spearman_interval(0.3, 20)
  # Fisher z: atanh(0.3) -+ 1.95996 sqrt(1.06 / 17), back through tanh.
  half = 1.959964 * np.sqrt(1.06 / 17)
  assert (lo, hi) == (pytest.approx(np.tanh(np.arctanh(0.3) - half)), pytest.approx(np.tanh(np.arctanh(0.3) + half)))
  assert spearman_interval(None, 20) == (None, None) and spearman_interval(0.5, 3) == (None, None)
  assert spearman_interval(0.3, 200)[1] - spearman_interval(0.3, 200)[0] < hi - lo  # narrower with more points
  rng = np.random.default_rng(0)
  t = rng.normal(size=40)
  good, noise = t + 0.3 * rng.normal(size=40), rng.normal(size=40)
  d = spearman_difference(good, noise, t)
  assert d["diff"] == pytest.approx(spearman(good, t) - spearman(noise, t))
  assert 0 < d["ci_low"] < d["diff"] < d["ci_high"]  # clearly better: the paired interval excludes 0
  same = spearman_difference(good, good, t)
  assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
  assert spearman_difference([1, 2, 3], [3, 2, 1], [1, 2, 3])["ci_low"] is None  # too few points for an interval
  # The vectorised bootstrap is the loop it replaced: resample i.i.d. points, skip undefined correlations, quantiles.
  # Few points with ties, so some resamples are constant on a side (undefined) and many have tied ranks.
  a, b, tt = rng.integers(0, 3, 6), rng.integers(0, 4, 6), rng.integers(0, 3, 6)
  draw, diffs = np.random.default_rng(7), []
  for _ in range(300):
    i = draw.integers(0, 6, 6)
    x, y = spearman(a[i], tt[i]), spearman(b[i], tt[i])
    if x is not None and y is not None:
      diffs.append(x - y)
  assert 50 < len(diffs) < 300
  got = spearman_difference(a, b, tt, resamples=300, seed=7)
  assert (got["ci_low"], got["ci_high"]) == tuple(pytest.approx(v, abs=1e-12) for v in np.quantile(diffs,
                                                                                                     [0.025, 0.975]))


def test_within_group_correlations_ignore_the_groups_levels():
  from rlsel.stats import spearman, within_groups, within_groups_pearson, within_groups_spearman
  g = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
  assert np.allclose(within_groups([1, 2, 3, 10, 20, 30, 5, 5, 5], g), [-1, 0, 1, -10, 0, 10, 0, 0, 0])
  # Levels that agree across groups but orders that disagree inside each: pooled rho +, within-group rho -1.
  a = np.array([1, 2, 3, 11, 12, 13, 21, 22, 23], float)
  b = np.array([3, 2, 1, 13, 12, 11, 23, 22, 21], float)
  assert spearman(a, b) > 0.7 and within_groups_spearman(a, b, g) == pytest.approx(-1.0)
  assert within_groups_pearson(a, b, g) == pytest.approx(-1.0)
  # Equal-size groups without ties: the mean of the groups' own rhos, whatever the groups' labels are.
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=12), rng.normal(size=12)
  h = np.repeat(["c", "a", "b"], 4)
  own = np.mean([spearman(x[h == k], y[h == k]) for k in "abc"])
  assert within_groups_spearman(x, y, h) == pytest.approx(own)
  assert within_groups_pearson(x, np.repeat([1.0, 2.0, 3.0], 4), h) is None  # nothing varies within groups


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
  from rlsel.bench.selection_profile import coverage
  unit = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], np.float32)
  cov = coverage(unit, np.array([0, 0, 1, 2]), np.array([0, 2]))
  assert cov["clusters_touched"] == 2 and cov["coverage_distance"] == pytest.approx((0 + 0.2 + 0 + 1) / 4, abs=1e-6)


@pytest.mark.slow
def test_seeds_are_paired_only_the_subset_differs(tmp_path):
  """Two selectors that pick the same subset in one seed get identical fine-tunes (same head init, dropout keys and
  data order), so a paired difference is the subset's alone; another seed changes them."""
  from rlsel.selectors import base as selbase
  from rlsel.selectors.basic import StratifiedRandom

  @selbase.register("random_twin")
  class Twin(StratifiedRandom):
    """`random`'s subset under another name."""

  c = load_config("debug")
  c.selectors, c.seeds, c.finetune.max_steps = ("random", "random_twin"), (0, 1), 20
  try:
    rows = harness.run(c, tmp_path)
  finally:
    selbase._REGISTRY.pop("random_twin", None)
  by = {(r["selector"], r["seed"]): r for r in rows}
  for seed in (0, 1):
    a, b = by[("random", seed)], by[("random_twin", seed)]
    assert a["test_accuracy"] == b["test_accuracy"] and a["val_accuracy"] == b["val_accuracy"]
    assert a["test_macro_f1"] == b["test_macro_f1"] and a["best_step"] == b["best_step"]
  entry = next(e for e in results.paired(rows) if e["selector"] == "random_twin")
  assert entry["mean_diff"] == 0.0 and entry["ties"] == 2 and entry["verdict"] == "no detectable difference"


def test_learning_curves_plot_every_cell_that_trained_an_agent(tmp_path):
  curves = {"mean_return": [0.0, 0.1, 0.2], "max_return": [0.1, 0.2, 0.3], "entropy": [4.1, 3.0, 2.0],
            "greedy_return": [None, None, 0.25]}
  rows = [dict(_rows()[0], selector="rl_ppo", seed=3, info={"curves": curves, "num_clusters": 64}),
          dict(_rows()[0], selector="climb", info={"curves": {"best_score": [0.1]}}),   # no per-update returns
          dict(_rows()[0], selector="random", info=None)]
  paths = plots.learning_curves(tmp_path, rows)
  assert [p.name for p in paths] == [f"learning_rl_ppo_{rows[0]['task']}_s3.png"]
  assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
