"""Tiny, fast, CPU-only end-to-end config used by the tests (well under two minutes).

    python -m rlsel.main --config=configs/debug.py --workdir=/tmp/rlsel_debug

A 2-layer randomly initialised BERT (hidden 64) on a 600-example stratified sample of `rt`, 32 tokens, 10% budget.
"""

from rlsel.configlib import base_config


def get_config(arg: str = None):
  c = base_config()
  c.task = arg or "rt"
  c.selectors = ("full", "random")
  c.seeds = (0,)
  c.budget = 0.1
  c.data.max_examples = 600
  c.features.max_length = 32
  c.features.batch_size = 64
  c.target.kind = "tiny"
  c.target.hidden_size = 64
  c.target.num_layers = 2
  c.target.num_heads = 4
  c.target.intermediate_size = 128
  c.finetune.batch_size = 16
  c.finetune.eval_batch_size = 64
  c.finetune.learning_rate = 1e-3
  c.finetune.epochs = 2
  c.finetune.max_steps = 40
  c.finetune.eval_every = 10
  return c
