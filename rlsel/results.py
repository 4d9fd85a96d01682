"""Result rows: `results.json` (a list of rows) and `results.md` (the rows plus means and spreads over seeds)."""

import json
import math
import pathlib

import numpy as np

from rlsel import features
from rlsel.configlib import flat_items
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
                   "rl.checkpoint_every", "selection.progress",
                   *(f"features.{f}" for f in features.SPEED_ONLY_FIELDS))
# Sections every cell reads (the split, the tokens, the target and its fine-tune); a selector adds its own
# (`Selector.config_sections`).
COMMON_SECTIONS = ("data", "features", "target", "finetune")
_MISSING = "?"


def _within(key: str, fields) -> bool:
  return any(key == f or key.startswith(f + ".") for f in fields)


def result_config(config, selector: str = None) -> dict:
  """The config fields a result depends on, flattened to {"finetune.max_steps": 200, ...} (JSON types).

  With `selector`, a cell's identity: the sections every cell reads plus that selector's own `config_sections`, so a
  change to, say, the proxy leaves `full` and `random` cells valid. Without, every field but the run plan."""
  if selector is None:
    keep = {k: v for k, v in flat_items(config.to_dict()) if not _within(k, RUN_ONLY_FIELDS)}
  else:
    from rlsel.selectors import base as selbase
    cls = selbase.selector_class(selector)
    fields = COMMON_SECTIONS + tuple(cls.config_sections)
    keep = {k: v for k, v in flat_items(config.to_dict()) if _within(k, fields) and not _within(k, RUN_ONLY_FIELDS)}
    if cls.version > 1:  # version 1 adds no field, so cells made before versions existed keep their identity
      keep[f"selector_version.{selector}"] = cls.version
  return json.loads(json.dumps(keep, sort_keys=True, default=repr))


def config_id(config, selector: str = None) -> str:
  """12 hex digits naming `result_config(config, selector)`."""
  import hashlib
  return hashlib.sha1(json.dumps(result_config(config, selector), sort_keys=True).encode()).hexdigest()[:12]


def changed_fields(before: dict, current: dict, defaults: dict) -> list:
  """Fields of `current` whose value in `before` differs. A field missing from `before` (added to rlsel since) is
  no difference while `current` holds its default; fields of `before` outside `current` (another selector's
  section in a whole-experiment config from before per-cell ids, or a field since removed) are not compared."""
  return [k for k in sorted(current) if before.get(k, _MISSING) != current[k]
          and not (k not in before and defaults.get(k, _MISSING) == current[k])]


def _record_selector(record: dict, path: pathlib.Path = None):
  """The selector of a row, or of a saved selection in progress/ (`<selector>-<task>-<seed>-b<budget>.json`)."""
  if "selector" in record:
    return record["selector"]
  return path.stem.split("-")[0] if path is not None else None


def check_same_config(workdir, rows, config, selectors=None) -> dict:
  """{selector: config id for its new rows}; a UserError if a row of `rows`, or a selection saved in `progress/`
  for a resume, was made under settings that differ in a field its cell reads (a table mixing them would mislead),
  naming the fields. Fields a cell does not read (the proxy, for `random`) may change freely; fields added to rlsel
  since, left at their defaults, are no difference, so upgrading rlsel does not strand a half-finished workdir.
  Saves `configs/<id>.json` per selector so later runs can name the differences."""
  from rlsel import configlib
  from rlsel.errors import UserError
  out = pathlib.Path(workdir)
  cfg_dir = out / "configs"
  saved = [(json.loads(p.read_text()), p) for p in sorted((out / "progress").glob("*.json"))]
  records = [(r, None) for r in rows if isinstance(r, dict)] + [(r, p) for r, p in saved if isinstance(r, dict)]
  wanted = list(dict.fromkeys(list(selectors or ()) + [_record_selector(r, p) for r, p in records]))
  from rlsel.selectors import base as selbase
  wanted = [s for s in wanted if s in selbase.names()]
  current = {s: result_config(config, s) for s in wanted}
  ids = {s: config_id(config, s) for s in wanted}
  defaults, checked = None, set()
  for r, p in records:
    sel, old = _record_selector(r, p), r.get("config_id")
    if old is None or sel not in ids or old == ids[sel] or (sel, old) in checked:
      continue
    path = cfg_dir / f"{old}.json"
    before = json.loads(path.read_text()) if path.exists() else None
    if before is not None:
      if defaults is None:
        defaults = result_config(configlib.base_config())
      keys = changed_fields(before, current[sel], defaults)
      if not keys:
        checked.add((sel, old))
        continue
      diff = [f"{k}: {before.get(k, _MISSING)!r} -> {current[sel].get(k, _MISSING)!r}" for k in keys]
    else:
      diff = ["(its config file is missing)"]
    n = sum(rr.get("config_id") == old and _record_selector(rr, pp) == sel for rr, pp in records)
    raise UserError(f"{workdir} holds {n} {sel} result(s) or saved selection(s) made with different settings "
                    f"({'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''}); rerun with those settings, or use "
                    "another --workdir")
  for s in wanted:
    if not (cfg_dir / f"{ids[s]}.json").exists():
      atomic_write_json(cfg_dir / f"{ids[s]}.json", current[s])
  return ids


