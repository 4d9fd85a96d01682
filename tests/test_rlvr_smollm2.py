"""SmolLM2-135M-Instruct from the offline GGUF: greedy decoding with the KV cache continues a prompt sensibly, and
the selection track's SmolLM2 classifier target (rlsel/target/llm.py) is built on the same weights (one load here)."""

import jax
import numpy as np

from rlsel.rlvr import decoder, smollm2
from rlsel.rlvr.tokenizer import left_pad


def test_smollm2_greedy_continuation_mentions_paris():
  module, params, tok = smollm2.load()
  assert module.cfg.num_layers == 30 and module.cfg.width == 576 and module.cfg.num_kv_heads == 3
  ids, mask = left_pad([tok.encode("The capital of France is")], 8, tok.pad_id)
  gen = decoder.make_generate(module, 4, 0.0, 1.0, tok.eos_id, tok.pad_id)
  out = tok.decode(np.asarray(gen(params, ids, mask, jax.random.key(0)).tokens[0]))
  print("SmolLM2 greedy:", repr(out))
  assert "Paris" in out


def test_smollm2_classifier_target_loads_its_weights_and_runs():
  """The `target.kind="smollm2"` classifier with LoRA: base weights as loaded, its tokens end with EOS, one forward
  on 2 short texts gives finite logits."""
  import chex

  from rlsel import configlib
  from rlsel.target import model as target_model
  config = configlib.base_config()
  config.target.kind, config.target.lora_rank, config.target.max_length = "smollm2", 4, 12
  target_model.validate(config)
  module, params = target_model.build(config, num_classes=2, key=jax.random.key(0))
  _, loaded, tok = smollm2.load()
  np.testing.assert_array_equal(params["decoder"]["layers"]["q"]["kernel"], loaded["layers"]["q"]["kernel"])
  np.testing.assert_array_equal(params["decoder"]["embed"]["embedding"], loaded["embed"]["embedding"])
  assert not np.any(np.asarray(params["decoder"]["layers"]["q"]["lora_b"]))  # fresh adapters start at zero
  toks = target_model.tokenize(config, ["A gripping film.", "Dull."], None)
  assert toks["input_ids"][0, :5].tolist() == tok.encode("A gripping film.", bos=False) + [tok.eos_id]
  logits = jax.jit(module.apply)({"params": params}, toks["input_ids"], toks["attention_mask"],
                                 toks["token_type_ids"])
  chex.assert_shape(logits, (2, 2))
  chex.assert_tree_all_finite(logits)
