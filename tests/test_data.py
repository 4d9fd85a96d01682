"""Tasks: deterministic, stratified, disjoint splits; de-duplication; user files; the GLUE path offline."""


import numpy as np
import pytest

from rlsel.configlib import base_config
from rlsel.data import load_task, splits
from rlsel.data.tasks import OFFLINE_TASKS
from rlsel.errors import UserError


def _config(task, **data):
  c = base_config()
  c.task = task
  for k, v in data.items():
    c.data[k] = v
  return c


@pytest.mark.parametrize("task", [t for t in OFFLINE_TASKS if t != "tweets_trusted"])  # its test: test_noise.py
def test_offline_splits_deterministic_stratified_disjoint(task):
  a, b = load_task(_config(task)), load_task(_config(task))
  ids = {s: a.column(s, "id") for s in ("train", "validation", "test")}
  for s in ids:
    np.testing.assert_array_equal(ids[s], b.column(s, "id"))  # deterministic
    # A single-text task has no (empty) text_pair column; its label is a ClassLabel carrying the label names.
    assert set(a.dataset[s].column_names) - {"confidence"} == {"id", "text", "label"}
    assert a.dataset[s].features["label"].names == list(a.label_names)
  assert not set(ids["train"]) & set(ids["validation"])
  assert not set(ids["train"]) & set(ids["test"])
  assert not set(ids["validation"]) & set(ids["test"])
  n = sum(len(v) for v in ids.values())
  assert abs(len(ids["validation"]) / n - 0.1) < 0.01 and abs(len(ids["test"]) / n - 0.1) < 0.01
  shares = {s: np.bincount(a.column(s, "label"), minlength=a.num_classes) / len(ids[s]) for s in ids}
  np.testing.assert_allclose(shares["validation"], shares["train"], atol=0.02)  # stratified
  np.testing.assert_allclose(shares["test"], shares["train"], atol=0.02)
  texts = [splits.normalise(t) for s in ids for t in a.dataset[s]["text"]]
  assert len(set(texts)) == len(texts)  # de-duplicated across all splits


def test_split_seed_changes_split():
  a = load_task(_config("bbc")).column("test", "id")
  b = load_task(_config("bbc", split_seed=1)).column("test", "id")
  assert not np.array_equal(a, b)


def test_deduplicate_drops_conflicting_labels():
  keep = splits.deduplicate(["A b", "a  B", "c", "C", "d"], np.array([0, 0, 1, 0, 1]))
  np.testing.assert_array_equal(keep, [0, 4])


def test_max_examples_subsample():
  d = load_task(_config("rt", max_examples=500))
  assert 490 <= sum(len(d.dataset[s]) for s in d.dataset) <= 510


def _write(path, rows, fmt):
  import pandas as pd
  df = pd.DataFrame(rows)
  if fmt == "csv":
    df.to_csv(path, index=False)
  elif fmt == "jsonl":
    df.to_json(path, orient="records", lines=True)
  else:
    df.to_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_user_file_carves_splits(tmp_path, fmt):
  rows = [{"sentence": f"example number {i} is {'good' if i % 3 else 'bad'}", "y": "pos" if i % 3 else "neg"}
          for i in range(300)]
  path = tmp_path / f"data.{fmt}"
  _write(path, rows, fmt)
  d = load_task(_config("file", train_file=str(path), text_column="sentence", label_column="y"))
  assert d.label_names == ("neg", "pos")
  assert sum(len(d.dataset[s]) for s in d.dataset) == 300
  assert len(d.dataset["test"]) == 30 and len(d.dataset["validation"]) == 30


def test_user_file_bad_inputs(tmp_path):
  path = tmp_path / "d.csv"
  _write(path, [{"text": f"t{i}", "label": i % 2} for i in range(50)], "csv")
  with pytest.raises(UserError, match="no column 'sentence'"):
    load_task(_config("file", train_file=str(path), text_column="sentence"))
  test = tmp_path / "test.csv"
  _write(test, [{"text": "u", "label": "zebra"}, {"text": "v", "label": "cat"}], "csv")
  train = tmp_path / "train.csv"
  _write(train, [{"text": f"t{i}", "label": ["cat", "dog"][i % 2]} for i in range(50)], "csv")
  with pytest.raises(UserError, match="outside the label set"):
    load_task(_config("file", train_file=str(train), test_file=str(test)))
  val = tmp_path / "val.csv"
  val.write_text("text,label\n")
  with pytest.raises(UserError, match="empty"):
    load_task(_config("file", train_file=str(train), validation_file=str(val), test_file=str(train)))


def _glue_parquet(root, task, n):
  import pandas as pd
  (root / task).mkdir(parents=True)
  rng = np.random.default_rng(0)
  for split, m in (("train", n), ("validation", n // 4), ("test", n // 4)):
    labels = rng.integers(0, 2, m) if split != "test" else -np.ones(m, int)
    df = pd.DataFrame({"sentence1": [f"s{split}{i}" for i in range(m)], "sentence2": [f"t{i}" for i in range(m)],
                       "label": labels, "idx": np.arange(m)})
    df.to_parquet(root / task / f"{split}-00000-of-00001.parquet")


def test_glue_path_offline_with_local_parquet(tmp_path):
  _glue_parquet(tmp_path, "mrpc", 200)
  d = load_task(_config("mrpc", glue_path=str(tmp_path)))
  assert d.label_names == ("not_equivalent", "equivalent")
  assert len(d.dataset["test"]) == 50  # GLUE's labelled validation split is our test split
  assert len(d.dataset["train"]) + len(d.dataset["validation"]) == 200
  assert all(d.dataset["train"]["text_pair"])


def test_glue_without_network_names_offline_tasks(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  with pytest.raises(UserError) as e:
    load_task(_config("sst2", glue_path="nyu-mll/glue-definitely-not-cached"))
  assert "tweets" in str(e.value) and "rt_subj" in str(e.value) and "\n" not in str(e.value)


def test_unknown_task():
  with pytest.raises(UserError, match="unknown task"):
    load_task(_config("imdb"))
