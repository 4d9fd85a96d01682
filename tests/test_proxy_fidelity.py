"""The proxy-fidelity benchmark on the debug config: subset families, test-retest keys, the noise ceiling, resuming."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, load_config

ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")
# The debug target plans 6 steps on a 48-example subset and then predicts one class whatever its keys; 20 steps let
# it learn enough that fine-tune keys matter.
MIN_STEPS = 20


def _entropy(counts) -> float:
  p = np.asarray(counts, np.float64)
  p = p[p > 0] / p.sum()
  return float(-(p * np.log(p)).sum())


def test_skewed_counts_fill_the_budget_capped_at_cluster_sizes():
  from rlsel.bench.proxy_fidelity import skewed_counts
  sizes = np.array([10, 5, 10, 10])
  for w in ([0.9, 0.1, 0.0, 0.0], [1e-30, 1.0, 0.0, 0.0], [0.25] * 4, [0.0, 0.0, 0.0, 1.0]):
    for budget in (1, 7, 25, 35):
      c = skewed_counts(w, sizes, budget)
      assert c.sum() == budget and np.all(c >= 0) and np.all(c <= sizes), (w, budget, c)
  np.testing.assert_array_equal(skewed_counts([0.9, 0.1, 0, 0], [10] * 4, 25), [10, 10, 3, 2])  # excess re-shared
  np.testing.assert_array_equal(skewed_counts([0.25] * 4, [10, 3, 10, 10], 20), [6, 2, 6, 6])  # weight x size


def test_plan_splits_subsets_over_families_and_the_alpha_ladder():
  from rlsel.bench import proxy_fidelity as pf
  assert pf.family_counts(31, pf.DEFAULT_FAMILIES) == {"random": 11, "policy": 10, "skewed": 10}
  assert pf.family_counts(7, ("policy", "skewed")) == {"policy": 4, "skewed": 3}
  p = pf.plan(30, pf.DEFAULT_FAMILIES)
  assert len(p) == 30 and [s for f, _, s in p if f == "skewed"][:5] == [0.1, 0.3, 1.0, 3.0, 0.1]
  # Adding the noisy family leaves the other families' subsets as they were (same family, index and strength).
  p4 = pf.plan(40, pf.FAMILIES)
  assert [t for t in p4 if t[0] != "noisy"] == p and [s for f, _, s in p4 if f == "noisy"][:5] == [0, .2, .4, .6, 0]
  assert pf.parse_families(" skewed, random ,random") == ("random", "skewed")


def test_test_retest_ceiling_is_sqrt_r_and_none_without_agreement():
  from rlsel.bench.proxy_fidelity import test_retest
  from rlsel.stats import pearson
  acc = [[0.50, 0.52], [0.60, 0.58], [0.55, 0.59], [0.70, 0.66]]
  t = test_retest(acc)
  r = pearson([a[0] for a in acc], [a[1] for a in acc])
  assert t["test_retest_pearson"] == pytest.approx(r) and 0 < r < 1 and t["test_retest_spearman"] == pytest.approx(0.8)
  assert t["noise_ceiling"] == pytest.approx(math.sqrt(r))
  assert t["noise_ceiling_of_mean"] == pytest.approx(math.sqrt(2 * r / (1 + r)))  # the mean of 2 keys is less noisy
  three = test_retest([a + [a[0]] for a in acc])
  assert three["noise_ceiling_of_mean"] == pytest.approx(math.sqrt(3 * r / (1 + 2 * r)))
  anti = test_retest([[0.5, 0.6], [0.6, 0.5], [0.55, 0.56], [0.56, 0.55]])
  assert anti["test_retest_pearson"] < 0 and anti["noise_ceiling"] is None and anti["noise_ceiling_of_mean"] is None
  assert test_retest([[0.5, 0.6], [0.5, 0.7], [0.5, 0.4]])["test_retest_pearson"] is None  # a constant key: undefined
  assert set(test_retest([[0.5], [0.6], [0.7]]).values()) == {None}  # one key: no test-retest


@pytest.mark.parametrize("kwargs, match", [
    ({"families": "random,oracle"}, "unknown subset family 'oracle'"),
    ({"families": ","}, "names no family"),
    ({"retest": 0}, "--retest_keys=0"),
    ({"subsets": 2}, "--subsets=2"),
    ({"designs": "head,oracle"}, "unknown design 'oracle'"),
    ({"designs": ","}, "names no design"),
])
def test_bad_flags_are_one_line_user_errors(tmp_path, kwargs, match):
  from rlsel.bench import proxy_fidelity as pf
  from rlsel.errors import UserError
  args = {"subsets": 6, "seed": 0, "families": "random,policy,skewed", "retest": 2, **kwargs}
  with pytest.raises(UserError, match=match) as e:
    pf.run(load_config("debug"), str(tmp_path), **args)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "fidelity").exists()  # refused before any work


def untimed(summary: dict) -> dict:
  """A summary without the designs' wall-clock seconds (they differ from run to run)."""
  out = dict(summary)
  out["designs"] = {n: {k: v for k, v in d.items() if "seconds" not in k} for n, d in summary["designs"].items()}
  return out


