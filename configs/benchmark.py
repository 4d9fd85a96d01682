"""The selector comparison: every selector on the four offline tasks at 5%, plus a budget sweep.

    python -m rlsel.main --config=configs/benchmark.py --workdir=runs/benchmark
    python -m rlsel.main --config=configs/benchmark.py:quick --workdir=runs/benchmark_quick   # 1 seed, rt and bbc

Writes results.json / results.md (mean ± std over seeds), selections/, and plots/ (accuracy against budget per task;
selected vs unselected examples in a 2-D PCA of the embeddings). Interrupted runs continue where they stopped.

CPU-feasible defaults (2 cores): MiniLM target at 40 tokens, at most 200 fine-tune steps per cell (full data on
tweets sees ~0.2 epoch), validation every 40 steps. Measured on rt (pool 10,201): a 5% cell takes 1-3 minutes for the
heuristics and RL agents, 4-8 for LESS and CROPI (gradient passes over the pool), 3.5-4.5 for full data; tweets costs
about 3x as much. The whole grid is several hours on 2 CPU cores; minutes on one GPU.

Caveat: 3 epochs of a 5% budget is few steps on a small pool. bbc's 85 examples get 8 optimizer steps, which leaves
every subset near chance. Add --config.finetune.epochs=20 (53 steps) to compare selection there; benchmarks/RESULTS.md
has both tables.
"""

from rlsel.configlib import base_config

# climb and rl_ppo_warm are left out by default: each costs ~7 extra CPU minutes per cell (256 proxy fine-tunes);
# add them with --config.selectors=...,climb,rl_ppo_warm (their rt / tweets figures are in benchmarks/RESULTS.md).
SELECTORS = ("full", "random", "rl_ppo", "rl_dqn", "less", "learnalign", "cropi", "dots", "kcenter", "entropy",
             "cluster_balanced")
TASKS = ("rt", "rt_subj", "bbc", "tweets")   # cheapest first, so a partial run already covers most tasks


def get_config(arg: str = None):
  c = base_config()
  c.task = TASKS[0]
  c.tasks = TASKS
  c.selectors = SELECTORS
  c.seeds = (0, 1)
  c.budget = 0.05
  c.sweep.budgets = (0.0625, 0.1, 0.25)   # with the main 0.05: 1/16, 5%, 10%, 25%
  c.sweep.selectors = ("random", "kcenter", "rl_ppo")
  c.features.max_length = 40
  c.finetune.max_steps = 200
  c.finetune.eval_every = 40
  if arg == "quick":
    c.tasks = ("rt", "bbc")
    c.seeds = (0,)
    c.sweep.budgets = ()
  elif arg:
    raise ValueError(f"unknown benchmark variant {arg!r}; use configs/benchmark.py or configs/benchmark.py:quick")
  return c
