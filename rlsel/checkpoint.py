"""Orbax checkpoints of long work (target fine-tuning, agent training), so a killed run resumes where it stopped.

A checkpoint holds a pytree of arrays (`state`) and a small JSON record (`meta`) that carries a fingerprint of the work
it belongs to; restoring into different work, or from a corrupt or foreign folder, is refused with a clear error.
"""

import hashlib
import pathlib
import shutil

import jax
import numpy as np

from rlsel.errors import UserError


def fingerprint(*parts) -> str:
  """A short hash of configs and arrays, tying a checkpoint to the exact work it belongs to."""
  h = hashlib.sha1()
  for p in parts:
    h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else
             (p.to_json() if hasattr(p, "to_json") else repr(p)).encode())
  return h.hexdigest()[:16]


def to_saveable(tree) -> dict:
  """A pytree as {"0": leaf, ...} of plain arrays (typed PRNG keys as their key data): orbax-friendly whatever the
  tree's node types (tuples, dataclasses, None)."""
  def plain(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      return np.asarray(jax.random.key_data(x))
    return np.asarray(x)
  return {str(i): plain(x) for i, x in enumerate(jax.tree.leaves(tree))}


def from_saveable(saved: dict, template):
  """Inverse of `to_saveable`, with `template` (a tree of the same structure) giving node types and key types."""
  leaves, treedef = jax.tree.flatten(template)
  out = []
  for i, t in enumerate(leaves):
    x = saved[str(i)]
    if jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key):
      x = jax.random.wrap_key_data(np.asarray(x), impl=jax.random.key_impl(t))
    out.append(x)
  return jax.tree.unflatten(treedef, out)


class Checkpointer:
  """Keeps the latest `max_to_keep` checkpoints of one piece of work under `directory`."""

  def __init__(self, directory, fingerprint: str, max_to_keep: int = 1):
    import orbax.checkpoint as ocp
    self._ocp = ocp
    self.directory = pathlib.Path(directory).absolute()
    self.fingerprint = fingerprint
    self._manager = None
    self._max_to_keep = max_to_keep

  @property
  def manager(self):
    if self._manager is None:
      self.directory.mkdir(parents=True, exist_ok=True)
      self._manager = self._ocp.CheckpointManager(
          self.directory, options=self._ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True))
    return self._manager

  def _fail(self, why: str):
    raise UserError(f"checkpoint folder {self.directory} {why}; delete it (or use another --workdir) to start this "
                    "work afresh")

  def check_readable(self) -> None:
    """Raises `UserError` unless the folder is empty or its latest checkpoint carries rlsel's metadata."""
    if not self.directory.exists() or not any(self.directory.iterdir()):
      return
    meta = self._latest_meta()[1]
    if not isinstance(meta, dict) or "fingerprint" not in meta:
      self._fail("was not written by rlsel")

  def _latest_meta(self):
    try:
      step = self.manager.latest_step()
    except Exception:  # noqa: BLE001 (orbax raises many kinds on a damaged folder)
      self._fail("is unreadable")
    if step is None:
      self._fail("holds no complete checkpoint")
    ocp = self._ocp
    try:
      return step, self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception:  # noqa: BLE001
      self._fail("is corrupt or was not written by rlsel")

  def restore(self, template):
    """(state, meta) of the latest checkpoint, or None if there is none. `template` gives the state's structure."""
    if not self.directory.exists() or not any(self.directory.iterdir()):
      return None
    step, meta = self._latest_meta()
    ocp = self._ocp
    if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint:
      self._fail("belongs to a different run (its fingerprint differs from this config's)")
    abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), template)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception:  # noqa: BLE001
      self._fail("is corrupt (its arrays do not match this model)")
    return restored.state, meta

  def save(self, step: int, state, meta: dict) -> None:
    ocp = self._ocp
    meta = dict(meta, fingerprint=self.fingerprint)
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                      force=True)
    self.manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def remove(self) -> None:
    """Deletes the folder once its work is finished and recorded elsewhere."""
    self.close()
    shutil.rmtree(self.directory, ignore_errors=True)
