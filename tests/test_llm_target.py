"""The decoder target (rlsel/target/llm.py) and LoRA (rlsel/target/lora.py) on a tiny random decoder: forward pass,
adapters that start as the base model and are all that train, a short fine-tune that learns, the decoder's own
tokens, and the same fine-tune on 1 and 8 simulated devices. The SmolLM2 classifier's check is in
tests/test_rlvr_smollm2.py, beside the other test that loads those weights (one load per test file).

`python -m tests.test_llm_target` (with XLA_FLAGS forcing 8 host devices) prints the multi-device comparison as one
JSON line; `test_one_and_eight_devices_agree` runs it in a subprocess, since pytest's JAX has one device.
"""

import functools
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from rlsel import configlib
from rlsel.errors import UserError
from rlsel.selectors.base import Split
from rlsel.target import finetune as ft
from rlsel.target import lora
from rlsel.target import model as target_model

LENGTH = 16


def decoder_config(lora_rank=0, **target):
  """The base config with a tiny decoder target (width 32, 2 layers, grouped-query attention)."""
  c = configlib.base_config()
  c.target.kind, c.target.hidden_size, c.target.num_layers = "decoder", 32, 2
  c.target.num_heads, c.target.num_kv_heads, c.target.intermediate_size = 4, 2, 64
  c.target.lora_rank, c.target.dropout, c.target.max_length = lora_rank, 0.0, LENGTH
  c.finetune.batch_size, c.finetune.eval_batch_size, c.finetune.learning_rate = 16, 32, 3e-3
  for k, v in target.items():
    c.target[k] = v
  return c


@functools.lru_cache(maxsize=8)
def built(lora_rank=0, num_classes=2):
  """(module, params) of the tiny decoder target, built once per setting (each build compiles an init)."""
  return target_model.build(decoder_config(lora_rank), num_classes, key=jax.random.key(0))


