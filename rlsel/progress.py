"""Progress bars for long work (embedding, fine-tuning, gradient features), drawn by tqdm on stderr.

On a terminal: tqdm's live bar. Otherwise (a log file, CI): quiet, except one plain line every `LOG_INTERVAL_S`
seconds and at the end, so a background run's log still shows how far it is without tqdm's carriage returns.
"""

import sys

LOG_INTERVAL_S = 30.0  # seconds between progress lines when stderr is not a terminal
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({rate_fmt}, {remaining} left)"


class _Lines:
  """A file for tqdm off a terminal: each refresh becomes one line (tqdm starts refreshes with a carriage return)."""

  def __init__(self, stream):
    self.stream = stream

  def write(self, text: str) -> None:
    text = text.replace("\r", "").rstrip()
    if text:
      self.stream.write(text + "\n")

  def flush(self) -> None:
    self.stream.flush()


def bar(total: int, desc: str, unit: str = "ex"):
  """A tqdm bar over `total` units (call `.update(n)` and `.close()`)."""
  from tqdm.auto import tqdm
  if sys.stderr.isatty():
    return tqdm(total=int(total), desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
  return tqdm(total=int(total), desc=desc, unit=unit, file=_Lines(sys.stderr), mininterval=LOG_INTERVAL_S,
              maxinterval=LOG_INTERVAL_S, bar_format=LOG_FORMAT, leave=True)
