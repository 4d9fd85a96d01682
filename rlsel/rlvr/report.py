"""RLVR outputs in the workdir: `results.json` rows, `results.md` (table, mean ± std over seeds, the steps and
seconds each method needs to reach uniform GRPO's final accuracy, and paired differences to uniform with 95%
intervals), and test-accuracy curves in `plots/`.

Time to target: for each seed, the target is the uniform ("uniform" or "grpo") run's final test accuracy at that seed;
a run reaches it at the first evaluation after step 0 (step, training seconds) whose accuracy is at least the target, so the steps
are multiples of `rlvr.grpo.eval_every`. Seconds count rollouts, updates and selection work, not evaluation.

Paired differences (method minus uniform, over the seeds both ran; `rlsel.stats.paired_difference`): final test
accuracy; mean test accuracy over the evaluations after step 0 (the area under the learning curve, which rewards
getting there sooner and has an interval even when a run never reaches the target); and steps to uniform's final
accuracy, where a run that never reaches it counts as one evaluation interval past its last step (censored, so that
difference is a lower bound on how much slower it is; the censored runs are counted).
"""

import pathlib

import numpy as np

from rlsel import stats
from rlsel.io import atomic_write_bytes, atomic_write_json, atomic_write_text

BASELINES = ("uniform", "grpo")
NOT_REACHED = "not reached"


def cell_key(row) -> tuple:
  return (row["selector"], row["task"], int(row["seed"]))


def _baseline(rows, task, seed):
  for r in rows:
    if r["selector"] in BASELINES and r["task"] == task and int(r["seed"]) == int(seed):
      return r
  return None


def add_time_to_target(rows) -> list:
  """Rows with `uniform_final_accuracy`, `steps_to_uniform_final` and `seconds_to_uniform_final` (None when the run
  never reached it, or no uniform run exists for the seed)."""
  out = []
  for r in rows:
    base = _baseline(rows, r["task"], r["seed"])
    target = None if base is None else float(base["test_accuracy"])
    hit = None
    if target is not None:
      # evaluations after training began: a start already above the target does not count as reaching it
      hit = next((h for h in r["history"] if h["step"] > 0 and h["test_accuracy"] >= target), None)
    out.append({**r, "uniform_final_accuracy": target, "reached_uniform_final": hit is not None,
                "steps_to_uniform_final": None if hit is None else int(hit["step"]),
                "seconds_to_uniform_final": None if hit is None else float(hit["seconds"])})
  return out


def _methods(rows) -> list:
  seen = []
  for r in rows:
    if r["selector"] not in seen:
      seen.append(r["selector"])
  return seen


def _ms(values, fmt="{:.3f}"):
  v = np.asarray(values, float)
  sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
  return f"{fmt.format(float(v.mean()))} ± {fmt.format(sd)}"


def _reach(rs, field, fmt):
  hit = [r[field] for r in rs if r.get(field) is not None]
  if not any(r.get("uniform_final_accuracy") is not None for r in rs):
    return "n/a"
  if not hit:
    return NOT_REACHED
  return f"{fmt.format(float(np.mean(hit)))} ({len(hit)}/{len(rs)} seeds)"


