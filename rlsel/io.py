"""Atomic file writes: a temporary file in the same folder, then `os.replace`, so a crash never leaves half a file."""

import json
import os
import pathlib
import tempfile

import numpy as np


def _atomic(path, write, mode="w"):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path, text: str) -> None:
  _atomic(path, lambda f: f.write(text))


def atomic_write_json(path, obj) -> None:
  _atomic(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=False) + "\n"))


def atomic_save_npy(path, array: np.ndarray) -> None:
  _atomic(path, lambda f: np.save(f, array), mode="wb")


def atomic_write_bytes(path, data: bytes) -> None:
  _atomic(path, lambda f: f.write(data), mode="wb")
