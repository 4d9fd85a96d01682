"""Tokenisation and the cached frozen-encoder pool features."""

import chex
import numpy as np
import pytest

from rlsel import features
from rlsel.errors import UserError


def test_tokenize_shapes_and_special_tokens():
  toks = features.tokenize(["Hello world!", "a much longer sentence " * 20], None, 24)
  for k in ("input_ids", "attention_mask", "token_type_ids"):
    chex.assert_shape(toks[k], (2, 24))
    assert toks[k].dtype == np.int32
  assert toks["input_ids"][0, 0] == 101 and toks["input_ids"][1, -1] == 102  # [CLS] ... truncated [SEP]
  assert toks["attention_mask"][0].sum() == 5 and toks["input_ids"][0, 5:].max() == 0  # padded with [PAD]=0
  pair = features.tokenize(["first text"], ["second"], 16)
  assert pair["token_type_ids"][0].max() == 1


def test_embeddings_cached_in_workdir(tmp_path, monkeypatch):
  texts = ["good film", "bad film", "a plot summary of the movie"]
  toks = features.tokenize(texts, None, 16)
  ids = np.arange(3)
  emb = features.cached_embeddings(str(tmp_path), "t", "train", ids, toks, 16, 2)
  chex.assert_shape(emb, (3, 384))
  assert emb.dtype == np.float32 and np.isfinite(emb).all()
  cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (emb / np.linalg.norm(emb, axis=1, keepdims=True)).T
  assert cos[0, 1] > cos[0, 2]  # the two film reviews are closer to each other than to the plot summary
  assert features.cache_path(str(tmp_path), "t", "train", 16, ids).exists()
  monkeypatch.setattr(features, "embed_tokens", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
  np.testing.assert_array_equal(features.cached_embeddings(str(tmp_path), "t", "train", ids, toks, 16, 2), emb)
  assert features.cache_path(str(tmp_path), "t", "train", 32, ids) != features.cache_path(str(tmp_path), "t", "train", 16, ids)


def test_length_sorted_batches_cover_every_row_once_and_never_cut_an_attended_column():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 41, 37)
  mask = (np.arange(40)[None] < lengths[:, None]).astype(np.int32)
  mask[3] = 0  # an empty row still gets a place
  mask[5, :] = 0
  mask[5, -7:] = 1  # a left-padded row keeps its full width
  seen, widths = [], []
  for pos, real, cols in features.length_sorted_batches(mask, 8, 16):
    chex.assert_shape(pos, (8,))
    assert cols % 16 == 0 or cols == 40
    assert not mask[pos[:real], cols:].any()  # nothing attended lies beyond the cut
    assert (pos[real:] == pos[0]).all()  # padding repeats the batch's first row
    seen.extend(pos[:real].tolist())
    widths.append(cols)
  assert sorted(seen) == list(range(37))
  assert widths == sorted(widths) and widths[0] < 40 and widths[-1] == 40
  full = list(features.length_sorted_batches(mask, 8, 0))
  assert [c for _, _, c in full] == [40] * 5 and np.concatenate([p[:r] for p, r, _ in full]).tolist() == list(range(37))
  with pytest.raises(UserError, match="length multiple"):
    next(features.length_sorted_batches(mask, 8, -1))


def test_length_sorted_embeddings_equal_full_width():
  texts = ["good", "a bad film with a plot nobody could follow", "fine", "an actor", "ok " * 30]
  toks = features.tokenize(texts, None, 48)
  full = features.embed_tokens(toks, 2)
  cut = features.embed_tokens(toks, 2, length_multiple=8)
  np.testing.assert_allclose(cut, full, atol=1e-5)


def test_speed_only_fields_leave_fingerprints_and_cell_identities_alone():
  """Work saved before `length_multiple` existed, or under another value, keeps its fingerprint and cell id."""
  import ml_collections
  from rlsel import results
  from rlsel.checkpoint import fingerprint
  from rlsel.configlib import base_config
  c = base_config()
  before = ml_collections.ConfigDict()  # the section as it was: fields in their own order
  before.max_length, before.batch_size = c.features.max_length, c.features.batch_size
  assert fingerprint(features.identity(c.features)) == fingerprint(before)
  other = base_config()
  other.features.length_multiple = 0
  assert fingerprint(features.identity(other.features)) == fingerprint(features.identity(c.features))
  assert results.config_id(other, "random") == results.config_id(c, "random")
  other.features.max_length = 32  # a field that changes numbers still changes both
  assert fingerprint(features.identity(other.features)) != fingerprint(features.identity(c.features))
  assert results.config_id(other, "random") != results.config_id(c, "random")


def test_eval_padding_benchmark_compares_both_widths_on_a_real_task(debug_config):
  from rlsel.bench import eval_padding
  out = eval_padding.run(debug_config, rows=24, repeats=1)
  assert [r["what"] for r in out["rows"]] == ["pool embedding", "target probabilities (validation)"]
  assert out["multiple"] == debug_config.features.length_multiple > 0
  for r in out["rows"]:
    assert r["rows"] > 0 and r["full_seconds"] > 0 and r["cut_seconds"] > 0
    assert r["ratio"] == pytest.approx(r["cut_seconds"] / r["full_seconds"])
    assert r["max_abs_difference"] < 1e-4  # the same numbers either way
  assert 1 <= out["mean_tokens_validation"] <= out["max_length"]
