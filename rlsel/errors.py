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