def test_families_retest_ceiling_and_resume(tmp_path):
  import jax

  from rlsel.errors import UserError

  from rlsel import harness
  from rlsel.bench import proxy_fidelity as pf
  from rlsel.data import load_task
  from rlsel.selectors import base as selbase

  cfg = load_config("debug")
  cfg.finetune.min_steps = MIN_STEPS
  wd = tmp_path / "wd"
  s = pf.run(cfg, str(wd), 6, 0, "random,policy,skewed", 2, designs="head,head_keys5,adapted,influence,influence_unit")
  fid = wd / "fidelity"

  task = load_task(cfg)
  pool, test = harness.build_pool(cfg, task, str(wd))
  budget = selbase.budget_size(float(cfg.budget), pool.size)
  params, selectable = pf.rl_env(cfg, pool, budget, 0)
  selectable_ids = set(pool.train.ids[selectable].tolist())
  assert s["budget"] == budget and s["subsets"] == 6 and s["retest_keys"] == 2

  # Three families, two subsets each, every one exactly the budget of unique selectable ids; all different.
  subsets = {}
  for fam in pf.DEFAULT_FAMILIES:
    for i in range(2):
      row = json.loads((fid / f"subset-rt-s0-{fam}-{i:03d}.json").read_text())
      assert row["family"] == fam and row["index"] == i
      assert row["strength"] == (pf.SKEW_ALPHAS[i] if fam == "skewed" else None)
      ids = row["ids"]
      assert len(ids) == len(set(ids)) == budget and set(ids) <= selectable_ids
      assert sum(row["cluster_counts"]) == budget
      subsets[(fam, i)] = row
  assert len({tuple(r["ids"]) for r in subsets.values()}) == 6
  assert sorted((r["family"], r["index"]) for r in s["rows"]) == sorted(subsets)

  # Skewed allocations are more concentrated over the clusters than stratified random subsets.
  share = {f: np.mean([max(subsets[(f, i)]["cluster_counts"]) / budget for i in range(2)]) for f in pf.DEFAULT_FAMILIES}
  ent = {f: np.mean([_entropy(subsets[(f, i)]["cluster_counts"]) for i in range(2)]) for f in pf.DEFAULT_FAMILIES}
  assert share["skewed"] > share["random"] and ent["skewed"] < ent["random"], (share, ent)
  assert s["families"]["skewed"]["mean_max_cluster_share"] == pytest.approx(share["skewed"])

  # Two key sets per subset: they disagree somewhere (the keys really differ) ...
  acc = {k: [json.loads((fid / f"target-rt-s0-{k[0]}-{k[1]:03d}-k{j}.json").read_text())["target_test_accuracy"]
             for j in range(2)] for k in subsets}
  assert any(a[0] != a[1] for a in acc.values()), acc
  for r in s["rows"]:
    a = acc[(r["family"], r["index"])]
    assert r["target_test_accuracy"] == a and r["target_test_accuracy_mean"] == pytest.approx(np.mean(a))
  # ... and the same key again gives the same accuracy (key 0 is the main command's cell of seed 0).
  again = pf._target_accuracy(cfg, pool, test, np.asarray(subsets[("skewed", 1)]["ids"]), 0, 1, "again")
  assert again["target_test_accuracy"] == acc[("skewed", 1)][1]
  k0, k1 = pf.retest_keys(0, 0), pf.retest_keys(0, 1)
  root = jax.random.key(0)
  assert all(np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
             for a, b in zip(k0, (jax.random.fold_in(root, 1), jax.random.fold_in(root, 2))))
  real = [jax.random.key_data(jax.random.fold_in(jax.random.key(sd), t)) for sd in range(3) for t in range(3)]
  assert not any(np.array_equal(jax.random.key_data(k), r) for k in k1 for r in real)

  # The summary: test-retest correlations, the ceiling sqrt(r), the proxy against the mean, per-family spread.
  for k in ("test_retest_pearson", "test_retest_spearman", "noise_ceiling", "spearman_proxy_score_vs_target_mean",
            "ratio_to_ceiling", "families"):
    assert k in s
  from rlsel.stats import pearson, spearman
  saved = json.loads((fid / "summary-rt-s0.json").read_text())
  assert saved == json.loads(json.dumps(s))

  # Proxy designs: `head` is the RL reward itself (the same score per subset), `head_keys5` averages other keys;
  # each design's Spearman and ratio are computed against the target's mean over keys and the mean's ceiling.
  heads = [r["designs"]["head"] for r in s["rows"]]
  assert heads == [r["proxy_reward_score"] for r in s["rows"]]
  assert [r["designs"]["head_keys5"] for r in s["rows"]] != heads
  for name, d in s["designs"].items():
    assert d["spearman_vs_target_mean"] == pytest.approx(spearman(
        [r["designs"][name] for r in s["rows"]], [r["target_test_accuracy_mean"] for r in s["rows"]]))
    assert d["seconds_per_eval"] > 0
    assert (d["spearman_ci"] == [None, None]) if d["spearman_vs_target_mean"] is None or len(s["rows"]) < 4 else (
        d["spearman_ci"][0] <= d["spearman_vs_target_mean"] <= d["spearman_ci"][1])
    assert ("spearman_minus_head" in d) == (name != "head")
    if s["noise_ceiling_of_mean"] is not None:
      assert d["ratio_to_ceiling"] == pytest.approx(d["spearman_vs_target_mean"] / s["noise_ceiling_of_mean"])
  # `adapted`: the target warmed up on a budget-sized sample of the selectable rows, the pool re-embedded with its
  # encoder (the tiny target's width, not MiniLM's 384), cached with what it cost; a design of its own.
  adapted = s["designs"]["adapted"]
  assert adapted["warmup_examples"] == budget and adapted["warmup_seconds"] > 0 and adapted["embed_seconds"] > 0
  assert adapted["prepare_seconds"] >= adapted["warmup_seconds"] + adapted["embed_seconds"]
  emb = np.load(fid / "adapted-rt-s0-train.npy")
  assert emb.shape == (len(pool.train), cfg.target.hidden_size) and np.all(np.isfinite(emb))
  assert [r["designs"]["adapted"] for r in s["rows"]] != heads
  # `influence`: per-example gradients of every pool row at the same warmed target (one warm-up, cached, shared with
  # `adapted`); a subset's score is the mean of its rows' gradients dotted with the reward split's mean gradient.
  assert sorted(p.name for p in fid.glob("warmed-*")) == ["warmed-rt-s0.json", "warmed-rt-s0.msgpack"]
  g = np.load(fid / "influence-rt-s0-train.npy").astype(np.float64)
  assert g.shape[0] == len(pool.train) and np.all(np.isfinite(g)) and np.abs(g).max() > 0
  reward = pf.reward_positions(cfg, pool, 0)
  where = {int(i): k for k, i in enumerate(pool.train.ids)}
  for name, unit in (("influence", False), ("influence_unit", True)):
    d = s["designs"][name]
    assert d["warmup_examples"] == budget and d["gradient_seconds"] > 0 and d["projection"] in ("none", "kronecker")
    x = g / np.linalg.norm(g, axis=1, keepdims=True) if unit else g
    for r in s["rows"]:
      rows = [where[i] for i in subsets[(r["family"], r["index"])]["ids"]]
      assert r["designs"][name] == pytest.approx(float(np.mean(x[rows] @ x[reward].mean(0))), rel=1e-6)
  assert [r["designs"]["influence"] for r in s["rows"]] != [r["designs"]["influence_unit"] for r in s["rows"]]
  k0_acc = [r["target_test_accuracy"][0] for r in s["rows"]]
  k1_acc = [r["target_test_accuracy"][1] for r in s["rows"]]
  r = pearson(k0_acc, k1_acc)
  assert s["test_retest_pearson"] == pytest.approx(r) and s["test_retest_spearman"] == pytest.approx(
      spearman(k0_acc, k1_acc))
  if r is not None and r > 0:
    assert s["noise_ceiling"] == pytest.approx(math.sqrt(r))
    assert s["ratio_to_ceiling"] == pytest.approx(s["spearman_proxy_score_vs_target_mean"] / math.sqrt(r))
  else:
    assert s["noise_ceiling"] is None and s["ratio_to_ceiling"] is None
  assert s["spearman_proxy_score_vs_target_mean"] == pytest.approx(
      spearman([r["proxy_reward_score"] for r in s["rows"]], [r["target_test_accuracy_mean"] for r in s["rows"]]))
  for fam in pf.DEFAULT_FAMILIES:
    f = s["families"][fam]
    means = [r["target_test_accuracy_mean"] for r in s["rows"] if r["family"] == fam]
    assert f["n"] == 2 and f["target_mean"] == pytest.approx(np.mean(means))
    assert f["target_std"] == pytest.approx(np.std(means))
    fk = [r["target_test_accuracy"] for r in s["rows"] if r["family"] == fam]
    assert f["test_retest_pearson"] == pf.test_retest(fk)["test_retest_pearson"]
  # Within families: the test-retest of key 0 against key 1 with each family's mean removed, and each design's
  # pooled within-family Spearman against the target's mean.
  from rlsel.stats import within_groups, within_groups_spearman
  fams = [r["family"] for r in s["rows"]]
  w0, w1 = within_groups(k0_acc, fams), within_groups(k1_acc, fams)
  assert s["within_family"]["test_retest_pearson"] == (None if pearson(w0, w1) is None else pytest.approx(
      pearson(w0, w1)))
  for name, d in s["designs"].items():
    rho_w = within_groups_spearman([r["designs"][name] for r in s["rows"]],
                                   [r["target_test_accuracy_mean"] for r in s["rows"]], fams)
    assert d["spearman_within_family"] == (None if rho_w is None else pytest.approx(rho_w))

  # The command again resumes: no fine-tune runs, no saved result changes, same summary; the ceiling line last but one.
  files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in fid.iterdir() if not p.name.startswith("summary")}
  cmd = [sys.executable, "-m", "rlsel.bench.proxy_fidelity", "--config=configs/debug.py",
         f"--config.finetune.min_steps={MIN_STEPS}", f"--workdir={wd}", "--subsets=6",
         "--designs=head,head_keys5,adapted,influence,influence_unit"]
  out = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "finetune" not in out.stdout + out.stderr
  assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in fid.iterdir()
          if not p.name.startswith("summary")} == files
  assert untimed(json.loads((fid / "summary-rt-s0.json").read_text())) == untimed(saved)
  last = out.stdout.strip().splitlines()[-2:]
  ceiling = "n/a" if s["noise_ceiling"] is None else f"{s['noise_ceiling']:.4f}"
  rho = "n/a" if s["spearman_proxy_score_vs_target"] is None else f"{s['spearman_proxy_score_vs_target']:.4f}"
  assert last == [f"noise_ceiling_sqrt_r={ceiling}", f"spearman_proxy_vs_target={rho}"], last

  # A shard reads the other shards' saved fine-tunes; a subset whose fine-tune is not there yet is left out, counted.
  from rlsel.bench.proxy_fidelity import parse_shard
  assert parse_shard("1/2") == (1, 2)
  for bad in ("2/2", "1", "a/b", "-1/2"):
    with pytest.raises(UserError, match="--shard"):
      parse_shard(bad)
  gone = fid / "target-rt-s0-policy-001-k1.json"
  kept = gone.read_bytes()
  gone.unlink()
  order = sorted(pf.plan(6, pf.DEFAULT_FAMILIES), key=lambda t: (t[1], pf.FAMILIES.index(t[0])))
  mine = order.index(("policy", 1, None)) % 2
  part = pf.run(cfg, str(wd), 6, 0, "random,policy,skewed", 2, shard=(1 - mine, 2))
  assert part["subsets_missing"] == 1 and part["subsets_complete"] == 5 and not gone.exists()
  assert ("policy", 1) not in {(r["family"], r["index"]) for r in part["rows"]}
  assert pf.run(cfg, str(wd), 6, 0, "random,policy,skewed", 2, finetune=False)["subsets_missing"] == 1
  assert not gone.exists()
  gone.write_bytes(kept)

  # One key set: no ceiling (and no new fine-tune: key 0 is already saved).
  one = pf.run(cfg, str(wd), 6, 0, "random,policy,skewed", 1)
  assert one["test_retest_pearson"] is None and one["noise_ceiling"] is None and one["ratio_to_ceiling"] is None
  assert all(r["target_test_accuracy"] == acc[(r["family"], r["index"])][:1] for r in one["rows"])

  # A subset saved by another machine's draw (its environment filter flagged other rows): refused unless
  # --keep_saved_subsets, which keeps the saved ids (even a row this run's environment does not offer) and counts it.
  path = fid / "subset-rt-s0-random-000.json"
  saved = path.read_bytes()
  targets = {t: t.read_bytes() for t in fid.glob("target-rt-s0-random-000-k*.json")}
  row = json.loads(saved)
  outside = next(int(v) for v in pool.train.ids if int(v) not in selectable_ids)
  row["ids"] = [outside] + row["ids"][1:]
  path.write_text(json.dumps(row))
  for t in targets:
    t.unlink()
  with pytest.raises(UserError, match="keep_saved_subsets"):
    pf.run(cfg, str(wd), 6, 0, "random,policy,skewed", 2, finetune=False)
  kept_run = pf.run(cfg, str(wd), 6, 0, "random,policy,skewed", 2, finetune=False, keep_saved=True)
  assert kept_run["subsets_kept_from_saved_draws"] == 1 and kept_run["subsets_missing"] == 1  # its fine-tunes gone
  assert s["subsets_kept_from_saved_draws"] == 0
  path.write_bytes(saved)
  for t, b in targets.items():
    t.write_bytes(b)

  # A saved result from other settings is refused, not mixed in.
  other = load_config("debug")
  other.finetune.min_steps = MIN_STEPS + 1
  with pytest.raises(UserError, match=r"other settings \(finetune.min_steps: 20 -> 21"):
    pf.run(other, str(wd), 6, 0, "random", 1)


