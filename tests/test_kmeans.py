"""K-means in JAX: blobs recovered, batching/padding invisible, stratified clusters pure, features well-formed."""

import jax
import numpy as np

from rlsel import kmeans


def _blobs(seed=0, per=40, dim=5):
  rng = np.random.default_rng(seed)
  centres = np.eye(3, dim) * 20.0
  x = np.concatenate([c + rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
  return x, np.repeat(np.arange(3), per)


def test_kmeans_recovers_blobs_and_is_deterministic():
  x, truth = _blobs()
  cents, a = kmeans.kmeans(jax.random.PRNGKey(0), x, k=3, iters=5, batch=16)  # 120 rows: 8 padded batches
  a = np.asarray(a)
  assert cents.shape == (3, 5) and a.shape == (120,)
  for b in range(3):  # each blob is one cluster, and the three clusters differ
    assert np.unique(a[truth == b]).shape[0] == 1
  assert np.unique(a).shape[0] == 3
  _, a2 = kmeans.kmeans(jax.random.PRNGKey(0), x, k=3, iters=5, batch=120)
  np.testing.assert_array_equal(a, np.asarray(a2))  # batch size does not change the result


def test_stratified_kmeans_keeps_labels_apart_and_features():
  x, truth = _blobs(seed=1)
  labels = np.arange(120) % 2  # labels cut across the blobs
  cents, a = kmeans.stratified_kmeans(jax.random.PRNGKey(1), x, labels, k=6, iters=5, batch=32)
  assert cents.shape[0] <= 6
  for c in np.unique(a):
    assert np.unique(labels[a == c]).shape[0] == 1
  cents, a = kmeans.compact(a, cents)
  assert set(np.unique(a)) == set(range(cents.shape[0]))
  loss, ent = np.linspace(0, 1, 120), np.linspace(1, 0, 120)
  f = kmeans.cluster_features(a, cents, labels, 2, loss, ent)
  assert f.shape == (cents.shape[0], 5 + 2 + 2 + 2)
  np.testing.assert_allclose(f[:, 7:9].sum(1), 1.0, atol=1e-6)  # label histograms
  assert np.all(np.isfinite(f))
