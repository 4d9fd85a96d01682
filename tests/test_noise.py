"""Label noise as a data option (rlsel/data/noise.py), the tweets' annotator confidence and tweets_trusted."""

import collections
import json

import numpy as np
import pytest

from rlsel.data import noise
from tests.conftest import load_config, run_main


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_change_labels_meets_the_rate_exactly_and_reproducibly(kind):
  labels = np.arange(1001) % 3
  m = noise.transition_matrix(("negative", "neutral", "positive"))
  a = noise.change_labels(np.random.default_rng(5), labels, 3, 0.3, kind, m)
  b = noise.change_labels(np.random.default_rng(5), labels, 3, 0.3, kind, m)
  np.testing.assert_array_equal(a, b)
  changed = a != labels
  assert changed.sum() == round(0.3 * 1001) and ((a >= 0) & (a < 3)).all()
  pairs = collections.Counter(zip(labels[changed], a[changed]))
  if kind == "asymmetric":  # sentiment: a neighbouring polarity far more often than the opposite one
    assert pairs[(0, 1)] > 2 * pairs[(0, 2)] and pairs[(2, 1)] > 2 * pairs[(2, 0)]
  else:
    assert min(pairs.values()) > 30 and len(pairs) == 6


def test_asymmetric_default_for_two_classes_flips_and_a_matrix_must_fit():
  np.testing.assert_array_equal(noise.transition_matrix(("a", "b")), [[0, 1], [1, 0]])
  from rlsel.errors import UserError
  with pytest.raises(UserError, match="has 4 entries but the task has 3 labels"):
    noise.transition_matrix(("a", "b", "c"), (0, 1, 1, 0))
  with pytest.raises(UserError, match="no other label"):
    noise.transition_matrix(("a", "b"), (1, 0, 1, 0))


def test_instance_noise_prefers_ambiguous_rows_and_the_probes_next_label():
  rng = np.random.default_rng(0)
  n = 2000
  labels = rng.integers(0, 3, n)
  probs = np.full((n, 3), 0.02)
  probs[np.arange(n), labels] = 0.96               # clear rows ...
  ambiguous = np.arange(n) < 400
  probs[ambiguous] = 0.05
  probs[ambiguous, labels[ambiguous]] = 0.5       # ... and rows torn between their label and the next one
  probs[ambiguous, (labels[ambiguous] + 1) % 3] = 0.45
  new = noise.change_labels(np.random.default_rng(1), labels, 3, 0.1, "instance", probs=probs)
  changed = new != labels
  assert changed.sum() == 200
  assert changed[ambiguous].sum() > 150                                       # mostly the ambiguous rows
  assert (new[changed & ambiguous] == (labels[changed & ambiguous] + 1) % 3).mean() > 0.8  # to the confusable label


def test_only_the_pool_is_noised_unless_asked_and_ids_are_saved(tmp_path):
  from rlsel import harness
  from rlsel.data import load_task
  c = load_config("debug")
  clean = load_task(c)
  c.data.label_noise = 0.25
  task = harness.load_task_for_run(c, str(tmp_path))
  n = len(clean.dataset["train"])
  y, y0 = task.column("train", "label"), task.column("train", "original_label")
  np.testing.assert_array_equal(y0, clean.column("train", "label"))
  assert (y != y0).sum() == round(0.25 * n)
  for split in ("validation", "test"):
    assert task.dataset[split].to_dict() == clean.dataset[split].to_dict()
  record = noise.load_record(tmp_path, "rt")
  assert record["changed_ids"]["train"] == sorted(task.column("train", "id")[y != y0].tolist())
  assert "validation" not in record["changed_ids"]
  c.data.noisy_validation = True
  both = harness.load_task_for_run(c, str(tmp_path))
  vy, vy0 = both.column("validation", "label"), both.column("validation", "original_label")
  assert (vy != vy0).sum() == round(0.25 * len(vy))
  np.testing.assert_array_equal(both.column("train", "label"), y)  # the pool's draw does not depend on validation's
  assert both.dataset["test"].to_dict() == clean.dataset["test"].to_dict()


def test_selected_noise_rate_in_rows_and_exported_subset_keeps_both_labels(tmp_path):
  import datasets
  wd = tmp_path / "run"
  r = run_main(["--config=configs/debug.py", "--config.finetune.enabled=False", "--config.selectors=random",
                "--config.data.label_noise=0.4"], wd)
  assert r.returncode == 0, r.stderr[-3000:]
  (row,) = json.loads((wd / "results.json").read_text())
  changed = set(noise.load_record(wd, "rt")["changed_ids"]["train"])
  ids = json.loads((wd / "selections" / "random-rt-0.json").read_text())
  assert row["pool_noise_rate"] == pytest.approx(len(changed) / row["pool_size"]) == pytest.approx(0.4, abs=1e-3)
  assert row["selected_noise_rate"] == pytest.approx(len(changed & set(ids)) / len(ids))
  subset = datasets.load_from_disk(str(wd / "selections" / "random-rt-0"))
  flipped = np.asarray(subset["label"]) != np.asarray(subset["original_label"])
  assert sorted(np.asarray(subset["id"])[flipped].tolist()) == sorted(changed & set(ids))


def test_tweets_keep_confidence_and_tweets_trusted_judges_on_agreed_tweets():
  from rlsel.data import load_task
  c = load_config("debug")
  c.data.max_examples = 3000
  c.task = "tweets"
  tweets = load_task(c)
  c.task = "tweets_trusted"
  trusted = load_task(c)
  for col in ("id", "text", "label"):  # the same pool
    assert tweets.dataset["train"][col] == trusted.dataset["train"][col]
  np.testing.assert_array_equal(tweets.column("train", "confidence"), trusted.column("train", "confidence"))
  assert np.isnan(tweets.column("train", "confidence")).any()  # tweets without a confidence stay (NaN)
  for split in ("validation", "test"):
    conf = trusted.column(split, "confidence")
    assert len(conf) > 0 and (conf == 1.0).all()
    assert set(trusted.column(split, "id")) <= set(tweets.column(split, "id"))
  assert np.nanmean(tweets.column("validation", "confidence")) < 1.0


def test_noisy_config_variants():
  for arg in ("rt_sym20", "rt_sym40", "rt_inst30", "tweets_trusted"):
    c = load_config("noisy", arg)
    assert c.kmeans.stratified and c.rl.within_order == "random"
    assert c.rl.confident_pool == 4 and c.kmeans.num_clusters == 64 and c.proxy.reward_source == "validation"
    assert set(c.selectors) >= {"full", "random", "label_clean", "label_confident", "rl_ppo", "climb"}
  assert load_config("noisy", "rt_sym40").data.label_noise == 0.4
  with pytest.raises(ValueError, match="needs a variant"):
    load_config("noisy", "rt_sym99")


def test_instance_noise_reads_the_pool_embeddings(tmp_path):
  """Instance noise end to end: the out-of-fold probe on the frozen embeddings (cached where the pool's are)."""
  from rlsel import harness
  c = load_config("debug")
  c.data.label_noise, c.data.noise_kind = 0.3, "instance"
  c.data.noise_probe_steps, c.data.noise_probe_folds = 30, 2
  task = harness.load_task_for_run(c, str(tmp_path))
  y, y0 = task.column("train", "label"), task.column("train", "original_label")
  assert (y != y0).sum() == round(0.3 * len(y))
  assert len(list((tmp_path / "features").glob("rt-train-*.npy"))) == 1  # the pool's own cache entry, reused later
  again = harness.load_task_for_run(c, str(tmp_path))
  np.testing.assert_array_equal(again.column("train", "label"), y)
