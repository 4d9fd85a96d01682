"""What kind of examples each selector picked: label counts, and how typical the picks are.

  python -m rlsel.bench.selection_profile --config=configs/benchmark.py --workdir=DIR --task=rt

For every selection saved in DIR/selections/ for the task, it reports the label counts. It then trains a linear probe
on the validation split's frozen embeddings (the `entropy` selector's probe) and gives two figures per selection: the
share of picks whose label the probe agrees with, and the probe's mean probability of the given label. Low values
mean the picks are atypical, ambiguous or mislabelled. Two coverage figures follow: the pool's mean cosine distance
to its nearest pick (lower: the picks cover the pool better), and how many clusters of a k-means of the pool
(`kmeans.num_clusters`, fixed key) hold a pick. The whole pool comes first as the baseline, and each selection's test
accuracy (from DIR/results.json) sits beside it. Writes DIR/profile/<task>.json. The last line is
`pool_probe_agreement=<x>`.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

def define_flags() -> None:
  """Defines the command line's flags: called only when this module runs as a program, so that importing it for
  its functions (tests import several benchmarks into one process) defines none."""
  global _CONFIG, _WORKDIR, _TASK
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/benchmark.py", "The config DIR was run with.",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "A main-command workdir with selections/ and features/.")
  _TASK = flags.DEFINE_string("task", "rt", "Task whose selections are profiled.")


def parse_selection_name(stem: str):
  """(selector, task, seed, budget or None) from `<selector>-<task>-<seed>[-b<budget>]` (harness.selection_name)."""
  parts = stem.split("-")
  if len(parts) not in (3, 4) or not parts[2].isdigit() or (len(parts) == 4 and not parts[3].startswith("b")):
    return None
  return parts[0], parts[1], int(parts[2]), float(parts[3][1:]) if len(parts) == 4 else None


def profile(labels, p_label, positions) -> dict:
  """Label counts, probe agreement (p(label) > 0.5) and mean p(label) over the rows `positions`."""
  import numpy as np
  labels, p_label, positions = np.asarray(labels), np.asarray(p_label, np.float64), np.asarray(positions)
  return {"n": int(positions.size), "labels": np.bincount(labels[positions], minlength=int(labels.max()) + 1).tolist(),
          "probe_agreement": float(np.mean(p_label[positions] > 0.5)),
          "mean_p_label": float(np.mean(p_label[positions]))}


COVERAGE_BLOCK = 2048  # pool rows per block of the nearest-pick distances (bounds memory at block x picks)


def coverage(unit, assign, positions) -> dict:
  """Coverage of the rows `positions` of a pool with unit-norm embeddings `unit` [N, D] and cluster ids `assign`
  [N]: the pool's mean cosine distance to its nearest pick, and the clusters holding a pick."""
  import numpy as np
  unit, positions = np.asarray(unit, np.float32), np.asarray(positions)
  picks = unit[positions]
  nearest = np.concatenate([1.0 - (unit[i:i + COVERAGE_BLOCK] @ picks.T).max(1)
                            for i in range(0, unit.shape[0], COVERAGE_BLOCK)])
  return {"coverage_distance": float(np.maximum(nearest, 0.0).mean()),
          "clusters_touched": int(np.unique(np.asarray(assign)[positions]).size)}


def run(config, workdir: str, task_name: str) -> dict:
  import json

  import jax
  import jax.numpy as jnp
  import numpy as np

  from rlsel import harness, results
  from rlsel.errors import require
  from rlsel.io import atomic_write_json
  from rlsel.selectors.heuristics import fit_probe

  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.task = task_name
  task = harness.load_task_for_run(config, workdir)
  pool, _ = harness.build_pool(config, task, workdir)
  sel_dir = pathlib.Path(workdir) / "selections"
  files = sorted(p for p in sel_dir.glob("*.json") if (parse_selection_name(p.stem) or (None, None))[1] == task_name)
  require(bool(files), f"no selections for task {task_name!r} in {sel_dir}; run the main command there first")
  s = config.selection
  params, mean, std = fit_probe(jnp.asarray(pool.validation.embeddings), jnp.asarray(pool.validation.labels),
                                num_classes=pool.num_classes, steps=int(s.probe_steps),
                                lr=float(s.probe_learning_rate), l2=float(s.probe_l2))
  x = (jnp.asarray(pool.train.embeddings) - mean) / std
  probs = np.asarray(jax.nn.softmax(x @ params["w"] + params["b"], axis=-1))
  labels = pool.train.labels
  p_label = probs[np.arange(labels.shape[0]), labels]
  from rlsel import kmeans
  emb = np.asarray(pool.train.embeddings, np.float32)
  unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  k = min(int(config.kmeans.num_clusters), unit.shape[0])
  _, assign = kmeans.kmeans(jax.random.PRNGKey(0), jnp.asarray(unit), k, int(config.kmeans.iters),
                            int(config.kmeans.batch_size))
  assign = np.asarray(assign)
  where = {int(i): k for k, i in enumerate(pool.train.ids)}
  acc = {results.cell_key(r): r["test_accuracy"] for r in results.load_rows(workdir) if r["task"] == task_name}
  everything = np.arange(labels.shape[0])
  out = {"task": task_name, "num_clusters": k, "selections": [],
         "pool": dict(profile(labels, p_label, everything), coverage_distance=0.0,
                      clusters_touched=int(np.unique(assign).size))}
  for f in files:
    selector, _, seed, budget = parse_selection_name(f.stem)
    budget = 1.0 if selector == "full" else (budget if budget is not None else float(config.budget))
    pos = np.asarray([where[int(i)] for i in json.loads(f.read_text())])
    out["selections"].append({"name": f.stem, "selector": selector, "seed": seed, "budget": budget,
                              "test_accuracy": acc.get((selector, task_name, seed, budget)),
                              **profile(labels, p_label, pos), **coverage(unit, assign, pos)})
  atomic_write_json(pathlib.Path(workdir) / "profile" / f"{task_name}.json", out)
  return out


def main(argv):
  del argv
  from rlsel.errors import UserError, fail
  if not _WORKDIR.value:
    fail("selection_profile", "--workdir is required: a main-command workdir with selections/")
  try:
    out = run(_CONFIG.value, _WORKDIR.value, _TASK.value)
  except UserError as e:
    fail("selection_profile", str(e))
  pool = out["pool"]
  print(f"\n{out['task']}: linear probe on validation embeddings; pool agreement {pool['probe_agreement']:.3f}\n")
  print(f"coverage: the pool's mean cosine distance to its nearest pick; clusters (of {out['num_clusters']}) with a "
        "pick\n")
  print("| selection | examples | labels | probe agrees | vs pool | mean p(label) | distance to nearest pick "
        "| clusters | test acc |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in [{"name": "(pool)", "test_accuracy": None, **pool}] + out["selections"]:
    acc = "" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
    print(f"| {r['name']} | {r['n']} | {r['labels']} | {r['probe_agreement']:.3f} | "
          f"{r['probe_agreement'] / pool['probe_agreement']:.2f}x | {r['mean_p_label']:.3f} | "
          f"{r['coverage_distance']:.4f} | {r['clusters_touched']} | {acc} |")
  print(f"pool_probe_agreement={pool['probe_agreement']:.4f}")
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
