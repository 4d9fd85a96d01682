"""Result rows: `results.json` (a list of rows) and `results.md` (the rows plus means and spreads over seeds)."""

import json
import math
import pathlib

import numpy as np

from rlsel.io import atomic_write_json, atomic_write_text

REQUIRED = ("selector", "task", "seed", "budget", "n_selected", "test_accuracy", "test_macro_f1", "select_seconds",
            "finetune_seconds")
TABLE = (("selector", "selector", "{}"), ("task", "task", "{}"), ("seed", "seed", "{}"),
         ("examples", "n_selected", "{}"), ("test acc", "test_accuracy", "{:.4f}"),
         ("macro-F1", "test_macro_f1", "{:.4f}"), ("select s", "select_seconds", "{:.1f}"),
         ("finetune s", "finetune_seconds", "{:.1f}"))


def cell_key(row) -> tuple:
  """(selector, task, seed, budget); `full` ignores the budget, so its key always says 1.0."""
  budget = 1.0 if row["selector"] == "full" else float(row["budget"])
  return (row["selector"], row["task"], int(row["seed"]), budget)


# Config fields that only choose which cells run (task, selectors, seeds, budgets) or how they run (devices,
# logging, checkpoint cadence): cells that differ only in these can share one results.json.
RUN_ONLY_FIELDS = ("task", "tasks", "selectors", "seeds", "budget", "sweep", "mesh", "distributed", "rl.log_every",
                   "rl.checkpoint_every", "selection.progress")


def result_config(config) -> dict:
  """The config fields a cell's result depends on, flattened to {"finetune.max_steps": 200, ...} (JSON types)."""
  def flat(d, prefix=""):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from flat(v, f"{prefix}{k}.")
      else:
        yield f"{prefix}{k}", v
  keep = {k: v for k, v in flat(config.to_dict()) if not any(k == f or k.startswith(f + ".") for f in RUN_ONLY_FIELDS)}
  return json.loads(json.dumps(keep, sort_keys=True, default=repr))


def config_id(config) -> str:
  import hashlib
  return hashlib.sha1(json.dumps(result_config(config), sort_keys=True).encode()).hexdigest()[:12]


def check_same_config(workdir, rows, config) -> str:
  """The config id for new rows; a UserError if `rows`, or selections saved in `progress/` for a resume, were made
  with other settings (a table mixing them would mislead), naming the fields that differ. Fields added to rlsel
  after those rows were made, and left at their defaults, are no difference: the old id is returned, so upgrading
  rlsel does not strand a half-finished workdir. Saves `configs/<id>.json` so later runs can name them too."""
  from rlsel.errors import UserError
  cid, current = config_id(config), result_config(config)
  out = pathlib.Path(workdir)
  cfg_dir = out / "configs"
  saved = [json.loads(p.read_text()) for p in sorted((out / "progress").glob("*.json"))]
  records = [r for r in list(rows) + saved if isinstance(r, dict)]
  defaults, same_experiment = None, []
  for old in dict.fromkeys(r["config_id"] for r in records if r.get("config_id") not in (None, cid)):
    path = cfg_dir / f"{old}.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    keys = [k for k in sorted(set(before) | set(current)) if before.get(k, "?") != current.get(k, "?")]
    if before and keys and all(k not in before for k in keys):
      if defaults is None:
        from rlsel import configlib
        defaults = result_config(configlib.base_config())
      if all(k in defaults and defaults[k] == current[k] for k in keys):
        same_experiment.append(old)  # only fields added to rlsel since, left at their defaults
        continue
    diff = [f"{k}: {before.get(k, '?')!r} -> {current.get(k, '?')!r}" for k in keys] if before else \
        ["(its config file is missing)"]
    n = sum(r.get("config_id") == old for r in records)
    raise UserError(f"{workdir} holds {n} result(s) or saved selection(s) made with different settings "
                    f"({'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''}); rerun with those settings, or use "
                    "another --workdir")
  if len(same_experiment) == 1 and not any(r.get("config_id") == cid for r in records):
    return same_experiment[0]  # keep the workdir's id, so its table stays one experiment
  if not (cfg_dir / f"{cid}.json").exists():
    atomic_write_json(cfg_dir / f"{cid}.json", current)
  return cid


def load_rows(workdir) -> list:
  path = pathlib.Path(workdir) / "results.json"
  if not path.exists():
    return []
  rows = json.loads(path.read_text())
  if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in REQUIRED) for r in rows):
    from rlsel.errors import UserError
    raise UserError(f"{path} is not an rlsel results file; move it away or use another --workdir")
  return rows


def table(rows) -> str:
  """The per-cell table as Markdown."""
  head = "| " + " | ".join(h for h, _, _ in TABLE) + " |"
  sep = "|" + "|".join("---" for _ in TABLE) + "|"
  body = ["| " + " | ".join(fmt.format(r[k]) for _, k, fmt in TABLE) + " |" for r in rows]
  return "\n".join([head, sep] + body)