def test_a_saved_file_survives_a_field_added_since_at_its_default(tmp_path):
  """A study's saved files name the fields they depend on: a file whose hash differs only by a field rlsel gained
  since, at its default, is kept; one that differs in a field it knew is refused, naming the field."""
  from rlsel.bench import proxy_fidelity as pf
  from rlsel.errors import UserError

  cfg = load_config("debug")
  base = pf.target_settings(load_config("debug"), 0)
  path = tmp_path / "target.json"
  made = []
  row, new = pf.load_or_make(path, base, base.fields, lambda: made.append(1) or {"target_test_accuracy": 0.5})
  assert new and made == [1] and json.loads(path.read_text())["settings_fields"] == base.fields

  # Written before `finetune.new_field` existed: its recorded fields lack it; today it sits at its default.
  saved = json.loads(path.read_text())
  grown = pf.Settings("another-hash", {**base.fields, "finetune.new_field": 3})
  defaults = {**base.fields, "finetune.new_field": 3}
  row, new = pf.load_or_make(path, grown, defaults, lambda: made.append(2) or {})
  assert not new and made == [1] and row["target_test_accuracy"] == 0.5
  # ... set away from its default, or a known field changed, the file is refused with the field named.
  with pytest.raises(UserError, match=r"finetune.new_field: '\?' -> 4"):
    pf.load_or_make(path, pf.Settings("x", {**base.fields, "finetune.new_field": 4}), defaults, lambda: {})
  cfg.finetune.min_steps += 1
  with pytest.raises(UserError, match="finetune.min_steps"):
    pf.load_or_make(path, pf.target_settings(cfg, 0), defaults, lambda: {})
  # A file from before fields were recorded matches on its hash alone.
  saved.pop("settings_fields")
  path.write_text(json.dumps(saved))
  assert pf.load_or_make(path, base, base.fields, lambda: {})[1] is False
  with pytest.raises(UserError, match="not recorded"):
    pf.load_or_make(path, grown, defaults, lambda: {})


