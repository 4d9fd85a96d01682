"""rlsel: choose which examples to fine-tune a language model on, with reinforcement learning, in JAX.

The library calls: `rlsel.select(dataset, budget=0.05, selector="rl_ppo", ...)` returns the chosen rows of a
`datasets.Dataset`; `rlsel.embed(dataset)` its frozen MiniLM embeddings (`rlsel/api.py`). Both import JAX lazily.
"""

__version__ = "0.1.0"

from rlsel.api import embed, select  # noqa: E402,F401

__all__ = ["embed", "select"]
