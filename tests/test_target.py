"""The target classifier: forward pass shapes, pretrained weights, and fine-tuning that learns."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlsel.target import finetune as ft
from rlsel.target import model as target_model
from tests.conftest import learnable_split


class ForwardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward_shapes_and_finite(self):
    from tests.conftest import load_config
    config = load_config("debug")
    module, params = target_model.build(config, num_classes=3, key=jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (5, config.features.max_length), 1, 1000)
    mask = jnp.ones_like(ids).at[:, -4:].set(0)
    apply = self.variant(lambda p, i, m: module.apply({"params": p}, i, m, jnp.zeros_like(i)))
    logits = apply(params, ids, mask)
    chex.assert_shape(logits, (5, 3))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    # Padding positions do not change the output.
    ids2 = ids.at[:, -4:].set(999)
    np.testing.assert_allclose(apply(params, ids2, mask), logits, atol=1e-5)


def test_minilm_matches_transformers_reference():
  """Our Flax encoder on the asset's safetensors equals transformers' FlaxBertModel (the reference BERT)."""
  from rlsel import features
  from rlsel.assets import minilm_dir
  transformers = pytest.importorskip("transformers")
  toks = features.tokenize(["The capital of France is Paris.", "a cat sat on the mat"], None, 16)
  module, params = target_model.pretrained_encoder()
  ours = module.apply({"params": params}, toks["input_ids"], toks["attention_mask"], toks["token_type_ids"])
  ref = transformers.FlaxBertModel.from_pretrained(str(minilm_dir()), from_pt=True)
  theirs = ref(**toks).last_hidden_state
  real = toks["attention_mask"][..., None] > 0
  np.testing.assert_allclose(np.where(real, ours, 0), np.where(real, theirs, 0), atol=1e-4)
  assert target_model.count_params(params) == 22_565_376  # 22.7M with the unused pooler


def test_finetune_loss_falls_and_beats_chance(debug_config):
  c = debug_config
  c.finetune.max_steps = 60
  c.finetune.epochs = 10
  c.finetune.eval_every = 20
  c.finetune.patience = 10
  c.target.dropout = 0.0
  train, val = learnable_split(256, 32, 0), learnable_split(128, 32, 1, offset=1000)
  module, params = target_model.build(c, 2, key=jax.random.key(0))
  res = ft.finetune(jax.random.key(1), c, module, params, train, val)
  losses = [h[1] for h in res.history]
  assert losses[-1] < losses[0]
  assert res.val_accuracy > 0.9
  assert res.steps == 60 and res.planned_steps == 60 and res.tokens == 60 * c.finetune.batch_size * 32
  assert res.flops > 0
  probs = ft.predict_proba(module, res.params, val, c.finetune.eval_batch_size)
  chex.assert_shape(probs, (128, 2))
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  assert ft.metrics(val.labels, probs, 2)["accuracy"] == pytest.approx(res.val_accuracy)


def test_length_sorted_prediction_equals_full_width(debug_config):
  """Cutting each length-sorted batch's padding columns changes nothing but the time (absolute positions, masked
  padding); a mix of lengths spans several widths, so the padded last batch and reordering are covered."""
  from rlsel.selectors.base import Split
  c = debug_config
  val = learnable_split(45, 32, 1)
  lengths = np.random.default_rng(2).integers(2, 33, 45)
  mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int32)
  val = Split(val.ids, val.labels, val.input_ids * mask, mask, val.token_type_ids)
  module, params = target_model.build(c, 2, key=jax.random.key(0))
  full = ft.predict_proba(module, params, val, 8)
  cut = ft.predict_proba(module, params, val, 8, length_multiple=8)
  np.testing.assert_allclose(cut, full, atol=1e-5)
  assert np.abs(full - full.mean(0)).max() > 1e-3  # rows differ, so a misplaced row would show


def test_finetune_small_subset_and_determinism(debug_config):
  """A subset smaller than a batch still trains (fixed batch shape), and the same key gives the same parameters."""
  c = debug_config
  c.finetune.max_steps = 3
  train, val = learnable_split(5, 32, 0), learnable_split(20, 32, 1, offset=100)
  module, params = target_model.build(c, 2, key=jax.random.key(0))
  a = ft.finetune(jax.random.key(3), c, module, params, train, val)
  b = ft.finetune(jax.random.key(3), c, module, params, train, val)
  chex.assert_trees_all_equal(a.params, b.params)


def test_metrics_macro_f1():
  labels = np.array([0, 0, 1, 1, 2])
  probs = np.eye(3)[[0, 1, 1, 1, 0]]
  m = ft.metrics(labels, probs, 3)
  assert m["accuracy"] == pytest.approx(0.6)
  # F1 per class: c0 = 2*1/(2+1+1)=0.5, c1 = 2*2/(4+1+0)=0.8, c2 = 0
  assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


@pytest.mark.parametrize("total", [1, 3, 30, 200])
def test_learning_rate_at_equals_the_optax_warmup_then_decay_schedule(total):
  import types

  import optax
  fc = types.SimpleNamespace(learning_rate=5e-5, warmup_fraction=0.1)
  warmup = max(1, int(round(0.1 * total)))
  ref = optax.join_schedules([optax.linear_schedule(0.0, 5e-5, warmup),
                              optax.linear_schedule(5e-5, 0.0, max(1, total - warmup))], [warmup])
  got = np.array([ft.learning_rate_at(fc, total, c) for c in range(total + 2)])
  np.testing.assert_allclose(got, np.array([float(ref(c)) for c in range(total + 2)]), rtol=1e-6, atol=1e-12)


def test_optimizer_times_passed_learning_rate_equals_adamw():
  """make_optimizer + the step's -lr scaling is optax.adamw with the same schedule (weight decay masked the same)."""
  import types

  import optax
  fc = types.SimpleNamespace(learning_rate=1e-2, warmup_fraction=0.25, weight_decay=0.1, grad_clip=1.0)
  total = 8
  sched = lambda c: ft.learning_rate_at(fc, total, int(c))  # noqa: E731  (host-side, same values)
  ref_tx = optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(lambda c: jnp.asarray([sched(i) for i in range(total + 1)])[c],
                                   weight_decay=0.1, mask=ft.decay_mask))
  tx = ft.make_optimizer(fc)
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  p_ref, s_ref, p, s = params, ref_tx.init(params), params, tx.init(params)
  for c in range(total):
    g = jax.tree.map(lambda x: jnp.full_like(x, 0.5 + c), params)
    u, s_ref = ref_tx.update(g, s_ref, p_ref)
    p_ref = optax.apply_updates(p_ref, u)
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, jax.tree.map(lambda x: -np.float32(sched(c)) * x, u))
  chex.assert_trees_all_close(p, p_ref, rtol=1e-6, atol=1e-7)


def test_planned_steps_min_and_max():
  """Epochs over the subset, raised to min_steps (small subsets train to convergence), capped at max_steps."""
  import types
  from rlsel.target.finetune import planned_steps
  fc = types.SimpleNamespace(epochs=3, batch_size=32, min_steps=0, max_steps=300)
  assert planned_steps(fc, 510) == 48 and planned_steps(fc, 10_201) == 300
  fc.min_steps = 200
  assert planned_steps(fc, 510) == 200 and planned_steps(fc, 10_201) == 300 and planned_steps(fc, 4_000) == 300
  fc.min_steps = fc.max_steps = 50
  assert planned_steps(fc, 510) == 50 and planned_steps(fc, 10_201) == 50