def test_design_names_expand_and_the_incremental_scorer_replays_the_episode():
  import jax
  import jax.numpy as jnp

  from rlsel import proxy as proxy_lib
  from rlsel.bench import proxy_designs as pd
  assert pd.parse_designs("cheap") == pd.CHEAP and pd.parse_designs("all") == tuple(pd.DESIGNS)
  assert pd.parse_designs("head,cheap") == pd.CHEAP  # duplicates dropped, order kept

  # The incremental design trains as the environment does: chunks of a random order added one by one, K Adam steps
  # after each on everything added so far; then the score. Replayed here step by step with proxy.train.
  spec = proxy_lib.ProxySpec(num_classes=2, hidden=0, steps=5, batch_size=8, learning_rate=0.05,
                             score="neg_log_loss", reward_subsample=0)
  kx, ky, ki = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(kx, (40, 6))
  y = (x[:, 0] > 0).astype(jnp.int32)
  data = proxy_lib.ProxyData(x=x, y=y, rx=x[:10], ry=y[:10], init_params=proxy_lib.init_params(ki, spec, 6))
  pos = jnp.arange(3, 26, dtype=jnp.int32)  # 23 rows, chunk 5: 5 steps, the last chunk cut to 3
  key = jax.random.key(7)
  got = float(pd._scorer(spec, 2, 5)(key, data, pos))

  @jax.jit
  def replay(key, data):
    k_perm, k_train = jax.random.split(key)
    order = jax.random.permutation(k_perm, pos)
    state = proxy_lib.start(spec, data)
    for t in range(5):
      size = min((t + 1) * 5, 23)
      draw = lambda kk, shape, size=size: order[jax.random.randint(kk, shape, 0, size)]
      state = proxy_lib.train(jax.random.fold_in(k_train, t), spec, data, state, draw, 2)
    restart = proxy_lib.finetune(key, spec, data, proxy_lib.draw_from(pos))
    return (proxy_lib.score(spec, state.params, data.rx, data.ry),
            proxy_lib.score(spec, restart, data.rx, data.ry))

  want, want_restart = (float(v) for v in replay(key, data))
  assert got == pytest.approx(want, rel=1e-5)
  restart = float(pd._scorer(spec, 0, 5)(key, data, pos))
  assert restart == pytest.approx(want_restart, rel=1e-5)
  assert restart != pytest.approx(got)


