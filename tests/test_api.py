"""The Python API (`rlsel.select`, `rlsel.embed`), select-only runs, hub datasets by name and the exported subset's
card: the API picks the command's ids, and bad input is one UserError before any work."""

import json

import numpy as np
import pytest

from tests.conftest import load_config, run_main

SELECT_ONLY = ["--config=configs/debug.py", "--config.finetune.enabled=False"]


def _debug_api_config():
  """configs/debug.py as the API takes it (a whole ConfigDict)."""
  return load_config("debug")


@pytest.fixture(scope="module")
def command_run(tmp_path_factory):
  """The command, select-only, on the debug task: random and kcenter (an embedding selector), seed 1."""
  wd = tmp_path_factory.mktemp("cmd")
  r = run_main(SELECT_ONLY + ["--config.selectors=random,kcenter", "--config.seeds=1"], wd)
  assert r.returncode == 0, r.stderr[-3000:]
  return wd, r


def test_select_only_run_writes_selections_and_diagnostics_rows(command_run):
  import datasets
  wd, r = command_run
  rows = json.loads((wd / "results.json").read_text())
  assert [(row["selector"], row["finetuned"]) for row in rows] == [("random", False), ("kcenter", False)]
  for row in rows:
    assert row["test_accuracy"] is None and row["finetune_seconds"] == 0.0
    assert sum(row["label_counts"].values()) == row["n_selected"] == round(0.1 * row["pool_size"])
    name = f"{row['selector']}-rt-1"
    ids = json.loads((wd / "selections" / f"{name}.json").read_text())
    subset = datasets.load_from_disk(str(wd / "selections" / name))
    assert sorted(subset["id"]) == ids
    # The subset explains itself: a card in info.description and README.md, ClassLabel names, no empty pair column.
    card = (wd / "selections" / name / "README.md").read_text()
    assert subset.info.description == card and f"`{row['selector']}`" in card and row["config_id"] in card
    assert "rlsel.main" in card and "| rotten |" in card and "| fresh |" in card
    assert subset.features["label"].names == ["rotten", "fresh"] and "text_pair" not in subset.column_names
  md = (wd / "results.md").read_text()
  assert "| random | rt | 1 | 48 | — | — |" in md and "no fine-tune" in r.stdout
  assert "Paired" in md and "| rt | 0.1 | kcenter |" not in md.split("Paired")[1]  # nothing to compare


@pytest.mark.parametrize("selector", ["random", "kcenter"])
def test_api_picks_the_commands_ids(command_run, selector, tmp_path):
  import rlsel
  from rlsel.data import load_task
  wd, _ = command_run
  config = _debug_api_config()
  task = load_task(config)
  subset = rlsel.select(task.dataset["train"], budget=0.1, selector=selector, validation=task.dataset["validation"],
                        config=config, seed=1, workdir=str(tmp_path))
  expected = json.loads((wd / "selections" / f"{selector}-rt-1.json").read_text())
  assert subset["id"] == expected  # the pool's own ids, in the pool's (id-sorted) order
  assert subset.column_names == task.dataset["train"].column_names
  assert f"`{selector}`" in subset.info.description