def load_rows(workdir) -> list:
  """The rows of `workdir/results.json` ([] if there is none yet); `workdir` may also name a rows file itself."""
  path = pathlib.Path(workdir)
  if not path.is_file():
    path = path / "results.json"
  if not path.exists():
    return []
  return _checked_rows(json.loads(path.read_text()), path)


def _checked_rows(rows, path) -> list:
  if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in REQUIRED) for r in rows):
    from rlsel.errors import UserError
    raise UserError(f"{path} is not an rlsel results file; move it away or use another --workdir")
  return rows


def table(rows) -> str:
  """The per-cell table as Markdown."""
  head = "| " + " | ".join(h for h, _, _ in TABLE) + " |"
  sep = "|" + "|".join("---" for _ in TABLE) + "|"
  body = ["| " + " | ".join("—" if r[k] is None else fmt.format(r[k]) for _, k, fmt in TABLE) + " |" for r in rows]
  return "\n".join([head, sep] + body)


def evaluated(rows) -> list:
  """The rows with test metrics (a select-only row, `finetune.enabled=False`, has none)."""
  return [r for r in rows if r.get("test_accuracy") is not None]


def _mean_std(values):
  v = np.asarray(values, float)
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def _pm(mean_std) -> str:
  """"0.7482 ± 0.0100", or "0.7482 (n = 1)" where one seed gives no spread."""
  m, s = mean_std
  return f"{m:.4f} (n = 1)" if s is None else f"{m:.4f} ± {s:.4f}"


REFERENCES = ("random", "full")  # every selector is compared with these, seed by seed


def paired(rows, metric: str = "test_accuracy", references=REFERENCES, selectors=None) -> list:
  """One entry per (task, budget, selector, reference): `metric` of the selector minus the reference's over the
  seeds both have (the reference at the same budget; `full` at any), with a 95% paired-t interval, wins / ties /
  losses and a verdict (rlsel.stats.paired_difference). Seeds are paired: a seed fixes the split, the head
  initialisation, the dropout keys and the data-order stream, so only the subset differs. `selectors` (default all)
  limits the rows compared; a seed where either side lacks `metric` is left out."""
  from rlsel.stats import paired_difference
  by_cell = {cell_key(r): r for r in evaluated(rows)}
  out = []
  groups = sorted({(r["task"], cell_key(r)[3], r["selector"]) for r in evaluated(rows)
                   if selectors is None or r["selector"] in selectors})
  for task, budget, sel in groups:
    for ref in references:
      if sel == ref or (ref == "random" and sel == "full"):
        continue
      pairs = []
      for seed in sorted({k[2] for k in by_cell if k[:2] == (sel, task) and k[3] == budget}):
        ref_row = by_cell.get((ref, task, seed, 1.0 if ref == "full" else budget))
        a = by_cell[(sel, task, seed, budget)].get(metric)
        if ref_row is not None and a is not None and ref_row.get(metric) is not None:
          pairs.append((a, ref_row[metric], seed))
      if not pairs:
        continue
      a, b, seeds = zip(*pairs)
      out.append({"task": task, "budget": budget, "selector": sel, "reference": ref, "metric": metric,
                  "seeds": list(seeds), "mean": float(np.mean(a)), "reference_mean": float(np.mean(b)),
                  **paired_difference(a, b)})
  return out


