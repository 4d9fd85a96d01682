"""Tiny, fast, CPU-only end-to-end config used by the tests (well under two minutes).

    python -m rlsel.main --config=configs/debug.py --workdir=/tmp/rlsel_debug

A 2-layer randomly initialised BERT (hidden 64) on a 600-example stratified sample of `rt`, 32 tokens, 10% budget.
The RL selectors (`--config.selectors=rl_ppo`) get a tiny environment and agent: 8 clusters, 8 parallel episodes
of 4 steps, 4 updates with an agent checkpoint every 2, XLA's fast-compile mode.
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
  c.kmeans.num_clusters, c.kmeans.iters = 8, 5
  c.proxy.steps, c.proxy.batch_size, c.proxy.init_steps = 8, 16, 8
  c.rl.num_envs, c.rl.num_updates, c.rl.checkpoint_every = 8, 4, 2
  c.rl.update_epochs, c.rl.num_minibatches, c.rl.hidden, c.rl.episode_steps = 1, 2, 16, 4
  c.rl.log_every, c.rl.fast_compile = 1, True
  c.climb.iterations, c.climb.samples, c.climb.warm_iterations = 2, 16, 1
  return c
