"""Fine-tuning survives an interruption: resuming from the orbax checkpoint gives the uninterrupted result."""

import chex
import jax
import pytest

from rlsel.checkpoint import Checkpointer
from rlsel.errors import UserError
from rlsel.target import finetune as ft
from rlsel.target import model as target_model
from tests.conftest import learnable_split


class Interrupted(Exception):
  pass


def _setup(config):
  c = config
  c.finetune.max_steps = 12
  c.finetune.eval_every = 3
  c.finetune.patience = 10
  train, val = learnable_split(64, 32, 0), learnable_split(32, 32, 1, offset=500)
  module, params = target_model.build(c, 2, key=jax.random.key(0))
  return c, module, params, train, val


def test_resume_after_interruption_equals_uninterrupted(tmp_path, debug_config):
  c, module, params, train, val = _setup(debug_config)
  clean = ft.finetune(jax.random.key(7), c, module, params, train, val)

  ckpt = Checkpointer(tmp_path / "ck", fingerprint="cell-a")
  saves = []
  real_save = ckpt.save

  def save_then_die(step, state, meta):
    real_save(step, state, meta)
    saves.append(step)
    if len(saves) == 2:
      raise Interrupted  # as if the process were killed right after the second checkpoint

  ckpt.save = save_then_die
  with pytest.raises(Interrupted):
    ft.finetune(jax.random.key(7), c, module, params, train, val, checkpointer=ckpt)
  ckpt.close()
  assert saves == [3, 6]

  resumed = ft.finetune(jax.random.key(7), c, module, params, train, val,
                        checkpointer=Checkpointer(tmp_path / "ck", fingerprint="cell-a"))
  chex.assert_trees_all_equal(resumed.params, clean.params)
  assert resumed.history == [tuple(h) for h in clean.history]
  assert (resumed.steps, resumed.best_step, resumed.val_accuracy) == (clean.steps, clean.best_step, clean.val_accuracy)


def test_foreign_and_corrupt_checkpoints_are_refused(tmp_path, debug_config):
  c, module, params, train, val = _setup(debug_config)
  c.finetune.max_steps = 4
  ckpt = Checkpointer(tmp_path / "ck", fingerprint="cell-a")
  ckpt.save(3, {"x": jax.numpy.ones(3)}, {"step": 3})
  ckpt.close()
  with pytest.raises(UserError, match="different run"):
    ft.finetune(jax.random.key(7), c, module, params, train, val,
                checkpointer=Checkpointer(tmp_path / "ck", fingerprint="cell-b"))
  junk = tmp_path / "junk"
  (junk / "5").mkdir(parents=True)
  (junk / "5" / "garbage.bin").write_bytes(b"\x00\x01not orbax")
  with pytest.raises(UserError, match="delete it"):
    ft.finetune(jax.random.key(7), c, module, params, train, val, checkpointer=Checkpointer(junk, fingerprint="x"))