def paired_table(entries) -> str:
  """The paired comparisons as Markdown (differences in accuracy points)."""
  lines = ["| task | budget | selector | vs | seeds | mean | vs mean | mean diff | 95% interval | W/T/L | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for e in entries:
    ci = ("n/a" if e["ci_low"] is None else f"[{100 * e['ci_low']:+.2f}, {100 * e['ci_high']:+.2f}]")
    lines.append(f"| {e['task']} | {e['budget']:g} | {e['selector']} | {e['reference']} | {e['n']} | "
                 f"{e['mean']:.4f} | {e['reference_mean']:.4f} | {100 * e['mean_diff']:+.2f} | {ci} | "
                 f"{e['wins']}/{e['ties']}/{e['losses']} | {e['verdict']} |")
  return "\n".join(lines)


# Optional columns of the summary, shown where some row carries the field (noisy pools, tweets' crowd confidence):
# (header, field, format of one value).
EXTRA_SUMMARY = (("pool noise", "pool_noise_rate", "{:.3f}"), ("selected noise", "selected_noise_rate", "{:.3f}"),
                 ("selected confidence", "selected_mean_confidence", "{:.3f}"))


def _span(values, fmt: str) -> str:
  """"0.182 (0.150-0.216)" over the seeds, one value bare, "—" where no row has it."""
  v = [x for x in values if x is not None and math.isfinite(x)]
  if not v:
    return "—"
  lo, hi, mean = min(v), max(v), float(np.mean(v))
  return fmt.format(mean) if lo == hi else f"{fmt.format(mean)} ({fmt.format(lo)}-{fmt.format(hi)})"


def summary(rows) -> str:
  """Means ± sample standard deviations over seeds, per (selector, task, budget); noise rates and crowd confidence
  (mean and range over seeds) where the rows carry them."""
  groups = {}
  for r in rows:
    groups.setdefault((r["task"], cell_key(r)[3], r["selector"]), []).append(r)
  extra = [(h, k, f) for h, k, f in EXTRA_SUMMARY if any(r.get(k) is not None for r in rows)]
  heads = ["task", "budget", "selector", "seeds", "examples", "test acc", "macro-F1", "select s", "finetune s"]
  heads += [h for h, _, _ in extra]
  lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
  for (task, budget, sel), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
    ev = evaluated(rs)
    acc = _pm(_mean_std([r["test_accuracy"] for r in ev])) if ev else "—"
    f1 = _pm(_mean_std([r["test_macro_f1"] for r in ev])) if ev else "—"
    ss, fs = _mean_std([r["select_seconds"] for r in rs]), _mean_std([r["finetune_seconds"] for r in rs])
    n = int(round(np.mean([r["n_selected"] for r in rs])))
    cells = [task, f"{budget:g}", sel, str(len(rs)), str(n), acc, f1, f"{ss[0]:.1f}", f"{fs[0]:.1f}"]
    cells += [_span([r.get(k) for r in rs], f) for _, k, f in extra]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write(workdir, rows) -> None:
  """Writes results.json (the rows), summary.json (the paired comparisons) and results.md atomically.

  The comparisons go to their own file so results.json stays the plain list of rows other tools read."""
  workdir = pathlib.Path(workdir)
  clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
  atomic_write_json(workdir / "results.json", clean)
  comparisons = paired(rows)
  from rlsel.stats import CONFIDENCE
  atomic_write_json(workdir / "summary.json", {"metric": "test_accuracy", "confidence": CONFIDENCE,
                                               "method": "paired t over seeds", "comparisons": comparisons})
  md = ("# rlsel results\n\n## Per run\n\n" + table(rows) + "\n\n## Mean ± std over seeds\n\n" + summary(rows) +
        "\n\n## Paired differences in test accuracy (points; 95% paired-t interval over seeds)\n\n" +
        "Each seed fixes the split, the head initialisation, the dropout keys and the data order, so a difference "
        "is the subset's alone. W/T/L: seeds won, tied, lost against the reference.\n\n" +
        paired_table(comparisons) + "\n")
  atomic_write_text(workdir / "results.md", md)


def _check_mergeable(found) -> None:
  """Per selector, every config id among the rows must name the same settings for the fields that selector's cells
  read (looked up in the sources' `configs/`); otherwise a merged table would mix two experiments."""
  from rlsel import configlib
  from rlsel.errors import UserError
  by_sel = {}
  for s, r in found:
    if r.get("config_id"):
      by_sel.setdefault(r["selector"], {}).setdefault(r["config_id"], set()).add(s)
  defaults = None
  for sel, ids in sorted(by_sel.items()):
    if len(ids) < 2:
      continue
    where = "; ".join(f"{i} in {', '.join(sorted(map(str, w)))}" for i, w in sorted(ids.items()))
    configs = {}
    for i, sources in ids.items():
      path = next((p / "configs" / f"{i}.json" for p in sorted(sources) if (p / "configs" / f"{i}.json").exists()),
                  None)
      if path is None:
        raise UserError(f"the sources were run with different settings for {sel} (config ids: {where}; "
                        f"configs/{i}.json is missing); merge each config into its own workdir")
      configs[i] = json.loads(path.read_text())
    if defaults is None:
      defaults = result_config(configlib.base_config())
    keys = set(result_config(configlib.base_config(), sel))
    (first, a), *rest = sorted(configs.items())
    for other, b in rest:
      diff = changed_fields(b, {k: v for k, v in a.items() if k in keys}, defaults)
      if diff:
        raise UserError(f"the sources were run with different settings for {sel} (config ids: {where}; "
                        f"{', '.join(diff[:5])} differ); a merged table would mix two experiments, so merge each "
                        "config into its own workdir")


_MERGE_SAME = ("n_selected", "test_accuracy", "test_macro_f1", "val_accuracy")  # equal for one cell


def _union(found, remedy: str) -> list:
  """The rows of (source, row) pairs, one per cell: a cell found in several sources with the same result is kept once;
  with different results it raises UserError, ending with `remedy`."""
  from rlsel.errors import UserError
  rows, origin = [], {}
  for s, r in found:
    key = cell_key(r)
    if key in origin:
      first = rows[origin[key][1]]
      if any(first.get(k) != r.get(k) for k in _MERGE_SAME):
        raise UserError(f"cell {key} has different results in {origin[key][0]} and {s} (acc "
                        f"{first['test_accuracy']} vs {r['test_accuracy']}); {remedy}")
      continue
    origin[key] = (s, len(rows))
    rows.append(r)
  return rows


def merge(out, sources) -> list:
  """Merges the results of several workdirs into `out` (which may be one of them, and whose own rows are kept):
  rows, `configs/` and `selections/`, then rewrites `results.json`, `results.md` and the accuracy-against-budget plots.

  For cells split over processes (one per core or per machine, each with its own `--workdir`). Refused, with the
  reason, if the rows were made with different settings (`config_id`) or one cell has two different results; a cell
  present in several sources with the same result (a baseline copied into each) is kept once. Selection maps need
  the pool's embeddings and are not redrawn; rerunning `rlsel.main` on `out` with the merged config does that.
  """
  import shutil
  from rlsel.errors import require
  out = pathlib.Path(out)
  sources = [pathlib.Path(s) for s in sources]
  require(sources, "name at least one source workdir to merge")
  for s in sources:
    require((s / "results.json").exists(), f"{s}/results.json not found; each source must be an rlsel --workdir")
  found = [(s, r) for s in dict.fromkeys([out] + sources if (out / "results.json").exists() else sources)
           for r in load_rows(s)]
  _check_mergeable(found)
  rows = _union(found, "remove it from one of them first")
  for s in sources:
    if s.resolve() == out.resolve():
      continue
    for sub in ("configs", "selections"):
      if (s / sub).is_dir():
        shutil.copytree(s / sub, out / sub, dirs_exist_ok=True)
  write(out, rows)
  from rlsel import plots
  plots.accuracy_vs_budget(out, evaluated(rows))
  plots.paired_forest(out, paired(rows))
  return rows


ACCURACY_METRICS = ("test_accuracy", "test_macro_f1", "val_accuracy")  # higher is better


def _source_rows(source: str) -> list:
  """The rows of a workdir, a rows file, or an archive (`{"note": ..., "rows": [...]}`, as in `benchmarks/`);
  `PATH@TAG` renames each row's selector to `selector@TAG` (to compare a selector with an archived run of itself,
  e.g. `benchmarks/x/results_old.json@old`)."""
  from rlsel.errors import require
  path, at, tag = source.rpartition("@")
  if not at or not tag or "/" in tag:
    path, tag = source, None
  p = pathlib.Path(path)
  require(p.is_file() or (p / "results.json").is_file(), f"{path}: neither a results file nor a workdir holding "
          "results.json")
  data = json.loads(p.read_text()) if p.is_file() else None
  if isinstance(data, dict) and "rows" in data:  # an archive
    rows = _checked_rows(data["rows"], p)
  else:
    rows = load_rows(p)
  return [dict(r, selector=f"{r['selector']}@{tag}") for r in rows] if tag else rows


def compare(sources, reference: str, selectors=None, metric: str = "test_accuracy") -> list:
  """Paired comparisons of `selectors` (default: every other selector) against any `reference` selector over the
  rows of `sources` (workdirs or rows files, `PATH@TAG` to tag one): `paired` with that one reference. A cell in two
  sources must have the same result there. Bad names, a metric no row has, or a conflict raise UserError."""
  from rlsel.errors import UserError, require
  require(sources, "name at least one workdir or results file")
  rows = _union([(source, r) for source in sources for r in _source_rows(source)], "tag one source with @TAG to "
                "compare them")
  present = sorted({r["selector"] for r in rows})
  for name in (reference, *(selectors or ())):
    require(name in present, f"no rows of selector {name!r}; the sources hold {', '.join(present) or 'no rows'}")
  numeric = sorted({k for r in evaluated(rows) for k, v in r.items() if isinstance(v, (int, float))
                    and not isinstance(v, bool)})
  require(metric in numeric, f"metric {metric!r} is not a number in any evaluated row; choose from "
          f"{', '.join(numeric)}")
  entries = paired(rows, metric, references=(reference,), selectors=selectors)
  if metric not in ACCURACY_METRICS:  # "better" would presume that higher is better
    entries = [dict(e, verdict={"better": "higher", "worse": "lower"}.get(e["verdict"], e["verdict"]))
               for e in entries]
  if not entries:
    raise UserError(f"no seed has both a compared selector and {reference!r} at the same task and budget")
  return entries


def main(argv=None) -> int:
  """`python -m rlsel.results merge OUT SOURCE [SOURCE ...]` or
  `python -m rlsel.results compare SOURCE [SOURCE ...] --reference SEL [--selectors A,B] [--metric M]`."""
  import argparse
  import sys
  from rlsel.errors import UserError
  parser = argparse.ArgumentParser(prog="python -m rlsel.results", description="Tools for rlsel result workdirs.")
  sub = parser.add_subparsers(dest="command", required=True)
  m = sub.add_parser("merge", help="merge the results of several workdirs (cells run in parallel) into OUT")
  m.add_argument("out", help="the workdir to write (created if missing; may be one of the sources)")
  m.add_argument("sources", nargs="+", help="workdirs holding results.json")
  c = sub.add_parser("compare", help="paired differences of selectors against any reference selector")
  c.add_argument("sources", nargs="+", help="workdirs or results .json files; PATH@TAG renames that source's "
                 "selectors to SELECTOR@TAG")
  c.add_argument("--reference", required=True, help="the selector every other one is compared with, seed by seed")
  c.add_argument("--selectors", default=None, help="comma-separated selectors to compare (default: all others)")
  c.add_argument("--metric", default="test_accuracy", help="a numeric row field (default test_accuracy)")
  args = parser.parse_args(argv)
  try:
    if args.command == "compare":
      names = [n for n in (args.selectors or "").split(",") if n] or None
      entries = compare(args.sources, args.reference, names, args.metric)
      print(f"{args.metric}: selector minus {args.reference}, seed by seed; differences x 100; 95% paired-t "
            "interval over seeds")
      print(paired_table(entries))
      return 0
    rows = merge(args.out, args.sources)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{len(rows)} rows from {len(args.sources)} workdir(s) -> {args.out}/results.json, {args.out}/results.md")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
