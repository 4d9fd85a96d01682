"""The rollout replay buffer: FIFO order, deduplication by prompt, fixed capacity, informative-only admission."""

import numpy as np
import pytest

from rlsel.errors import UserError
from rlsel.rlvr.grpo import Groups
from rlsel.rlvr.replay import ReplayBuffer, split_groups

G = 2


def _groups(ids, rewards=None, tag=0.0):
  n = len(ids)
  rewards = np.tile([0.0, 1.0], (n, 1)) if rewards is None else np.asarray(rewards, np.float32)
  rows = n * G
  return Groups(np.zeros((rows, 3), np.int32), np.ones((rows, 3), bool), np.repeat(np.asarray(ids), G)[:, None]
                * np.ones((1, 2), np.int32), np.ones((rows, 2), bool), np.full((rows, 2), tag, np.float32),
                rewards, np.asarray(ids, np.int64))


def test_split_keeps_rows_with_their_prompt():
  parts = split_groups(_groups([4, 7]))
  assert [int(p.prompt_ids[0]) for p in parts] == [4, 7]
  assert (parts[1].completion == 7).all() and parts[1].rewards.shape == (1, G)


def test_fifo_capacity_and_dedup():
  buf = ReplayBuffer(3)
  buf.add(_groups([1, 2]))
  buf.add(_groups([3, 4]))
  assert buf.prompt_ids() == [2, 3, 4]  # 1 was the oldest and left
  buf.add(_groups([2], tag=-5.0))         # re-adding prompt 2 replaces it and makes it the newest
  assert buf.prompt_ids() == [3, 4, 2] and len(buf) == 3
  s = buf.sample(np.random.default_rng(0), 3)
  assert sorted(s.prompt_ids.tolist()) == [2, 3, 4]
  k = s.prompt_ids.tolist().index(2)
  assert (s.behaviour_logp[k * G:(k + 1) * G] == -5.0).all()  # the newest rollouts of prompt 2 are kept
  for i, pid in enumerate(s.prompt_ids):
    assert (s.completion[i * G:(i + 1) * G] == pid).all()


def test_sample_is_without_replacement_and_bounded():
  buf = ReplayBuffer(10)
  assert buf.sample(np.random.default_rng(0), 2) is None
  buf.add(_groups([5, 6, 7]))
  s = buf.sample(np.random.default_rng(1), 5)
  assert len(set(s.prompt_ids.tolist())) == 3 and s.rewards.shape == (3, G)
  assert buf.sample(np.random.default_rng(1), 0) is None


def test_only_informative_groups_enter_by_default():
  buf = ReplayBuffer(10)
  added = buf.add(_groups([1, 2, 3], rewards=[[1, 1], [0, 1], [0, 0]]))
  assert added == 1 and buf.prompt_ids() == [2]
  assert buf.add(_groups([1], rewards=[[1, 1]]), informative_only=False) == 1
  with pytest.raises(UserError):
    ReplayBuffer(0)
