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


def test_warmup_by_steps_keeps_evenly_spaced_checkpoints():
  from rlsel.configlib import base_config
  from rlsel.selectors.gradients import warmup as W
  assert W.checkpoint_epochs(13, 4) == {3, 6, 9, 13} and W.checkpoint_epochs(3, 4) == {1, 2, 3}
  assert W.checkpoint_epochs(5, 0) == {1, 2, 3, 4, 5}
  s = base_config().selection
  s.train_batch_size, s.warmup_epochs, s.warmup_steps = 32, 4, 200
  assert W.warmup_epochs(s, 510) == 13   # 16 steps an epoch: 4 epochs would be 64 steps
  assert W.warmup_epochs(s, 20000) == 4  # 625 steps an epoch: the epochs already give more than 200
  fns, split = tiny_fns(), tiny_split(n=24)
  ckpts = G.warmup_train(jax.random.key(0), fns, fns.params, split, epochs=4, batch_size=8, learning_rate=0.05,
                         schedule_warmup_fraction=0.1, checkpoints=2)
  assert [c.count for c in ckpts] == [6, 12]
  lrs = [warmup_decay_lr(0.05, 0.1, 12, t) for t in range(12)]  # a checkpoint's lr is the mean since the last one
  np.testing.assert_allclose([c.lr_mean for c in ckpts], [np.mean(lrs[:6]), np.mean(lrs[6:])], rtol=1e-6)


KRON_SHAPES = ((6, 5), (5,), (4, 3), (3,))  # two matrices and two vectors, flattened in this order (50 coordinates)


def test_kronecker_projection_preserves_inner_products_in_expectation():
  x, y = (jax.random.normal(jax.random.key(i), (50,)) for i in (1, 2))
  g = jnp.stack([x, y])
  factor = 2  # every side larger than 2 is projected; the 8 vector coordinates are mapped to 4
  assert G.kronecker_dim(KRON_SHAPES, factor) == 4 + 4 + 4
  def one(k):
    z = G.kronecker_project(g, k, KRON_SHAPES, factor, 4)
    return z[0] @ z[1], z[0] @ z[0]
  ip, sq = jax.vmap(one)(jax.random.split(jax.random.key(3), 4000))
  for got, want in ((ip, x @ y), (sq, x @ x)):
    got, want = np.asarray(got), float(want)
    assert abs(got.mean() - want) < 5 * got.std() / np.sqrt(len(got)), (got.mean(), want)
  assert np.asarray(ip).std() > 0  # really random


def test_kronecker_projection_is_exact_when_the_factor_covers_every_side():
  g = jax.random.normal(jax.random.key(4), (3, 50))
  z = G.kronecker_project(g, jax.random.key(5), KRON_SHAPES, 8, 4)  # every side <= 8, vectors (8) <= 64: identities
  assert z.shape == (3, 50) == (3, G.kronecker_dim(KRON_SHAPES, 8))
  np.testing.assert_allclose(np.asarray(z @ z.T), np.asarray(g @ g.T), rtol=1e-5)


def test_kronecker_projection_is_linear_and_per_matrix():
  g = jax.random.normal(jax.random.key(6), (2, 50))
  key = jax.random.key(7)
  z = G.kronecker_project(g, key, KRON_SHAPES, 2, 4)
  np.testing.assert_allclose(np.asarray(G.kronecker_project(2 * g[:1] - g[1:], key, KRON_SHAPES, 2, 4)),
                             np.asarray(2 * z[:1] - z[1:]), rtol=1e-4, atol=1e-5)
  # Changing only the second matrix (coordinates 35..46; the (3,) vector is 47..49) leaves the first matrix's block alone.
  h = g.at[:, 35:47].set(0.0)
  zh = G.kronecker_project(h, key, KRON_SHAPES, 2, 4)
  np.testing.assert_allclose(np.asarray(zh[:, :4]), np.asarray(z[:, :4]), rtol=1e-6)
  assert not np.allclose(np.asarray(zh[:, 4:8]), np.asarray(z[:, 4:8]))


