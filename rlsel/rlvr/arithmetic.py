"""Verifiable tasks: seeded arithmetic with graded difficulty, the user's JSONL of {prompt, answer}, and GSM8K.

A task is a `Problems` triple of prompts, exact answers (integer strings) and difficulty levels. Rewards come from
`check(completion, answer)`: the answer extracted from the completion must equal the reference exactly.
"""

import json
import pathlib
import re
from typing import NamedTuple

import numpy as np

from rlsel.errors import UserError

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_MARKED = re.compile(r"(?:####|answer is:?|answer:)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


class Problems(NamedTuple):
  prompts: list   # str
  answers: list   # str, canonical numbers ("-12")
  levels: np.ndarray  # int32 [n]; difficulty level (index into the level table; -1 when unknown)

  def __len__(self):
    return len(self.prompts)

  def take(self, idx) -> "Problems":
    idx = np.asarray(idx, np.int64)
    return Problems([self.prompts[i] for i in idx], [self.answers[i] for i in idx], self.levels[idx])


class Level(NamedTuple):
  """A difficulty grade: operand digits, number of operations (steps), allowed operators."""
  digits: int
  steps: int
  ops: str  # subset of "+-*"


def parse_levels(spec: str) -> list:
  """'1:1:+,2:1:+-,2:2:+-*' -> [Level(1, 1, '+'), ...] (digits:steps:operators, comma-separated)."""
  levels = []
  for part in str(spec).split(","):
    bits = part.strip().split(":")
    if len(bits) != 3 or not bits[0].isdigit() or not bits[1].isdigit() or not bits[2] or set(bits[2]) - set("+-*"):
      raise UserError(f"bad arithmetic level {part!r}; write levels as digits:steps:operators, e.g. '1:1:+,2:2:+-*'")
    if int(bits[0]) < 1 or int(bits[1]) < 1:
      raise UserError(f"arithmetic level {part!r} needs at least 1 digit and 1 step")
    levels.append(Level(int(bits[0]), int(bits[1]), bits[2]))
  return levels


def format_prompt(expression: str) -> str:
  """The small decoder's prompt: the expression and '='; the completion is the number then EOS."""
  return f"{expression}="


def _problem(rng: np.random.Generator, level: Level):
  hi = 10 ** level.digits
  nums = [int(rng.integers(0, hi))] + [int(rng.integers(0, hi)) for _ in range(level.steps)]
  ops = [level.ops[int(rng.integers(0, len(level.ops)))] for _ in range(level.steps)]
  expr = str(nums[0]) + "".join(f"{o}{n}" for o, n in zip(ops, nums[1:]))
  return expr, str(eval(expr))  # noqa: S307 -- the expression is generated here from digits and + - * only


def generate(seed: int, n: int, levels: list, exclude: set = frozenset()) -> Problems:
  """n distinct problems (levels drawn uniformly), none of whose prompts is in `exclude`; deterministic for a seed."""
  rng = np.random.default_rng(seed)
  prompts, answers, lv, seen = [], [], [], set(exclude)
  capacity = sum(min((10 ** l.digits) ** (l.steps + 1) * len(l.ops) ** l.steps, 10 ** 9) for l in levels)
  if n > capacity - len(exclude):
    raise UserError(f"asked for {n} distinct arithmetic problems but the levels allow about {capacity - len(exclude)};"
                    " ask for fewer or add harder levels")
  tries = 0
  while len(prompts) < n:
    tries += 1
    if tries > 100 * n + 10_000:
      raise UserError(f"could not draw {n} distinct arithmetic problems; ask for fewer or add harder levels")
    j = int(rng.integers(0, len(levels)))
    expr, ans = _problem(rng, levels[j])
    prompt = format_prompt(expr)
    if prompt in seen:
      continue
    seen.add(prompt)
    prompts.append(prompt)
    answers.append(ans)
    lv.append(j)
  return Problems(prompts, answers, np.asarray(lv, np.int32))


def arithmetic_splits(seed: int, levels: list, n_train: int, n_validation: int, n_test: int):
  """Disjoint train pool / validation / test problem sets (test first, so it does not depend on the pool size)."""
  test = generate(seed * 3 + 2, n_test, levels)
  val = generate(seed * 3 + 1, n_validation, levels, set(test.prompts))
  train = generate(seed * 3, n_train, levels, set(test.prompts) | set(val.prompts))
  return train, val, test


def canonical(number: str) -> str:
  """'1,234' -> '1234', '5.0' -> '5', '-0' -> '0'; other strings unchanged."""
  s = number.replace(",", "").strip()
  try:
    x = float(s)
  except ValueError:
    return s
  return str(int(x)) if x == int(x) else repr(x)


def extract_answer(completion: str):
  """The final answer in a completion: after '####' / 'answer is' if present, else the last number; None if none."""
  marked = _MARKED.findall(completion)
  if marked:
    return canonical(marked[-1])
  nums = _NUMBER.findall(completion)
  return canonical(nums[-1]) if nums else None


def check(completion: str, answer: str) -> bool:
  """Exact match of the extracted answer with the reference."""
  got = extract_answer(completion)
  return got is not None and got == canonical(str(answer))


def rewards(completions: list, answers: list) -> np.ndarray:
  return np.asarray([float(check(c, a)) for c, a in zip(completions, answers)], np.float32)


def load_jsonl(path: str) -> Problems:
  """The user's JSONL: one {"prompt": ..., "answer": ...} object per line."""
  p = pathlib.Path(path)
  if not p.exists():
    raise UserError(f"JSONL file {path} not found; pass a file with one {{\"prompt\", \"answer\"}} object per line")
  prompts, answers = [], []
  for i, line in enumerate(p.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path} line {i} is not valid JSON ({e.msg}); write one JSON object per line") from None
    if not isinstance(row, dict) or "prompt" not in row or "answer" not in row:
      raise UserError(f"{path} line {i} lacks 'prompt' or 'answer'; each line needs both fields")
    prompts.append(str(row["prompt"]))
    answers.append(canonical(str(row["answer"])))
  if not prompts:
    raise UserError(f"{path} holds no problems; add lines like {{\"prompt\": \"2+3=\", \"answer\": \"5\"}}")
  return Problems(prompts, answers, np.full(len(prompts), -1, np.int32))


def gsm8k_answer(solution: str) -> str:
  """The final number of a GSM8K solution ('... #### 72')."""
  if "####" not in solution:
    raise UserError("a GSM8K answer lacks its '#### N' final line; use the openai/gsm8k 'main' schema")
  return canonical(solution.split("####")[-1])


def load_gsm8k(path: str = "openai/gsm8k"):
  """(train, test) Problems from GSM8K: the hub id, or a local folder/files with question/answer columns."""
  import datasets
  local = pathlib.Path(path)
  try:
    if local.is_dir():
      files = {s: sorted(str(f) for f in local.glob(f"{s}*") if f.suffix in (".jsonl", ".json", ".parquet"))
               for s in ("train", "test")}
      if not files["train"] or not files["test"]:
        raise UserError(f"{path} needs train*.jsonl/.parquet and test*.jsonl/.parquet files with question/answer")
      kind = "parquet" if files["train"][0].endswith(".parquet") else "json"
      ds = datasets.load_dataset(kind, data_files=files)
    else:
      ds = datasets.load_dataset(path, "main")
  except UserError:
    raise
  except Exception as e:  # no network, unknown id, ...
    raise UserError(f"could not load GSM8K from {path!r} ({type(e).__name__}); it needs a network for the hub, "
                    "or pass a local folder with train/test JSONL files of question/answer") from None
  out = []
  for split in ("train", "test"):
    d = ds[split]
    if "question" not in d.column_names or "answer" not in d.column_names:
      raise UserError(f"GSM8K split {split} lacks question/answer columns; use the openai/gsm8k 'main' schema")
    out.append(Problems(list(d["question"]), [gsm8k_answer(a) for a in d["answer"]],
                        np.full(len(d), -1, np.int32)))
  return tuple(out)