def word_split(config, n, seed, offset=0):
  """A Split of texts tokenised for the target: label 1 texts start with "yes", label 0 with "no", then noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n).astype(np.int32)
  letters = np.array(list("abcdefghij "))
  texts = [("yes " if y else "no ") + "".join(rng.choice(letters, 8)) for y in labels]
  toks = target_model.tokenize(config, texts, None)
  return Split(np.arange(offset, offset + n, dtype=np.int64), labels, toks["input_ids"], toks["attention_mask"],
               toks["token_type_ids"])


class ForwardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward_shapes_finite_and_padding_ignored(self):
    module, params = built(lora_rank=2, num_classes=3)
    toks = target_model.tokenize(decoder_config(), ["a short one", "a longer text, cut at the length"], None)
    ids, mask = jnp.asarray(toks["input_ids"]), jnp.asarray(toks["attention_mask"])
    apply = self.variant(lambda p, i, m: module.apply({"params": p}, i, m, jnp.zeros_like(i)))
    # rows 2-3 hold other tokens in the padded slots, which must not change the output (causal, masked keys)
    both = apply(params, jnp.concatenate([ids, jnp.where(mask > 0, ids, 7)]), jnp.concatenate([mask, mask]))
    chex.assert_shape(both, (4, 3))
    chex.assert_type(both, jnp.float32)
    chex.assert_tree_all_finite(both)
    np.testing.assert_allclose(both[2:], both[:2], atol=1e-5)


def test_pooling_weights_pick_the_last_real_token_or_average_the_real_ones():
  from rlsel.target.llm import pool_weights
  mask = jnp.array([[1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(pool_weights(mask, "last"), np.eye(4)[[2, 2, 3]])
  np.testing.assert_allclose(pool_weights(mask, "mean"), mask / mask.sum(1, keepdims=True))


def test_tokens_are_the_decoders_own_and_end_with_eos():
  from rlsel.rlvr.tokenizer import CharTokenizer
  config = decoder_config()
  tok = CharTokenizer()
  out = target_model.tokenize(config, ["ab", "x" * 40], ["c", ""])
  chex.assert_shape([out["input_ids"], out["attention_mask"], out["token_type_ids"]], (2, LENGTH))
  assert out["input_ids"][0, :5].tolist() == tok.encode("ab\nc", bos=False) + [tok.eos_id]
  assert out["attention_mask"][0].tolist() == [1] * 5 + [0] * (LENGTH - 5)
  assert out["input_ids"][1, -1] == tok.eos_id and out["attention_mask"][1].all()  # cut to length - 1, then EOS
  assert not target_model.shares_feature_tokens(config)
  assert target_model.shares_feature_tokens(configlib.base_config())  # MiniLM reads the features' own tokens


def test_lora_adapters_start_at_zero_so_the_first_forward_is_the_base_models():
  config = decoder_config(lora_rank=2)
  module, params = built(lora_rank=2)
  trainable, frozen = lora.partition(params)
  adapters = {p for p in traverse_util.flatten_dict(trainable) if p[0] != "head"}
  assert {(p[-2], p[-1]) for p in adapters} == {(m, a) for m in ("q", "v") for a in ("lora_a", "lora_b")}
  chex.assert_shape(trainable["decoder"]["layers"]["q"]["lora_a"], (2, 32, 2))  # [layers, in, rank]
  assert all(np.all(np.asarray(b) == 0) for p, b in traverse_util.flatten_dict(trainable).items() if p[-1] == "lora_b")

  # zero B: the first forward equals the base model (same weights, no adapters) exactly
  base_module, _ = built(lora_rank=0)
  base_params = lora.combine({"head": trainable["head"]}, frozen)
  split = word_split(config, config.finetune.eval_batch_size, 0)
  args = (split.input_ids, split.attention_mask, split.token_type_ids)  # the fine-tune's eval batch: one compile
  np.testing.assert_allclose(ft.make_eval_fn(module)(params, *args), ft.make_eval_fn(base_module)(base_params, *args),
                             atol=1e-6)


def test_lora_frozen_base_is_stored_in_the_compute_dtype():
  from rlsel.target.llm import store_frozen
  params = store_frozen(built(lora_rank=2)[1], "bfloat16")  # what build does when target.dtype="bfloat16"
  trainable, frozen = lora.partition(params)
  assert {x.dtype for x in jax.tree.leaves(trainable)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(frozen) if x.ndim > 1} == {jnp.dtype(jnp.bfloat16)}


def test_short_lora_finetune_of_the_small_decoder_beats_chance_changing_only_adapters_and_head():
  config = decoder_config(lora_rank=2)
  config.finetune.max_steps, config.finetune.eval_every, config.finetune.patience = 60, 20, 10
  train, val = word_split(config, 256, 0), word_split(config, 128, 1, offset=1000)
  module, params = built(lora_rank=2)
  res = ft.finetune(jax.random.key(1), config, module, params, train, val)
  assert res.history[-1][1] < res.history[0][1]
  assert res.val_accuracy > 0.8  # chance is 0.5
  before, after = traverse_util.flatten_dict(params), traverse_util.flatten_dict(res.params)
  assert before.keys() == after.keys()
  for path in before:
    changed = not np.array_equal(np.asarray(before[path]), np.asarray(after[path]))
    assert changed == lora.is_trainable(path), path  # adapters and head moved, the base did not


def test_lora_param_scope_takes_adapters_and_head():
  from rlsel.selectors.gradients import select_paths
  _, params = built(lora_rank=2)
  paths = select_paths(params, "lora", 0, ("head",), r"layers?_(\d+)")
  assert paths == sorted(["head/bias", "head/kernel"] + [f"decoder/layers/{m}/lora_{x}" for m in "qv" for x in "ab"])
  _, plain = built(lora_rank=0)
  with pytest.raises(UserError, match="lora_rank"):
    select_paths(plain, "lora", 0, ("head",), r"layers?_(\d+)")


@pytest.mark.parametrize("field, value, match", [
    ("kind", "gpt5", "target.kind"), ("pooling", "max", "target.pooling"),
    ("lora_targets", ("q", "x"), "target.lora_targets"), ("num_kv_heads", 3, "target.num_kv_heads"),
    ("max_length", 1, "target.max_length")])
def test_bad_target_settings_fail_naming_the_field(field, value, match):
  config = decoder_config(lora_rank=2)
  config.target[field] = value
  with pytest.raises(UserError, match=match):
    target_model.validate(config)


# 1 vs 8 simulated devices -----------------------------------------------------------------------------------------
def multidevice_report() -> dict:
  """Fine-tunes of the tiny LoRA decoder with no mesh and on a data x fsdp mesh over every device (batches split
  over all of them, big frozen arrays over `fsdp`), same key and data: the largest parameter and probability
  differences, and the parameter layouts."""
  from rlsel import sharding
  n = jax.device_count()
  config = decoder_config(lora_rank=2)
  config.finetune.batch_size, config.finetune.eval_batch_size = 2 * n, 2 * n
  config.finetune.max_steps, config.finetune.eval_every = 3, 3
  config.mesh.fsdp_min_size = 256
  train, val = word_split(config, 4 * n, 0), word_split(config, 2 * n, 1, offset=100)
  module, params = built(lora_rank=2)
  ref = ft.finetune(jax.random.key(1), config, module, params, train, val, log_prefix="1-device")
  ref_probs = ft.predict_proba(module, ref.params, val, config.finetune.eval_batch_size)
  out = {"num_devices": n}
  for tag, fsdp in (("fsdp", 2),):
    config.mesh.data, config.mesh.fsdp = -1, fsdp
    mesh = sharding.make_mesh(config)
    res = ft.finetune(jax.random.key(1), config, module, params, train, val, log_prefix=tag, mesh=mesh)
    probs = ft.predict_proba(module, res.params, val, config.finetune.eval_batch_size, mesh=mesh)
    out[f"{tag}_param_max_abs_diff"] = float(max(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
                                                 for a, b in zip(jax.tree.leaves(ref.params),
                                                                 jax.tree.leaves(res.params))))
    out[f"{tag}_prob_max_abs_diff"] = float(np.max(np.abs(probs - ref_probs)))
    out[f"{tag}_specs"] = sorted({str(x.sharding.spec) for x in jax.tree.leaves(res.params)})
  out["ref_param_change"] = float(np.max(np.abs(np.asarray(ref.params["head"]["kernel"])
                                                - np.asarray(params["head"]["kernel"]))))
  return out


def test_one_and_eight_devices_agree():
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # XLA's fast-compile flags halve the subprocess's time; both runs compared are compiled alike
  flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 " \
          "--xla_llvm_disable_expensive_passes=true"
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests.test_llm_target"], cwd=repo, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["num_devices"] == 8
  assert out["ref_param_change"] > 0
  for tag in ("fsdp",):
    assert out[f"{tag}_param_max_abs_diff"] < 1e-5, out
    assert out[f"{tag}_prob_max_abs_diff"] < 1e-5, out
  assert any("fsdp" in s for s in out["fsdp_specs"])  # big frozen base arrays split over the fsdp axis


if __name__ == "__main__":
  print(json.dumps(multidevice_report()))
