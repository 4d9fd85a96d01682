"""Rollout replay (DOTS): a FIFO buffer of prompt groups, deduplicated by prompt, with a fixed capacity.

Host-side numpy: each entry is one prompt's group of G rollouts with their behaviour log-probs mu, so replayed groups
can be trained with the off-policy-corrected clip in `rlsel.rlvr.grpo.clipped_objective`.
"""

from collections import OrderedDict

import numpy as np

from rlsel.errors import require
from rlsel.rlvr.grpo import Groups, concat_groups


def split_groups(groups: Groups) -> list:
  """A multi-prompt `Groups` -> one single-prompt `Groups` per prompt."""
  n, g = groups.rewards.shape
  out = []
  for i in range(n):
    rows = slice(i * g, (i + 1) * g)
    out.append(Groups(groups.prompt[rows], groups.prompt_mask[rows], groups.completion[rows], groups.mask[rows],
                      groups.behaviour_logp[rows], groups.rewards[i:i + 1], groups.prompt_ids[i:i + 1]))
  return out


class ReplayBuffer:
  """FIFO over prompt groups: adding a prompt already held replaces it (as the newest); the oldest leave first."""

  def __init__(self, capacity: int):
    require(capacity > 0, f"replay capacity must be positive, got {capacity}; set rlvr.dots.replay_capacity > 0")
    self.capacity = capacity
    self._items = OrderedDict()  # prompt id -> single-prompt Groups, oldest first

  def __len__(self):
    return len(self._items)

  def prompt_ids(self) -> list:
    """Held prompt ids, oldest first."""
    return list(self._items)

  def add(self, groups: Groups, informative_only: bool = True) -> int:
    """Adds each prompt's group (only those with mixed rewards when `informative_only`); returns how many."""
    added = 0
    for grp in split_groups(groups):
      r = grp.rewards[0]
      if informative_only and r.min() == r.max():
        continue
      pid = int(grp.prompt_ids[0])
      self._items.pop(pid, None)
      self._items[pid] = grp
      added += 1
      while len(self._items) > self.capacity:
        self._items.popitem(last=False)
    return added

  def sample(self, rng: np.random.Generator, n: int):
    """Up to n distinct groups drawn uniformly without replacement, concatenated; None when empty or n == 0."""
    n = min(n, len(self._items))
    if n == 0:
      return None
    keys = list(self._items)
    pick = rng.choice(len(keys), size=n, replace=False)
    return concat_groups([self._items[keys[i]] for i in pick])
