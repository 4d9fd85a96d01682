"""Tokenisation and the cached frozen-encoder pool features."""

import chex
import numpy as np

from rlsel import features


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
