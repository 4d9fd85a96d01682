"""The verifiable task: seeded generation, disjoint splits, answer extraction, exact checking, JSONL and GSM8K."""

import json

import numpy as np
import pytest

from rlsel.errors import UserError
from rlsel.rlvr import arithmetic


def test_generation_is_seeded_graded_and_correct():
  levels = arithmetic.parse_levels("1:1:+,2:2:+-*")
  a = arithmetic.generate(0, 200, levels)
  b = arithmetic.generate(0, 200, levels)
  assert a.prompts == b.prompts and a.answers == b.answers
  assert len(set(a.prompts)) == 200 and set(np.unique(a.levels)) == {0, 1}
  for p, ans, lv in zip(a.prompts, a.answers, a.levels):
    assert p.endswith("=")
    assert str(eval(p[:-1])) == ans  # noqa: S307
    assert sum(p.count(o) for o in "+*") + p[1:].count("-") == levels[lv].steps


def test_splits_are_disjoint():
  train, val, test = arithmetic.arithmetic_splits(0, arithmetic.parse_levels("1:1:+"), 60, 10, 20)
  assert len(train) == 60 and len(val) == 10 and len(test) == 20
  assert not (set(train.prompts) & set(test.prompts)) and not (set(val.prompts) & set(test.prompts))
  assert not set(train.prompts) & set(val.prompts)
  with pytest.raises(UserError):
    arithmetic.arithmetic_splits(0, arithmetic.parse_levels("1:1:+"), 90, 10, 20)  # only 100 problems exist


def test_bad_levels_raise_user_error():
  for spec in ("1:1", "x:1:+", "1:1:/", "0:1:+"):
    with pytest.raises(UserError):
      arithmetic.parse_levels(spec)


@pytest.mark.parametrize("completion,expected", [
    ("42", "42"), ("-7", "-7"), ("The answer is 1,234.", "1234"), ("3 + 4 = 7 #### 7", "7"),
    ("48 + 80 = 160 ... The answer is: 16", "16"), ("no number", None), ("5.0", "5"), ("x 12 then 13", "13")])
def test_extract_answer(completion, expected):
  assert arithmetic.extract_answer(completion) == expected


def test_check_is_exact():
  assert arithmetic.check("12", "12") and arithmetic.check("so #### 1,000", "1000")
  assert not arithmetic.check("123", "12") and not arithmetic.check("", "0") and not arithmetic.check("-12", "12")
  np.testing.assert_array_equal(arithmetic.rewards(["1", "2"], ["1", "3"]), [1.0, 0.0])


def test_jsonl(tmp_path):
  f = tmp_path / "p.jsonl"
  f.write_text('{"prompt": "2+3=", "answer": 5}\n\n{"prompt": "9-9=", "answer": "0"}\n')
  p = arithmetic.load_jsonl(str(f))
  assert p.prompts == ["2+3=", "9-9="] and p.answers == ["5", "0"]
  f.write_text('{"prompt": "2+3="}\n')
  with pytest.raises(UserError):
    arithmetic.load_jsonl(str(f))
  with pytest.raises(UserError):
    arithmetic.load_jsonl(str(tmp_path / "missing.jsonl"))


def test_gsm8k_local_files_and_no_network(tmp_path, monkeypatch):
  rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
          {"question": "Half of 1,000?", "answer": "1000 / 2 = 500\n#### 500"}]
  for split in ("train", "test"):
    (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  train, test = arithmetic.load_gsm8k(str(tmp_path))
  assert train.answers == ["7", "500"] and test.prompts[0].startswith("Tom")
  assert arithmetic.check("so she has #### 7", train.answers[0])

  import datasets

  def offline(*a, **k):
    raise ConnectionError("no network")
  monkeypatch.setattr(datasets, "load_dataset", offline)
  with pytest.raises(UserError, match="network"):
    arithmetic.load_gsm8k("openai/gsm8k")
