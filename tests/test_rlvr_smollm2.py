"""SmolLM2-135M-Instruct from the offline GGUF: greedy decoding with the KV cache continues a prompt sensibly."""

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
