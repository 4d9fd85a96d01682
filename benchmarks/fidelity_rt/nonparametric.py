"""Nonparametric subset scores on the saved `rt` study (exploratory; not proxy designs, none adopted).

Does anything a linear head cannot see rank the saved subsets the way the target does? Each score reads only the
frozen MiniLM embeddings and labels of the pool and the validation split (never test): mean token length; coverage
(each validation row's highest cosine to a subset row, averaged); the 1-nearest-neighbour margin and accuracy (same
label's highest cosine minus the other labels'); k-NN accuracy and log-likelihood (add-one smoothed votes) at k = 10
and 50. Spearman against the target's mean test accuracy over the study's two keys, over all subsets and within
families. Usage, from the repository root (DIR holds the feature cache, DIR/features):
  python benchmarks/fidelity_rt/nonparametric.py configs/glue.py DIR [FIDELITY_DIR]
(FIDELITY_DIR defaults to benchmarks/fidelity_rt/fidelity; for `tweets`: configs/glue.py:tweets DIR
benchmarks/fidelity_tweets/fidelity.)
"""
import glob
import importlib.util
import json
import sys

import numpy as np

from rlsel import harness
from rlsel.stats import pearson, spearman, spearman_difference, spearman_interval, within_groups_spearman

NEIGHBOURS = (10, 50)


def unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pool_coverage(pos, emb, block: int = 4096) -> float:
  """Mean over every pool row of its highest cosine to a subset row (the facility-location objective on the pool)."""
  sub = emb[pos].T
  return float(np.mean(np.concatenate([(emb[i:i + block] @ sub).max(1) for i in range(0, len(emb), block)])))


def scores(pos, emb, labels, lengths, val_emb, val_labels, num_classes) -> dict:
  """The scores of the subset at pool positions `pos` (see the module docstring)."""
  sim = val_emb @ emb[pos].T                                  # [validation, subset]
  y = labels[pos]
  same = np.where(y[None] == val_labels[:, None], sim, -2.0).max(1)
  other = np.where(y[None] != val_labels[:, None], sim, -2.0).max(1)
  out = {"length": float(lengths[pos].mean()), "coverage": float(sim.max(1).mean()),
         "coverage_pool": pool_coverage(pos, emb), "coverage_same_label": float(same.mean()),
         "nn_margin": float((same - other).mean()), "nn1_acc": float((same > other).mean())}
  rows = np.arange(len(val_labels))
  for k in NEIGHBOURS:
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    votes = np.zeros((len(val_labels), num_classes))
    np.add.at(votes, (np.repeat(rows[:, None], k, 1), y[idx]), 1.0)
    p = (votes + 1.0) / (k + num_classes)
    out[f"knn{k}_acc"] = float((p.argmax(1) == val_labels).mean())
    out[f"knn{k}_ll"] = float(np.log(p[rows, val_labels]).mean())
  return out


def main(config_arg: str, workdir: str, fidelity_dir: str = "benchmarks/fidelity_rt/fidelity") -> None:
  config_path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  pool, _ = harness.build_pool(config, harness.load_task_for_run(config, workdir), workdir)
  where = {int(i): k for k, i in enumerate(pool.train.ids)}
  emb, val_emb = unit(pool.train.embeddings), unit(pool.validation.embeddings)
  lengths = pool.train.attention_mask.sum(1)
  rows = []
  for path in sorted(glob.glob(f"{fidelity_dir}/subset-*.json")):
    sub = json.load(open(path))
    stem = path.split("subset-")[1][:-len(".json")]
    acc = [json.load(open(p))["target_test_accuracy"]
           for p in sorted(glob.glob(f"{fidelity_dir}/target-{stem}-k*.json"))]
    if len(acc) < 2:
      continue
    pos = np.asarray([where[int(i)] for i in sub["ids"]])
    rows.append({"family": sub["family"], "k0": acc[0], "k1": acc[1], "mean": float(np.mean(acc)),
                 "head": sub["proxy_reward_score"],
                 **scores(pos, emb, pool.train.labels, lengths, val_emb, pool.validation.labels, pool.num_classes)})
  fam, target = [r["family"] for r in rows], [r["mean"] for r in rows]
  families = list(dict.fromkeys(fam))
  print(f"{len(rows)} subsets: target test-retest r {pearson([r['k0'] for r in rows], [r['k1'] for r in rows]):+.3f}")
  names = ("head", "length", "coverage", "coverage_pool", "coverage_same_label", "nn_margin", "nn1_acc") + tuple(
      f"knn{k}_{m}" for k in NEIGHBOURS for m in ("acc", "ll"))
  print("| score | Spearman vs target mean [95%] | minus head [95%, paired bootstrap] | within families | "
        + " | ".join(families) + " |")
  print("|---|---|---|---|" + "---|" * len(families))
  head = [r["head"] for r in rows]
  for name in names:
    v = [r[name] for r in rows]
    rho = spearman(v, target)
    lo, hi = spearman_interval(rho, len(target))
    d = spearman_difference(v, head, target)
    diff = "—" if name == "head" else f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
    per = [spearman([r[name] for r in rows if r["family"] == f], [r["mean"] for r in rows if r["family"] == f])
           for f in families]
    print(f"| {name} | {rho:+.2f} [{lo:+.2f}, {hi:+.2f}] | {diff} | {within_groups_spearman(v, target, fam):+.2f} | "
          + " | ".join(f"{x:+.2f}" for x in per) + " |")
  print("| family | target mean | " + " | ".join(names[2:5]) + " |")
  print("|---|---|" + "---|" * 3)
  for f in families:
    fr = [r for r in rows if r["family"] == f]
    print(f"| {f} | {np.mean([r['mean'] for r in fr]):.4f} | "
          + " | ".join(f"{np.mean([r[n] for r in fr]):.4f}" for n in names[2:5]) + " |")


if __name__ == "__main__":
  main(*sys.argv[1:4])
