"""The main job: full data, a 5% stratified random subset, and the RL-family selectors at 5% on one task.

    python -m rlsel.main --config=configs/glue.py --workdir=/tmp/rlsel_rt            # offline task `rt`
    python -m rlsel.main --config=configs/glue.py:tweets --workdir=/tmp/rlsel_tweets
    python -m rlsel.main --config=configs/glue.py:sst2 --workdir=/tmp/rlsel_sst2      # GLUE, needs a network

`arg` is any task name: tweets, rt, rt_subj, bbc (offline), sst2, cola, mrpc, rte, qnli, qqp, mnli (hub).
CPU default: MiniLM-L6 target at 48 tokens, batch 32, up to 3 epochs capped at 300 steps (the full-data run on rt
takes about 300 steps ≈ 0.9 epoch), validation every 50 steps for early stopping.

Default selectors: full, random, rl_ppo, rl_dqn (the RL agents over the chunked cluster environment, proxy reward)
and climb (the CLIMB-style mixture search). rl_ppo_warm (climb + behaviour cloning + PPO) is left out of the default
run to stay within 15 minutes on 2 CPU cores; add it with --config.selectors=full,random,rl_ppo,rl_dqn,climb,rl_ppo_warm.
"""

from rlsel.configlib import base_config


def get_config(arg: str = None):
  c = base_config()
  c.task = arg or "rt"
  c.selectors = ("full", "random", "rl_ppo", "rl_dqn", "climb")
  c.seeds = (0,)
  c.budget = 0.05
  return c
