"""PNG figures in `<workdir>/plots/`: accuracy against budget per task, where each selection sits in the pool, the
paired differences per task, and the agents' learning curves."""

import pathlib

import numpy as np

from rlsel.io import atomic_write_bytes


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path) -> pathlib.Path:
  """Writes the figure to `path` as a PNG (atomically), closes it, and returns the path."""
  import io
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  atomic_write_bytes(path, buf.getvalue())
  _pyplot().close(fig)
  return pathlib.Path(path)


def accuracy_vs_budget(workdir, rows) -> list:
  """`plots/accuracy_vs_budget_<task>.png`: mean ± std test accuracy over seeds per selector; full data as a line."""
  plt = _pyplot()
  out = []
  for task in sorted({r["task"] for r in rows}):
    rs = [r for r in rows if r["task"] == task]
    budgets = sorted({r["budget"] for r in rs if r["selector"] != "full"})
    if not budgets:
      continue
    fig, ax = plt.subplots(figsize=(6, 4))
    for sel in sorted({r["selector"] for r in rs if r["selector"] != "full"}):
      xs, ms, ss = [], [], []
      for b in budgets:
        acc = [r["test_accuracy"] for r in rs if r["selector"] == sel and r["budget"] == b]
        if acc:
          xs.append(b), ms.append(np.mean(acc)), ss.append(np.std(acc))
      ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=sel)
    full = [r["test_accuracy"] for r in rs if r["selector"] == "full"]
    if full:
      ax.axhline(np.mean(full), color="k", linestyle="--", label=f"full data ({np.mean(full):.3f})")
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{100 * b:g}%" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("budget (share of the pool)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{task}: test accuracy against budget (mean ± std over seeds)")
    ax.legend(fontsize=8)
    path = pathlib.Path(workdir) / "plots" / f"accuracy_vs_budget_{task}.png"
    out.append(_save(fig, path))
  return out


def _projection(embeddings: np.ndarray, max_fit: int = 5000, seed: int = 0) -> np.ndarray:
  """2-D PCA of the embeddings (fitted on a subsample, so it stays cheap for big pools)."""
  rng = np.random.default_rng(seed)
  fit = embeddings[rng.choice(embeddings.shape[0], min(max_fit, embeddings.shape[0]), replace=False)]
  mean = fit.mean(0)
  _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
  return (embeddings - mean) @ vt[:2].T


def selection_maps(workdir, task, pool, rows, max_points: int = 6000) -> list:
  """`plots/selection_<selector>-<task>-<seed>.png`: selected vs unselected pool examples in a 2-D PCA projection.

  Drawn only when the pool's embeddings were computed in this run (they are not for full/random-only runs).
  """
  if "embeddings" not in pool.train.__dict__:
    return []
  import json
  plt = _pyplot()
  xy = _projection(pool.train.embeddings)
  rng = np.random.default_rng(0)
  show = rng.choice(pool.size, min(max_points, pool.size), replace=False)
  out = []
  for r in rows:
    if r["selector"] == "full":
      continue
    name = f"{r['selector']}-{r['task']}-{r['seed']}"
    sel_file = pathlib.Path(workdir) / "selections" / f"{name}.json"
    path = pathlib.Path(workdir) / "plots" / f"selection_{name}.png"
    if not sel_file.exists() or path.exists():
      continue
    chosen = np.isin(pool.train.ids, np.asarray(json.loads(sel_file.read_text()), np.int64))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(xy[show, 0], xy[show, 1], s=2, c="lightgray", label="pool")
    ax.scatter(xy[chosen, 0], xy[chosen, 1], s=5, c=pool.train.labels[chosen], cmap="tab10",
               label=f"selected ({int(chosen.sum())}), coloured by label")
    ax.set_title(f"{name}: selected examples (PCA of MiniLM embeddings)")
    ax.legend(fontsize=7, loc="best")
    out.append(_save(fig, path))
  return out


