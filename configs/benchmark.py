"""The selector comparison under the protocol: paired seeds, subsets trained to convergence, intervals against random.

    python -m rlsel.main --config=configs/benchmark.py --workdir=runs/benchmark        # rt, tweets: seeds 0-4
    python -m rlsel.main --config=configs/benchmark.py:more --workdir=runs/benchmark   # rt_subj, bbc: seeds 0-2
    python -m rlsel.main --config=configs/benchmark.py:quick --workdir=runs/bench_quick  # rt, seed 0
    python -m rlsel.main --config=configs/benchmark.py:legacy --workdir=runs/bench_old   # the old-protocol grid

The default and `:more` share every result-affecting setting, so they can fill one workdir (or run in parallel
workdirs and merge: `python -m rlsel.results merge`). results.md and summary.json give each selector's paired
difference to random and to full with a 95% interval and a verdict; plots/paired_<task>.png draws them.

Selectors: full, random and the simple baselines a reviewer asks for (cluster_stratified, ccs, label_clean,
kcenter, facility), then rl_ppo and climb. The literature selectors (less, learnalign, cropi, dots) have a variant of
their own, which shares every fine-tune setting, so its rows pair with this grid's `random` and `full` (start its
workdir from a copy of this grid's results.json; finished cells are skipped):

    python -m rlsel.main --config=configs/benchmark.py:literature --workdir=runs/lit        # rt, tweets: seeds 0-4
    python -m rlsel.main --config=configs/benchmark.py:literature_more --workdir=runs/lit   # rt_subj, bbc: 0-2
    python -m rlsel.main --config=configs/benchmark.py:literature_head --workdir=runs/lit_head  # "before" (below)

`:literature_head` is the setting before issue 20's changes (2026-12-02, session 9), as far as a flag keeps it:
head-only gradients, a 256-dim dense Rademacher projection, a 4-epoch warm-up with a checkpoint per epoch,
LearnAlign's pool-wide mean gradient, CROPI's fusion over all ranks, DOTS at tau = 0.1 on 256 reference rows; with it
the same selectors give the "before" column of issue 20. Changes without a flag stay as today (CROPI scores the whole
pool each round, DOTS resamples its reference rows and fits its estimator with cross-entropy, DOTS draws within label
shares). Its selection section differs, so it needs its own workdir (start it from the grid's results.json too: the
`random` and `full` rows read no selection field).

Fine-tune: the protocol of `rlsel.configlib.protocol_config` (shared with the main job, configs/glue.py): MiniLM-L6
at 40 tokens, validation every 40 steps with patience 3; a subset plans at least 200 steps (chosen on validation
accuracy by `python -m rlsel.bench.steps_curve`; see benchmarks/RESULTS.md), full data at most 200 (0.6 epoch on rt,
0.2 on tweets: the cap is recorded in results.json).

`:legacy` is the grid of the archived tables in benchmarks/RESULTS.md (11 selectors, seeds 0 and 1, 3 epochs, a
budget sweep), for reproducing them; kcenter and cluster_balanced now keep per-label quotas there too.
"""

from rlsel.configlib import protocol_config

SELECTORS = ("full", "random", "cluster_stratified", "ccs", "label_clean", "kcenter", "facility", "rl_ppo", "climb")
TASKS = ("rt", "tweets")
MORE_TASKS = ("rt_subj", "bbc")
SEEDS = (0, 1, 2, 3, 4)
MORE_SEEDS = (0, 1, 2)
LITERATURE_SELECTORS = ("random", "less", "learnalign", "cropi", "dots")
LEGACY_SELECTORS = ("full", "random", "rl_ppo", "rl_dqn", "less", "learnalign", "cropi", "dots", "kcenter", "entropy",
                    "cluster_balanced")


def get_config(arg: str = None):
  c = protocol_config()
  c.task = TASKS[0]
  c.tasks = TASKS
  c.selectors = SELECTORS
  c.seeds = SEEDS
  c.budget = 0.05
  if arg == "more":
    c.task, c.tasks, c.seeds = MORE_TASKS[0], MORE_TASKS, MORE_SEEDS
  elif arg == "quick":
    c.tasks, c.seeds = ("rt",), (0,)
  elif arg in ("literature", "literature_more", "literature_head"):
    c.selectors = LITERATURE_SELECTORS
    if arg == "literature_more":
      c.task, c.tasks, c.seeds = MORE_TASKS[0], MORE_TASKS, MORE_SEEDS
    if arg == "literature_head":  # the gradient setting before session 9 (the "before" of issue 20)
      s = c.selection
      s.param_scope, s.projection_kind, s.projection_dim = "head", "rademacher", 256
      s.warmup_steps, s.warmup_checkpoints, s.cropi_sparse = 0, 0, True
      # and the formulas before issue 20's fixes, where a flag keeps them
      s.learnalign_alignment, s.rrf_top_n, s.dots_tau, s.dots_reference_size = "pool", 0, 0.1, 256
  elif arg == "legacy":
    c.tasks = ("rt", "rt_subj", "bbc", "tweets")
    c.selectors = LEGACY_SELECTORS
    c.seeds = (0, 1)
    c.finetune.min_steps = 0
    c.sweep.budgets = (0.0625, 0.1, 0.25)   # with the main 0.05: 1/16, 5%, 10%, 25%
    c.sweep.selectors = ("random", "kcenter", "rl_ppo")
  elif arg:
    raise ValueError(f"unknown benchmark variant {arg!r}; use configs/benchmark.py or configs/benchmark.py:more, "
                     ":quick, :literature, :literature_more, :literature_head or :legacy")
  return c