def table(rows) -> str:
  """One line per (method, seed)."""
  lines = ["| method | task | seed | prompts used | initial acc | final acc | select s | train s | steps to uniform "
           "final | seconds to uniform final |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    st = NOT_REACHED if r.get("steps_to_uniform_final") is None else r["steps_to_uniform_final"]
    se = NOT_REACHED if r.get("seconds_to_uniform_final") is None else f"{r['seconds_to_uniform_final']:.1f}"
    if r.get("uniform_final_accuracy") is None:
      st = se = "n/a"
    lines.append(f"| {r['selector']} | {r['task']} | {r['seed']} | {r['n_selected']} | "
                 f"{r['initial_test_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['select_seconds']:.1f} | "
                 f"{r['finetune_seconds']:.1f} | {st} | {se} |")
  return "\n".join(lines)


def summary(rows) -> str:
  """Mean ± std over seeds per (task, method), and mean steps/seconds to uniform's final accuracy (over the seeds
  that reached it)."""
  lines = ["| task | method | seeds | final test acc | select s | train s | steps to uniform final | "
           "seconds to uniform final |", "|---|---|---|---|---|---|---|---|"]
  for task in sorted({r["task"] for r in rows}):
    for m in _methods([r for r in rows if r["task"] == task]):
      rs = [r for r in rows if r["task"] == task and r["selector"] == m]
      lines.append(f"| {task} | {m} | {len(rs)} | {_ms([r['test_accuracy'] for r in rs])} | "
                   f"{_ms([r['select_seconds'] for r in rs], '{:.1f}')} | "
                   f"{_ms([r['finetune_seconds'] for r in rs], '{:.1f}')} | "
                   f"{_reach(rs, 'steps_to_uniform_final', '{:.0f}')} | "
                   f"{_reach(rs, 'seconds_to_uniform_final', '{:.1f}')} |")
  return "\n".join(lines)


def curve_mean(row) -> float:
  """Mean test accuracy over the evaluations after step 0 (the learning curve's area per step of evaluation)."""
  return float(np.mean([h["test_accuracy"] for h in row["history"] if h["step"] > 0]))


def censored_steps(row) -> tuple:
  """(steps to uniform's final accuracy, censored?): one evaluation interval past the last step if never reached."""
  if row.get("steps_to_uniform_final") is not None:
    return float(row["steps_to_uniform_final"]), False
  steps = [h["step"] for h in row["history"]]
  gap = steps[-1] - steps[-2] if len(steps) > 1 else steps[-1]
  return float(steps[-1] + gap), True


def paired_rows(rows) -> list:
  """Per (task, method other than uniform): paired differences to uniform over the seeds both have (see the module
  docstring), as dicts with `stats.paired_difference`'s fields per figure."""
  out = []
  for task in sorted({r["task"] for r in rows}):
    by = {(r["selector"], int(r["seed"])): r for r in rows if r["task"] == task}
    for m in _methods([r for r in rows if r["task"] == task]):
      if m in BASELINES:
        continue
      pairs = [(by[(m, s)], base) for (b, s), base in sorted(by.items(), key=lambda kv: kv[0][1])
               if b in BASELINES and (m, s) in by]
      if not pairs:
        continue
      steps = [(censored_steps(a), censored_steps(b)) for a, b in pairs]
      out.append({"task": task, "method": m, "seeds": [int(a["seed"]) for a, _ in pairs],
                  "final_accuracy": stats.paired_difference([a["test_accuracy"] for a, _ in pairs],
                                                            [b["test_accuracy"] for _, b in pairs]),
                  "curve_mean_accuracy": stats.paired_difference([curve_mean(a) for a, _ in pairs],
                                                                 [curve_mean(b) for _, b in pairs]),
                  "steps_to_uniform_final": stats.paired_difference([a[0] for a, _ in steps], [b[0] for _, b in steps]),
                  "censored": sum(a[1] for a, _ in steps)})
  return out


def _diff(d, scale: float, fmt: str) -> str:
  if d["ci_low"] is None:
    return f"{fmt.format(scale * d['mean_diff'])} (n = 1)"
  return (f"{fmt.format(scale * d['mean_diff'])} [{fmt.format(scale * d['ci_low'])}, "
          f"{fmt.format(scale * d['ci_high'])}] {d['verdict']}")


def paired_summary(rows) -> str:
  """The paired differences to uniform as a markdown table ("" without uniform runs to pair with)."""
  lines = [f"| {p['task']} | {p['method']} | {len(p['seeds'])} | "
           f"{_diff(p['final_accuracy'], 100, '{:+.1f}')} | {_diff(p['curve_mean_accuracy'], 100, '{:+.1f}')} | "
           f"{_diff(p['steps_to_uniform_final'], 1, '{:+.0f}')} | {p['censored']} |" for p in paired_rows(rows)]
  if not lines:
    return ""
  return ("\n\n## Paired differences to uniform (95% paired-t intervals over seeds)\n\nAccuracy in points. 'curve "
          "mean': mean test accuracy over the evaluations after step 0. 'steps': steps to uniform's final accuracy, "
          "minus uniform's own; a run that never reaches it counts as one evaluation interval past its end "
          "('censored', a lower bound on its delay).\n\n| task | method | seeds | final acc | curve mean acc | steps to "
          "uniform final | censored |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines))


ESTIMATOR_FIELDS = ("pearson", "spearman", "mae", "mae_reference_mean", "split_half_pearson", "noise_ceiling_pearson")


def estimator_summary(rows) -> str:
  """DOTS' difficulty estimator against measured success rates of held-out prompts (mean over its re-estimates per
  run, then mean ± std over seeds); empty when no run measured it."""
  lines = []
  for task in sorted({r["task"] for r in rows}):
    for m in _methods([r for r in rows if r["task"] == task]):
      rs = [r for r in rows if r["task"] == task and r["selector"] == m and r.get("estimator_pearson") is not None]
      if rs:
        cells = [_ms([r[f"estimator_{k}"] for r in rs if r.get(f"estimator_{k}") is not None])
                 if any(r.get(f"estimator_{k}") is not None for r in rs) else "n/a" for k in ESTIMATOR_FIELDS]
        lines.append(f"| {task} | {m} | {len(rs)} | " + " | ".join(cells) + " |")
  if not lines:
    return ""
  return ("\n\n## DOTS difficulty estimator on held-out prompts\n\np_hat against the success rate measured with 2 x G "
          "fresh rollouts of prompts outside the reference set, at every re-estimate. 'MAE const' predicts every "
          "prompt at the reference mean; 'ceiling' is the correlation the true success probabilities would reach "
          "with the noisy measured rate.\n\n| task | method | seeds | Pearson | Spearman | MAE | MAE const | "
          "split-half r | ceiling |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines))


def markdown(rows) -> str:
  return ("# RLVR results\n\nGreedy exact-match test accuracy after GRPO with each prompt-selection method, from the "
          "same warmed-up start per seed. Macro-F1 does not apply to this generation task (null in results.json). "
          "'train s' counts rollouts and updates (and DOTS' estimator); 'select s' the selection work (warm-up GRPO, "
          "rollouts and gradients for LearnAlign/CROPI). 'to uniform final': the first evaluation at which the run's "
          "test accuracy reaches uniform GRPO's final accuracy at the same seed (seconds include selection); the "
          "summary averages over the seeds that reached it.\n\n## Mean ± std over seeds\n\n" + summary(rows) +
          paired_summary(rows) + estimator_summary(rows) + "\n\n## Per run\n\n" + table(rows) + "\n")


def _curves(rows, task, method, xkey):
  """Mean over seeds of (x, accuracy) at each evaluation (runs of a method share their evaluation steps)."""
  hs = [r["history"] for r in rows if r["task"] == task and r["selector"] == method]
  n = min(len(h) for h in hs)
  x = np.mean([[e[xkey] for e in h[:n]] for h in hs], axis=0)
  y = np.mean([[e["test_accuracy"] for e in h[:n]] for h in hs], axis=0)
  return x, y


def plots(workdir, rows) -> list:
  """`plots/rlvr_accuracy_vs_{steps,seconds}_<task>.png`: mean test accuracy over seeds, one line per method."""
  import io

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  out = []
  for task in sorted({r["task"] for r in rows}):
    rs = [r for r in rows if r["task"] == task]
    for xkey, label in (("step", "GRPO step"), ("seconds", "training seconds (rollouts, updates, selection)")):
      fig, ax = plt.subplots(figsize=(6, 4))
      for m in _methods(rs):
        x, y = _curves(rs, task, m, xkey)
        ax.plot(x, y, marker="o", markersize=3, label=m)
      targets = [r["uniform_final_accuracy"] for r in rs if r.get("uniform_final_accuracy") is not None]
      if targets:
        ax.axhline(float(np.mean(targets)), color="k", linestyle=":", linewidth=1, label="uniform final")
      ax.set_xlabel(label)
      ax.set_ylabel("greedy test accuracy")
      ax.set_title(f"{task}: mean over {len({r['seed'] for r in rs})} seed(s)")
      ax.legend(fontsize=8)
      buf = io.BytesIO()
      fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
      plt.close(fig)
      path = pathlib.Path(workdir) / "plots" / f"rlvr_accuracy_vs_{'steps' if xkey == 'step' else xkey}_{task}.png"
      atomic_write_bytes(path, buf.getvalue())
      out.append(path)
  return out


def write(workdir, rows, results_file: str = "results.json", with_plots: bool = True) -> list:
  """Recomputes the time-to-target fields and writes results.json, results.md (and the plots) atomically."""
  rows = add_time_to_target(rows)
  out = pathlib.Path(workdir)
  atomic_write_json(out / results_file, rows)
  atomic_write_text(out / "results.md", markdown(rows))
  if with_plots and rows:
    plots(out, rows)
  return rows
