"""Gradient features: projections, per-example gradients, LESS's Adam feature, parameter subsets, warm-up."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlsel.errors import UserError
from rlsel.selectors import gradients as G
from rlsel.target.finetune import warmup_decay_lr
from tests.conftest import tiny_fns, tiny_split


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_dense_projection_preserves_inner_products(kind):
  dim, p = 2048, 300
  x = jax.random.normal(jax.random.key(1), (6, p))
  z = G.dense_project(x, jax.random.key(2), dim, kind, block=64)
  exact, approx = np.asarray(x @ x.T), np.asarray(z @ z.T)
  norms = np.sqrt(np.diag(exact))
  # Var <Rx, Ry> = (|x|^2 |y|^2 + <x, y>^2) / dim (Gaussian; Rademacher is no worse): allow 5 standard deviations.
  sd = np.sqrt((np.outer(norms, norms) ** 2 + exact ** 2) / dim)
  assert np.all(np.abs(approx - exact) < 5 * sd)
  assert np.abs(approx - exact).max() > 0  # really a random map, not the identity


def test_dense_projection_is_the_implicit_matrix_and_block_invariant():
  p, dim = 37, 5
  key = jax.random.key(3)
  g = jax.random.normal(jax.random.key(4), (4, p))
  r = G.projection_rows(key, jnp.arange(p), dim, "gaussian")
  want = np.asarray(g @ r) / np.sqrt(dim)
  for block in (8, 64):  # one ragged last block, one block larger than p
    np.testing.assert_allclose(np.asarray(G.dense_project(g, key, dim, "gaussian", block)), want, rtol=1e-5, atol=1e-5)
  rad = G.projection_rows(key, jnp.arange(p), dim, "rademacher")
  assert set(np.unique(np.asarray(rad))) == {-1.0, 1.0}


def test_sparse_projection_is_dense_restricted_to_sampled_coordinates():
  p, s, dim = 50, 12, 7
  key = jax.random.key(5)
  coords = G.sparse_coordinates(jax.random.key(6), p, s)
  assert coords.shape == (s,) and np.unique(np.asarray(coords)).shape == (s,)
  assert int(coords.max()) < p
  g = jax.random.normal(jax.random.key(7), (3, p))
  sparse = np.asarray(G.sparse_project(g, coords, key, dim, block=5))
  # The dense projection of g with every unsampled coordinate zeroed, rescaled by sqrt(p / s).
  masked = jnp.zeros_like(g).at[:, coords].set(g[:, coords])
  dense = np.asarray(G.dense_project(masked, key, dim, "gaussian", block=16)) * np.sqrt(p / s)
  np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)
  assert G.sparse_coordinates(jax.random.key(6), p, p + 3).shape == (p,)


def test_adam_feature_matches_hand_computation_and_optax():
  b1, b2, eps, count = 0.9, 0.999, 1e-8, 3
  rng = np.random.default_rng(0)
  g, mu = rng.normal(size=5).astype(np.float32), rng.normal(size=5).astype(np.float32) * 0.1
  nu = rng.uniform(0.01, 0.1, size=5).astype(np.float32)
  got = np.asarray(G.adam_features(jnp.asarray(g), jnp.asarray(mu), jnp.asarray(nu), count, b1, b2, eps))
  m = b1 * mu + (1 - b1) * g
  v = b2 * nu + (1 - b2) * g * g
  t = count + 1
  want = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  adam = optax.scale_by_adam(b1, b2, eps)
  state = adam.init(jnp.zeros(5))._replace(mu=jnp.asarray(mu), nu=jnp.asarray(nu), count=jnp.asarray(count, jnp.int32))
  upd, _ = adam.update(jnp.asarray(g), state)
  np.testing.assert_allclose(got, np.asarray(upd), rtol=1e-5)


def test_select_paths_scopes():
  fns = tiny_fns()
  assert G.select_paths(fns.params, "head", 1, ("head",), r"layers?_(\d+)") == ["head/bias", "head/kernel"]
  last = G.select_paths(fns.params, "last_k", 1, ("head",), r"layers?_(\d+)")
  assert last == ["head/bias", "head/kernel", "layer_0/bias", "layer_0/kernel"]
  assert len(G.select_paths(fns.params, "all", 0, ("head",), "")) == 5
  with pytest.raises(UserError):
    G.select_paths(fns.params, "head", 1, ("classifier",), r"layers?_(\d+)")
  with pytest.raises(UserError):
    G.select_paths(fns.params, "everything", 1, ("head",), r"layers?_(\d+)")


def test_per_example_grads_match_single_example_grads():
  fns, split = tiny_fns(), tiny_split(n=5)
  paths = G.select_paths(fns.params, "last_k", 1, ("head",), r"layers?_(\d+)")
  sel, frozen = G.split_params(fns.params, paths)
  rows = G.flatten_rows(G.per_example_grads(fns.apply, sel, frozen, G.batch_of(split, np.arange(5))), paths)
  assert rows.shape == (5, G.num_coordinates(sel))
  @jax.jit
  def single(i):
    def loss(s):
      ids, mask, tt, labels = (jnp.asarray(a) for a in (split.input_ids, split.attention_mask, split.token_type_ids,
                                                         split.labels))
      logits = fns.apply(G.merge_params(s, frozen), ids[i][None], mask[i][None], tt[i][None])
      return -jax.nn.log_softmax(logits[0])[labels[i]]
    return G.flatten_vector(jax.grad(loss)(sel), paths)
  want = jnp.stack([single(i) for i in range(5)])  # one example at a time, no vmap
  np.testing.assert_allclose(np.asarray(rows), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_gradient_features_batched_equal_direct_projection():
  fns, split = tiny_fns(), tiny_split(n=11)
  paths = G.select_paths(fns.params, "head", 0, ("head",), "")
  sel, frozen = G.split_params(fns.params, paths)
  proj = G.Projector("gaussian", jax.random.key(9), 6, 4)
  feats = G.gradient_features(fns, fns.params, split, paths, proj, batch_size=4)  # 3 batches, last one padded
  direct = proj(G.flatten_rows(G.per_example_grads(fns.apply, sel, frozen, G.batch_of(split, np.arange(11))), paths))
  np.testing.assert_allclose(feats, np.asarray(direct), rtol=1e-4, atol=1e-6)


def test_warmup_train_checkpoints_per_epoch_and_learns():
  fns, split = tiny_fns(), tiny_split(n=24)
  ckpts = G.warmup_train(jax.random.key(0), fns, fns.params, split, epochs=3, batch_size=8, learning_rate=0.05,
                         schedule_warmup_fraction=0.1)
  assert len(ckpts) == 3 and [c.count for c in ckpts] == [3, 6, 9]
  assert all(c.lr_mean > 0 for c in ckpts)
  # One schedule for all supervised training: the warm-up's per-epoch mean lr is the fine-tune schedule's.
  lrs = [warmup_decay_lr(0.05, 0.1, 9, t) for t in range(9)]
  np.testing.assert_allclose([c.lr_mean for c in ckpts], [np.mean(lrs[e * 3:(e + 1) * 3]) for e in range(3)],
                             rtol=1e-6)
  before = G.predict_proba(fns, fns.params, split, 16)[np.arange(24), split.labels].mean()
  after = G.predict_proba(fns, ckpts[-1].params, split, 16)[np.arange(24), split.labels].mean()
  assert after > before