def test_designs_score_on_the_rows_they_name(tmp_path):
  """`reward` scores on the reward rows of pool.train, `reward+validation` on those plus the validation split,
  `validation` on the validation split alone; the proxy always trains on the selectable rows."""
  import types

  import jax

  from rlsel import proxy as proxy_lib
  from rlsel.bench import proxy_designs as pd
  from rlsel.env.build import standardise

  cfg = load_config("debug")
  rng = np.random.default_rng(0)
  split = lambda n: types.SimpleNamespace(embeddings=rng.normal(size=(n, 6)).astype(np.float32),
                                          labels=rng.integers(0, 2, n).astype(np.int32))
  pool = types.SimpleNamespace(train=split(30), validation=split(7), num_classes=2, task="t")
  selectable, reward = np.arange(0, 20), np.arange(20, 30)
  spec = proxy_lib.spec_from_config(cfg, 2)
  base = proxy_lib.ProxyData(x=None, y=pool.train.labels[selectable], rx=None, ry=None,
                             init_params=proxy_lib.init_params(jax.random.key(1), spec, 6))
  env = types.SimpleNamespace(proxy=base, proxy_spec=spec, chunk=4)
  ctx = pd.Context(cfg, pool, None, env, selectable, reward, 0, 8, tmp_path, jax.random.key(2))
  z = standardise(pool.train.embeddings)
  vz = standardise(pool.validation.embeddings, reference=pool.train.embeddings)
  want = {"head": (z[reward], pool.train.labels[reward]),
          "head_validation": (np.concatenate([z[reward], vz]),
                              np.concatenate([pool.train.labels[reward], pool.validation.labels])),
          "head_val_only": (vz, pool.validation.labels)}
  scores = {}
  for name, (rx, ry) in want.items():
    prep = pd.prepare(name, ctx)
    np.testing.assert_allclose(np.asarray(prep.data.rx), rx, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(prep.data.ry), ry)
    np.testing.assert_allclose(np.asarray(prep.data.x), z[selectable], rtol=1e-6)
    scores[name] = prep.score(np.arange(8))
    assert np.isfinite(scores[name])
  assert len(set(scores.values())) == 3  # three different scoring sets give three different scores

  # Rows appended after the selectable ones (a saved subset drawn on another machine holds row 25): trained on too.
  rows = np.concatenate([selectable, [25]])
  wide = pd.Context(cfg, pool, None, env, selectable, reward, 0, 8, tmp_path, jax.random.key(2), rows=rows)
  prep = pd.prepare("head", wide)
  np.testing.assert_allclose(np.asarray(prep.data.x), z[rows], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(prep.data.y), pool.train.labels[rows])
  assert np.isfinite(prep.score(np.array([0, 1, 2, 3, 4, 5, 6, 20])))
  assert prep.score(np.arange(8)) == pytest.approx(scores["head"], rel=1e-6)  # the selectable rows score as before


