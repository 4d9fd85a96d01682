"""Progress bars (tqdm): off a terminal, plain lines a log file can be read with (no carriage returns)."""

import io
import sys

from rlsel import progress


def test_bar_off_a_terminal_writes_plain_lines(monkeypatch):
  err = io.StringIO()  # not a TTY
  monkeypatch.setattr(sys, "stderr", err)
  bar = progress.bar(4, "demo", unit="steps")
  for _ in range(4):
    bar.update(1)
  bar.close()
  text = err.getvalue()
  assert "\r" not in text and text.endswith("\n")
  lines = text.splitlines()
  assert lines[-1].startswith("demo: 4/4 steps") and "left" in lines[-1]
  assert len(lines) <= 3  # quiet: the start, the end (and at most one refresh in between), not one per update
