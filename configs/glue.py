"""The main job: full data vs a 5% stratified random subset (and the RL selectors as they land) on one task.

    python -m rlsel.main --config=configs/glue.py --workdir=/tmp/rlsel_rt            # offline task `rt`
    python -m rlsel.main --config=configs/glue.py:tweets --workdir=/tmp/rlsel_tweets
    python -m rlsel.main --config=configs/glue.py:sst2 --workdir=/tmp/rlsel_sst2      # GLUE, needs a network

`arg` is any task name: tweets, rt, rt_subj, bbc (offline), sst2, cola, mrpc, rte, qnli, qqp, mnli (hub).
CPU default: MiniLM-L6 target at 48 tokens, batch 32, up to 3 epochs capped at 300 steps (the full-data run on rt
takes about 300 steps ≈ 0.9 epoch), validation every 50 steps for early stopping. Ends within 15 minutes on 2 cores.
"""

from rlsel.configlib import base_config


def get_config(arg: str = None):
  c = base_config()
  c.task = arg or "rt"
  c.selectors = ("full", "random")
  c.seeds = (0,)
  c.budget = 0.05
  return c
