"""rlsel: choose which examples to fine-tune a language model on, with reinforcement learning, in JAX."""

__version__ = "0.1.0"