def test_make_projector_skips_small_scopes_and_budgets_the_kronecker_width():
  from rlsel.configlib import base_config
  s = base_config().selection
  s.projection_dim, s.projection_kind = 64, "kronecker"
  small = G.make_projector(jax.random.key(0), s, ((10, 3), (3,)), sparse=False)
  assert small.kind == "none" and small.out_dim == 33  # 33 coordinates <= 64: the raw gradient, nothing to gain
  assert G.make_projector(jax.random.key(0), s, ((10, 3), (3,)), sparse=True).kind == "none"
  big = G.make_projector(jax.random.key(0), s, ((40, 30), (30, 20), (30,)), sparse=False)
  assert big.kind == "kronecker" and big.dim == 4  # 3 blocks (two matrices, the vectors) of 64 // 3 = 21 -> k = 4
  assert big.out_dim == 16 + 16 + 16 <= 64
  assert big.describe() == {"projection": "kronecker", "feature_dim": 48, "num_grad_params": 1830}
  s.projection_kind = "gaussian"
  assert G.make_projector(jax.random.key(0), s, ((40, 30),), sparse=False).out_dim == 64


def test_gradient_features_kronecker_batched_equal_direct_projection():
  fns, split = tiny_fns(), tiny_split(n=11)
  paths = G.select_paths(fns.params, "last_k", 1, ("head",), r"layers?_(\d+)")
  sel, frozen = G.split_params(fns.params, paths)
  shapes = G.leaf_shapes(fns.params, paths)
  assert sum(int(np.prod(s)) for s in shapes) == G.num_coordinates(sel)
  proj = G.Projector("kronecker", jax.random.key(9), 2, 4, shapes=shapes)
  feats = G.gradient_features(fns, fns.params, split, paths, proj, batch_size=4)
  direct = proj(G.flatten_rows(G.per_example_grads(fns.apply, sel, frozen, G.batch_of(split, np.arange(11))), paths))
  assert feats.shape == (11, proj.out_dim)
  np.testing.assert_allclose(feats, np.asarray(direct), rtol=1e-4, atol=1e-6)


def test_length_sorted_batches_give_the_same_features_and_probabilities():
  """Rows sorted by length, batches cut to their longest row: the same per-example outputs at their own positions."""
  from rlsel.selectors.base import Split
  fns, split = tiny_fns(), tiny_split(n=13, length=8)
  lengths = np.random.default_rng(3).integers(1, 9, 13)
  mask = (np.arange(8)[None] < lengths[:, None]).astype(np.int32)
  split = Split(split.ids, split.labels, split.input_ids, mask, split.token_type_ids)
  paths = G.select_paths(fns.params, "last_k", 1, ("head",), r"layers?_(\d+)")
  proj = G.Projector("kronecker", jax.random.key(9), 2, 4, shapes=G.leaf_shapes(fns.params, paths))
  full = G.gradient_features(fns, fns.params, split, paths, proj, batch_size=4)
  cut = G.gradient_features(fns, fns.params, split, paths, proj, batch_size=4, length_multiple=2)
  assert np.abs(full).max() > 0  # real gradients, not zeros
  np.testing.assert_allclose(cut, full, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(G.predict_proba(fns, fns.params, split, 4, length_multiple=2),
                             G.predict_proba(fns, fns.params, split, 4), rtol=1e-5, atol=1e-6)
  widths = [cols for _, _, cols in G.model.length_sorted(split, 4, 2)]
  assert widths == sorted(widths) and widths[0] < 8  # short rows really ran narrower


def test_gradient_scopes_helpers():
  from rlsel.bench import gradient_scopes as gs
  assert gs.parse_scope("head") == ("head", 0) and gs.parse_scope("last_k:2") == ("last_k", 2)
  for bad in ("last_k", "last_k:0", "all", "head:1"):
    with pytest.raises(UserError):
      gs.parse_scope(bad)
  # Class-signed copies of one vector (a binary head's unit gradients) are perfectly collinear within a class.
  v = np.array([[1.0, 2.0, 0.5]])
  labels = np.array([0, 0, 1, 1])
  feats = np.concatenate([v, 3 * v, -v, -2 * v])
  assert gs.within_class_cosine(feats, labels) == pytest.approx(1.0)
  orth = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
  assert gs.within_class_cosine(orth, labels) == pytest.approx((0.0 + -1.0) / 2)
  # The LESS-style score: max over classes of the unit row's dot product with the class's mean unit validation
  # gradient (class 0: [0.5, 0, 0.5]; class 1: [0, 1, 0]).
  val = np.array([[2.0, 0, 0], [0, 0, 1.0], [0, 3.0, 0]])
  score = gs.class_alignment(np.array([[1.0, 0, 0], [0, 1.0, 1.0]]), val, np.array([0, 0, 1]), 2)
  np.testing.assert_allclose(score, [0.5, 1 / np.sqrt(2)], rtol=1e-5)