def test_api_on_a_plain_dataset_carves_validation_and_numbers_rows(tmp_path):
  import datasets

  import rlsel
  rng = np.random.default_rng(0)
  n = 300
  ds = datasets.Dataset.from_dict({"review": [f"review {i} {'good' if i % 3 else 'bad'} {rng.integers(99)}"
                                              for i in range(n)],
                                   "stars": ["pos" if i % 3 else "neg" for i in range(n)], "extra": list(range(n))})
  out = rlsel.select(ds, budget=0.05, selector="random", text_column="review", label_column="stars",
                     config={"data.validation_fraction": 0.2}, seed=3)
  pool_size = n - round(0.2 * n)
  assert len(out) == round(0.05 * pool_size) and out.column_names == ["review", "stars", "extra", "id"]
  assert out["id"] == sorted(out["id"]) and out["extra"] == out["id"]  # ids are row positions, rows unchanged
  again = rlsel.select(ds, budget=0.05, selector="random", text_column="review", label_column="stars",
                       config={"data": {"validation_fraction": 0.2}}, seed=3)
  assert again["id"] == out["id"]  # deterministic; dotted and nested overrides are the same
  emb = rlsel.embed(ds.select(range(20)), text_column="review", workdir=str(tmp_path))
  assert emb.shape == (20, 384) and emb.dtype == np.float32 and np.isfinite(emb).all()
  assert len(list((tmp_path / "features").glob("*.npy"))) == 1
  np.testing.assert_array_equal(rlsel.embed(ds.select(range(20)), text_column="review", workdir=str(tmp_path)), emb)


API_BAD_INPUTS = {
    "budget": (dict(budget=1.5), "budget=1.5"),
    "selector": (dict(selector="oracle"), "unknown selector 'oracle'"),
    "column": (dict(text_column="body"), "no column 'body'"),
    "config_field": (dict(config={"rl.num_envz": 4}), "no field 'rl.num_envz'"),
    "config_type": (dict(config=["rl.num_envs"]), "config must be an ml_collections.ConfigDict or a dict"),
    "section": (dict(selector="rl_ppo", config={"rl.num_envs": 0}), "rl.num_envs=0"),
    "not_a_dataset": (dict(dataset={"text": ["a"], "label": [0]}), "dataset must be a datasets.Dataset"),
}


@pytest.mark.parametrize("case", sorted(API_BAD_INPUTS))
def test_api_bad_input_is_one_user_error_before_any_work(case, tmp_path):
  import datasets

  import rlsel
  from rlsel.errors import UserError
  kwargs, expected = API_BAD_INPUTS[case]
  ds = datasets.Dataset.from_dict({"text": ["a b", "c d", "e f", "g h"] * 10, "label": [0, 1] * 20})
  kwargs = {"dataset": ds, **kwargs}
  wd = tmp_path / "wd"
  with pytest.raises(UserError) as e:
    rlsel.select(workdir=str(wd), **kwargs)
  assert expected in str(e.value) and "\n" not in str(e.value)
  assert not wd.exists()


def test_hub_task_by_name_reads_a_local_folder_with_the_hub_layout(tmp_path):
  """`task=hub` goes through datasets.load_dataset(name): a folder laid out like a hub repository stands in for it
  offline (train/validation/test CSVs; string labels; a pair column)."""
  folder = tmp_path / "my_dataset"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for split, n in (("train", 160), ("validation", 40), ("test", 40)):
    lines = ["premise,hypothesis,verdict"] + [f"p{split}{i} {rng.integers(9)},h{i},{'yes' if i % 2 else 'no'}"
                                              for i in range(n)]
    (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
  def run(name, *extra):
    wd = tmp_path / name
    r = run_main(SELECT_ONLY + ["--config.task=hub", f"--config.data.hub_name={folder}", "--config.selectors=random",
                                "--config.data.text_column=premise", "--config.data.label_column=verdict", *extra], wd)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads((wd / "results.json").read_text())
    return wd, row

  wd, row = run("run", "--config.data.text_pair_column=hypothesis")
  assert row["task"] == "hub" and row["pool_size"] == 160 and row["n_selected"] == 16
  assert row["label_counts"] == {"no": 8, "yes": 8}
  import datasets
  subset = datasets.load_from_disk(str(wd / "selections" / "random-hub-0"))
  assert set(subset.column_names) == {"id", "text", "text_pair", "label"}
  assert subset.features["label"].names == ["no", "yes"]
  # A split list naming the pool and the test split: validation is carved from the pool.
  _, row2 = run("run2", "--config.data.hub_splits=train,,test")
  assert row2["pool_size"] == 160 - round(0.1 * 160)