def _mean_std(values):
  v = np.asarray(values, float)
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def summary(rows) -> str:
  """Means ± sample standard deviations over seeds, per (selector, task, budget)."""
  groups = {}
  for r in rows:
    groups.setdefault((r["task"], cell_key(r)[3], r["selector"]), []).append(r)
  lines = ["| task | budget | selector | seeds | examples | test acc | macro-F1 | select s | finetune s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for (task, budget, sel), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
    acc, f1 = _mean_std([r["test_accuracy"] for r in rs]), _mean_std([r["test_macro_f1"] for r in rs])
    ss, fs = _mean_std([r["select_seconds"] for r in rs]), _mean_std([r["finetune_seconds"] for r in rs])
    n = int(round(np.mean([r["n_selected"] for r in rs])))
    lines.append(f"| {task} | {budget:g} | {sel} | {len(rs)} | {n} | {acc[0]:.4f} ± {acc[1]:.4f} | "
                 f"{f1[0]:.4f} ± {f1[1]:.4f} | {ss[0]:.1f} | {fs[0]:.1f} |")
  return "\n".join(lines)


def write(workdir, rows) -> None:
  """Writes results.json and results.md atomically."""
  workdir = pathlib.Path(workdir)
  clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
  atomic_write_json(workdir / "results.json", clean)
  md = ("# rlsel results\n\n## Per run\n\n" + table(rows) + "\n\n## Mean ± std over seeds\n\n" + summary(rows) + "\n")
  atomic_write_text(workdir / "results.md", md)


_MERGE_SAME = ("n_selected", "test_accuracy", "test_macro_f1", "val_accuracy", "config_id")  # equal for one cell


def merge(out, sources) -> list:
  """Merges the results of several workdirs into `out` (which may be one of them, and whose own rows are kept):
  rows, `configs/` and `selections/`, then rewrites `results.json`, `results.md` and the accuracy-against-budget plots.

  For cells split over processes (one per core or per machine, each with its own `--workdir`). Refused, with the
  reason, if the rows were made with different settings (`config_id`) or one cell has two different results; a cell
  present in several sources with the same result (a baseline copied into each) is kept once. Selection maps need
  the pool's embeddings and are not redrawn; rerunning `rlsel.main` on `out` with the merged config does that.
  """
  import shutil
  from rlsel.errors import UserError, require
  out = pathlib.Path(out)
  sources = [pathlib.Path(s) for s in sources]
  require(sources, "name at least one source workdir to merge")
  for s in sources:
    require((s / "results.json").exists(), f"{s}/results.json not found; each source must be an rlsel --workdir")
  found = [(s, r) for s in dict.fromkeys([out] + sources if (out / "results.json").exists() else sources)
           for r in load_rows(s)]
  ids = {}
  for s, r in found:
    if r.get("config_id"):
      ids.setdefault(r["config_id"], set()).add(str(s))
  if len(ids) > 1:
    where = "; ".join(f"{i} in {', '.join(sorted(w))}" for i, w in sorted(ids.items()))
    raise UserError(f"the sources were run with different settings (config ids: {where}); a merged table would mix "
                    "two experiments, so merge each config into its own workdir")
  rows, origin = [], {}
  for s, r in found:
    key = cell_key(r)
    if key in origin:
      first = rows[origin[key][1]]
      if any(first.get(k) != r.get(k) for k in _MERGE_SAME):
        raise UserError(f"cell {key} has different results in {origin[key][0]} and {s} (acc "
                        f"{first['test_accuracy']} vs {r['test_accuracy']}); remove it from one of them first")
      continue
    origin[key] = (s, len(rows))
    rows.append(r)
  for s in sources:
    if s.resolve() == out.resolve():
      continue
    for sub in ("configs", "selections"):
      if (s / sub).is_dir():
        shutil.copytree(s / sub, out / sub, dirs_exist_ok=True)
  write(out, rows)
  from rlsel import plots
  plots.accuracy_vs_budget(out, rows)
  return rows


def main(argv=None) -> int:
  """`python -m rlsel.results merge OUT SOURCE [SOURCE ...]`."""
  import argparse
  import sys
  from rlsel.errors import UserError
  parser = argparse.ArgumentParser(prog="python -m rlsel.results", description="Tools for rlsel result workdirs.")
  sub = parser.add_subparsers(dest="command", required=True)
  m = sub.add_parser("merge", help="merge the results of several workdirs (cells run in parallel) into OUT")
  m.add_argument("out", help="the workdir to write (created if missing; may be one of the sources)")
  m.add_argument("sources", nargs="+", help="workdirs holding results.json")
  args = parser.parse_args(argv)
  try:
    rows = merge(args.out, args.sources)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{len(rows)} rows from {len(args.sources)} workdir(s) -> {args.out}/results.json, {args.out}/results.md")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
