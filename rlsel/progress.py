"""A minimal progress line on stderr (rate and time left), quiet when stderr is not a terminal except every ~10%."""

import sys
import time


class Progress:
  """Counts work done out of `total` and prints `desc: done/total (rate/s, eta)`."""

  def __init__(self, total: int, desc: str, unit: str = "ex"):
    self.total, self.desc, self.unit = max(1, int(total)), desc, unit
    self.done, self.t0, self._last = 0, time.time(), 0.0
    self._tty = sys.stderr.isatty()
    self._next_pct = 0.1

  def update(self, n: int = 1) -> None:
    self.done += n
    now = time.time()
    frac = self.done / self.total
    if (self._tty and now - self._last > 0.5) or frac >= self._next_pct or self.done >= self.total:
      self._last = now
      while self._next_pct <= frac:
        self._next_pct += 0.1
      rate = self.done / max(now - self.t0, 1e-9)
      eta = (self.total - self.done) / max(rate, 1e-9)
      end = "\r" if self._tty and self.done < self.total else "\n"
      sys.stderr.write(f"{self.desc}: {self.done}/{self.total} {self.unit} ({rate:.1f}/s, {eta:.0f}s left){end}")
      sys.stderr.flush()

  def close(self) -> None:
    if self._tty and self.done < self.total:
      sys.stderr.write("\n")
