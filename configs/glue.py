"""The main job: full data, a 5% stratified random subset, and the RL-family selectors at 5% on one task.

    python -m rlsel.main --config=configs/glue.py --workdir=/tmp/rlsel_rt            # offline task `rt`
    python -m rlsel.main --config=configs/glue.py:tweets --workdir=/tmp/rlsel_tweets
    python -m rlsel.main --config=configs/glue.py:sst2 --workdir=/tmp/rlsel_sst2      # GLUE, needs a network

`arg` is any task name: tweets, rt, rt_subj, bbc (offline), sst2, cola, mrpc, rte, qnli, qqp, mnli (hub).
CPU default: MiniLM-L6 target at 48 tokens, batch 32, up to 3 epochs capped at 300 steps (the full-data run on rt
takes about 300 steps ≈ 0.9 epoch), validation every 50 steps for early stopping.

Default selectors: full, random, rl_ppo and rl_dqn (the RL agents over the chunked cluster environment, proxy
reward). climb (the CLIMB-style mixture search) and rl_ppo_warm (climb + behaviour cloning + PPO, about 2 min more)
are left out. On 2 quiet CPU cores the job with climb took 14 min 59 s of wall-clock, including embedding the pool,
which leaves no margin under the 15-minute budget. Without climb's 64 s cell it comes to about 13.9 min. Add them
with --config.selectors=full,random,rl_ppo,rl_dqn,climb,rl_ppo_warm.
"""

from rlsel.configlib import base_config


def get_config(arg: str = None):
  c = base_config()
  c.task = arg or "rt"
  c.selectors = ("full", "random", "rl_ppo", "rl_dqn")
  c.seeds = (0,)
  c.budget = 0.05
  return c
