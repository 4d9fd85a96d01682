"""DOTS: the attention difficulty estimator fits held-out prompts; selection targets p near alpha without replacement."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rlsel.rlvr import dots


def _cfg():
  d = ml_collections.ConfigDict()
  d.proj_hidden, d.proj_dim, d.fit_steps, d.fit_learning_rate, d.prob_eps = 16, 8, 150, 1e-2, 1e-4
  return d


def test_estimator_generalises_difficulty_from_reference_set():
  rng = np.random.default_rng(0)
  # difficulty clusters: prompts near centre c have success rate p_c
  centres, rates = rng.normal(size=(4, 6)) * 3, np.array([0.05, 0.35, 0.65, 0.95])
  c_ref, c_new = rng.integers(0, 4, 48), rng.integers(0, 4, 200)
  ref = centres[c_ref] + rng.normal(size=(48, 6)) * 0.3
  new = centres[c_new] + rng.normal(size=(200, 6)) * 0.3
  y = np.clip(rates[c_ref] + rng.normal(size=48) * 0.05, 0, 1)
  d = _cfg()
  params = dots.init_params(jax.random.key(0), 6, d.proj_hidden, d.proj_dim)
  est = dots.make_fit(d)(params, jnp.asarray(ref, jnp.float32), jnp.asarray(y, jnp.float32))
  p_hat = np.asarray(dots.make_predict(d)(est, jnp.asarray(new, jnp.float32)))
  assert p_hat.shape == (200,) and ((p_hat > 0) & (p_hat < 1)).all()
  err = np.abs(p_hat - rates[c_new]).mean()
  assert err < 0.12, err
  assert err < 0.5 * np.abs(y.mean() - rates[c_new]).mean()  # much better than predicting the mean


def test_selection_prefers_alpha_and_is_without_replacement():
  p_hat = jnp.linspace(0.0, 1.0, 101)
  counts = np.zeros(101)
  for s in range(50):
    idx = np.asarray(dots.select(jax.random.key(s), p_hat, 10, 0.5, 0.05))
    assert len(set(idx.tolist())) == 10
    counts[idx] += 1
  near, far = counts[np.abs(np.asarray(p_hat) - 0.5) < 0.1].mean(), counts[np.abs(np.asarray(p_hat) - 0.5) > 0.4].mean()
  assert near > 10 * max(far, 0.01)
  w = np.exp(np.asarray(dots.selection_logits(p_hat, 0.5, 0.05)))
  assert np.argmax(w) == 50 and np.isclose(w[50], 1.0)


def test_standardise():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4))
  z = np.asarray(dots.standardise(jnp.asarray(x)))
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
