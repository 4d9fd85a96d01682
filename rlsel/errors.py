"""The one exception type for bad input.

Anything a user can fix (a config value, a missing file or package, a malformed data set) raises `UserError` with a
message saying what is wrong and how to fix it. `rlsel.main` prints that message as a single line on stderr and exits
non-zero without a traceback; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input that the user can fix; the message names the problem and the fix, on one line."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


def require(condition: bool, message: str) -> None:
  """Raises `UserError(message)` unless `condition` holds."""
  if not condition:
    raise UserError(message)


def fail(program: str, message: str):
  """For command-line tools: the message as one line on stderr, prefixed by the program, then exit status 2."""
  import sys
  sys.stderr.write(f"{program}: error: {' '.join(str(message).split())}\n")
  sys.exit(2)


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def require_int(value, name: str, low: int = None, high: int = None) -> None:
  """`name` must be an integer in [low, high] (either bound optional); the message names the field and the range."""
  lo = "" if low is None else f">= {low}"
  hi = "" if high is None else f"<= {high}"
  want = " and ".join(p for p in (lo, hi) if p)
  require(_is_int(value) and (low is None or value >= low) and (high is None or value <= high),
          f"{name}={value!r} must be an integer{' ' + want if want else ''}, e.g. --config.{name}="
          f"{low if low is not None else 1}")


def require_number(value, name: str, low: float = None, high: float = None, low_open: bool = False,
                   high_open: bool = False) -> None:
  """`name` must be a real number within the bounds given ((low, ...) when `low_open`, [low, ...] otherwise)."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
  right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
  where = f" in {left or '(-inf'}, {right or 'inf)'}" if (left or right) else ""
  require(ok, f"{name}={value!r} must be a number{where}")


def require_choice(value, name: str, choices) -> None:
  """`name` must be one of `choices`."""
  require(value in tuple(choices), f"{name}={value!r} is unknown; choose one of {', '.join(map(str, choices))}")
