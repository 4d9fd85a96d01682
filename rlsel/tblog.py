"""TensorBoard scalars via tensorboardX (no TensorFlow): training curves written after a jitted run."""

import numpy as np


def write_curves(logdir: str, metrics: dict, prefix: str = "", step_offset: int = 0) -> None:
  """Writes each metric [U] (one value per update) as a scalar curve `prefix/name` under `logdir`."""
  from tensorboardX import SummaryWriter  # imported here: only runs that log pay for it
  with SummaryWriter(logdir) as w:
    for name, values in metrics.items():
      values = np.asarray(values, np.float64).reshape(-1)
      tag = f"{prefix}/{name}" if prefix else name
      for i, v in enumerate(values):
        if np.isfinite(v):
          w.add_scalar(tag, float(v), step_offset + i)


def write_scalars(logdir: str, scalars: dict, step: int = 0, prefix: str = "") -> None:
  """Writes single scalars (e.g. final scores) at one step."""
  from tensorboardX import SummaryWriter
  with SummaryWriter(logdir) as w:
    for name, v in scalars.items():
      w.add_scalar(f"{prefix}/{name}" if prefix else name, float(v), step)
