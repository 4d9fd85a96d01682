"""The RLVR track: GRPO vs GRPO + DOTS (difficulty-targeted selection and rollout replay) on generated arithmetic.

  python -m rlsel.main --config=configs/rlvr.py --workdir=/tmp/rlvr
  python -m rlsel.main --config=configs/rlvr.py:smoke --workdir=/tmp/rlvr-smoke   # tiny, about a minute on CPU
  --config.rlvr.model=smollm2 uses SmolLM2-135M-Instruct (slow on CPU: minutes per step).
"""

from rlsel import configlib
from rlsel import rlvr


def get_config(arg: str = ""):
  c = configlib.base_config()
  c.task = "arithmetic"
  c.selectors = ()
  c.seeds = (0, 1, 2)
  c.rlvr = rlvr.default_config()
  if arg == "smoke":
    c.seeds = (0,)
    r = c.rlvr
    r.data.n_train, r.data.n_validation, r.data.n_test = 2000, 100, 200
    r.warmup.steps = 300
    r.grpo.steps, r.grpo.eval_every, r.grpo.eval_size = 10, 5, 200
    r.grpo.eval_batch_size = 200
    r.dots.reestimate_every, r.dots.reference_size, r.dots.holdout_size, r.dots.fit_steps = 5, 32, 32, 100
    r.learnalign.warmup_steps, r.learnalign.candidates, r.learnalign.top_fraction = 2, 160, 0.2
    r.cropi.candidates, r.cropi.validation_size, r.cropi.keep_fraction, r.cropi.rounds = 160, 32, 0.2, 2
  return c