def paired_forest(workdir, comparisons) -> list:
  """`plots/paired_<task>.png`: per selector (and budget), the mean paired difference in test accuracy to each
  reference (random, full) with its 95% interval; a cross marks a single seed, which has no interval."""
  plt = _pyplot()
  out = []
  for task in sorted({e["task"] for e in comparisons}):
    refs = [ref for ref in ("random", "full") if any(e["task"] == task and e["reference"] == ref for e in comparisons)]
    rows_most = max(sum(e["task"] == task and e["reference"] == ref for e in comparisons) for ref in refs)
    fig, axes = plt.subplots(1, len(refs), figsize=(6 * len(refs), 1.2 + 0.4 * rows_most), squeeze=False,
                             constrained_layout=True)
    for ax, ref in zip(axes[0], refs):
      es = [e for e in comparisons if e["task"] == task and e["reference"] == ref]
      for y, e in enumerate(es):
        x = 100 * e["mean_diff"]
        if e["ci_low"] is None:
          ax.plot([x], [y], "kx")
        else:
          lo, hi = 100 * e["ci_low"], 100 * e["ci_high"]
          colour = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
          ax.errorbar([x], [y], xerr=[[x - lo], [hi - x]], fmt="o", color=colour, capsize=3)
      ax.axvline(0.0, color="k", linewidth=0.8)
      ax.set_yticks(range(len(es)), [f"{e['selector']} @ {100 * e['budget']:g}% (n={e['n']})" for e in es],
                    fontsize=8)
      ax.invert_yaxis()
      ax.set_xlabel(f"test accuracy minus {ref}'s, points (95% paired interval)")
      ax.set_title(f"{task}: paired difference to {ref}", fontsize=9)
    path = pathlib.Path(workdir) / "plots" / f"paired_{task}.png"
    out.append(_save(fig, path))
  return out


def learning_curves(workdir, rows) -> list:
  """`plots/learning_<selector>_<task>_s<seed>.png` for every cell whose selector trained an agent (its `info` holds
  per-update curves): the sampled episodes' mean and best return and the greedy policy's return per update, and the
  policy entropy against a uniform policy's (ln of the number of clusters). The evidence that an agent learned."""
  plt = _pyplot()
  out = []
  for r in rows:
    curves = (r.get("info") or {}).get("curves") or {}
    if "mean_return" not in curves:
      continue
    ups = np.arange(1, len(curves["mean_return"]) + 1)
    has_ent = "entropy" in curves
    fig, axes = plt.subplots(1, 2 if has_ent else 1, figsize=(11 if has_ent else 6, 3.6), squeeze=False,
                             constrained_layout=True)
    ax = axes[0][0]
    ax.plot(ups, curves["mean_return"], label="sampled episodes, mean")
    ax.plot(ups, curves["max_return"], label="sampled episodes, best", alpha=0.7)
    if "greedy_return" in curves:
      g = np.asarray(curves["greedy_return"], np.float64)
      ok = np.isfinite(g)
      ax.plot(ups[ok], g[ok], "o-", label="greedy policy")
    ax.set_xlabel("update")
    ax.set_ylabel("episode return (reward-split score gain)")
    ax.legend(fontsize=8)
    ax.set_title(f"{r['selector']} on {r['task']}, seed {r['seed']}", fontsize=9)
    if has_ent:
      ax = axes[0][1]
      ax.plot(ups, curves["entropy"], label="policy entropy")
      clusters = (r.get("info") or {}).get("num_clusters")
      if clusters:
        ax.axhline(float(np.log(clusters)), color="k", linestyle="--", linewidth=0.8,
                   label=f"uniform over {clusters} clusters")
      ax.set_xlabel("update")
      ax.set_ylabel("nats")
      ax.legend(fontsize=8)
    path = pathlib.Path(workdir) / "plots" / f"learning_{r['selector']}_{r['task']}_s{r['seed']}.png"
    out.append(_save(fig, path))
  return out