def test_noisy_family_draws_its_share_of_changed_labels_and_needs_a_noised_pool(tmp_path):
  """The noisy family's subsets hold round(share x budget) rows whose label the pool's noise changed (as many as
  there are), the rest unchanged; deterministic; on a clean pool the family is refused before any work."""
  import types

  from rlsel.bench import proxy_fidelity as pf
  from rlsel.errors import UserError

  rng = np.random.default_rng(0)
  changed = rng.random(400) < 0.3
  env = types.SimpleNamespace(num_rows=400)
  for i, share in enumerate(pf.NOISY_SHARES):
    pos = pf.draw_subset("noisy", i, share, 0, env, None, 50, changed)
    assert pos.shape == (50,) and np.unique(pos).shape == (50,) and np.all(np.diff(pos) > 0)
    assert changed[pos].sum() == round(share * 50)
    np.testing.assert_array_equal(pos, pf.draw_subset("noisy", i, share, 0, env, None, 50, changed))
  few = np.zeros(400, bool)
  few[:5] = True  # fewer changed rows than the share asks: all of them
  assert few[pf.draw_subset("noisy", 2, 0.4, 0, env, None, 50, few)].sum() == 5

  cfg = load_config("debug")
  with pytest.raises(UserError, match="label_noise"):
    pf.run(cfg, str(tmp_path / "wd"), 8, 0, "random,noisy", 2)
  assert not (tmp_path / "wd").exists()

  # The changed rows are the ones the noise record lists; none on a clean pool.
  from rlsel import harness
  from rlsel.data import noise
  clean = harness.load_task_for_run(cfg, str(tmp_path / "clean"))
  ids = np.asarray(clean.dataset["train"]["id"], np.int64)
  assert not noise.changed_mask(clean, ids).any()
  cfg.data.label_noise = 0.3
  noised = harness.load_task_for_run(cfg, str(tmp_path / "noised"))
  mask = noise.changed_mask(noised, ids[::-1])
  want = set(noise.load_record(str(tmp_path / "noised"), noised.name)["changed_ids"]["train"])
  assert set(ids[::-1][mask].tolist()) == want and mask.mean() == pytest.approx(0.3, abs=0.01)


def test_label_quality_designs_score_subsets_by_the_probes_trust_in_their_labels(tmp_path):
  """`confidence`: a subset's mean out-of-fold probability of its rows' given labels; `unflagged`: the share of its
  rows confident learning keeps. Rows whose label was flipped score lower under both."""
  import types

  import jax

  from rlsel.bench import proxy_designs as pd
  from rlsel.selectors import coverage

  cfg = load_config("debug")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(120, 6)).astype(np.float32)
  clean = (x[:, 0] > 0).astype(np.int32)
  labels = clean.copy()
  flipped = np.arange(0, 120, 4)  # a quarter of the rows get the other label
  labels[flipped] = 1 - labels[flipped]
  split = lambda e, y: types.SimpleNamespace(embeddings=e, labels=y)
  pool = types.SimpleNamespace(train=split(x, labels), validation=split(x[:5], labels[:5]), num_classes=2, task="t")
  selectable, reward = np.arange(0, 100), np.arange(100, 120)
  ctx = pd.Context(cfg, pool, None, None, selectable, reward, 0, 10, tmp_path, jax.random.key(2))
  probs = coverage.configured_oof_probs(jax.random.fold_in(jax.random.key(2), pd.PROBE_TAG), cfg, x, labels, 2)
  good = np.setdiff1d(selectable, flipped)[:20]
  bad = flipped[flipped < 100][:20]
  conf, unfl = pd.prepare("confidence", ctx), pd.prepare("unflagged", ctx)
  assert conf.score(good) == pytest.approx(float(probs[good, labels[good]].mean()))
  assert conf.score(good) > conf.score(bad)
  flags = coverage.label_issues(labels, probs, str(cfg.selection.clean_filter_by), "test")
  assert unfl.score(good) == pytest.approx(float((~flags[good]).mean())) and unfl.score(good) > unfl.score(bad)
  assert 0 < unfl.info["flagged_share_of_pool"] < 1
  # One probe fit per context, shared by both designs; each counts its seconds.
  probe_probs, probe_seconds = ctx.memo["oof_probs"]
  np.testing.assert_array_equal(probe_probs, probs)
  assert conf.prepare_seconds >= probe_seconds and unfl.prepare_seconds >= probe_seconds
  assert {"confidence", "unflagged"} <= set(pd.CHEAP)
