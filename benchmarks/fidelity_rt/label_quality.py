"""The label-quality designs (`confidence`, `unflagged`; rlsel/bench/proxy_designs.py) on the saved `rt` study.

The saved subsets predate config fields added since (session 12), so `proxy_fidelity --finetune=False` refuses them
as "other settings"; this reads the saved subsets and fine-tunes directly and scores them with the two designs
(`proxy_designs.prepare`, proxy_fidelity's score key). Usage, from the repository root (DIR holds a copy of
fidelity/ and the feature cache):
  python benchmarks/fidelity_rt/label_quality.py configs/glue.py DIR
"""
import glob
import importlib.util
import json
import sys

import jax
import numpy as np

from rlsel import harness
from rlsel.bench import proxy_designs
from rlsel.stats import pearson, spearman, spearman_interval, within_groups_pearson, within_groups_spearman


def main(config_path: str, workdir: str) -> None:
  spec = importlib.util.spec_from_file_location("config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  pool, _ = harness.build_pool(config, harness.load_task_for_run(config, workdir), workdir)
  where = {int(i): k for k, i in enumerate(pool.train.ids)}
  # The designs score positions of every pool.train row with proxy_fidelity's score key for seed 0; they read no
  # environment, reward split or budget.
  every = np.arange(len(pool.train.ids))
  ctx = proxy_designs.Context(config, pool, None, None, every, None, 0, 0, None, jax.random.key(10_000))
  designs = {name: proxy_designs.prepare(name, ctx) for name in ("confidence", "unflagged")}
  print(f"pool: {every.shape[0]} rows, {designs['unflagged'].info['flagged_share_of_pool']:.3f} flagged")
  rows = []
  for path in sorted(glob.glob(f"{workdir}/fidelity/subset-*.json")):
    sub = json.load(open(path))
    stem = path.split("subset-")[1][:-len(".json")]
    acc = [json.load(open(p))["target_test_accuracy"]
           for p in sorted(glob.glob(f"{workdir}/fidelity/target-{stem}-k*.json"))]
    if len(acc) < 2:
      continue
    pos = np.asarray([where[int(i)] for i in sub["ids"]])
    rows.append({"family": sub["family"], "k0": acc[0], "k1": acc[1], "mean": float(np.mean(acc)),
                 **{name: d.score(pos) for name, d in designs.items()},
                 "head": sub["proxy_reward_score"]})
  fam, tm = [r["family"] for r in rows], [r["mean"] for r in rows]
  print(f"{len(rows)} subsets: test-retest r {pearson([r['k0'] for r in rows], [r['k1'] for r in rows]):+.3f}, "
        f"within families {within_groups_pearson([r['k0'] for r in rows], [r['k1'] for r in rows], fam):+.3f}")
  print("| family | n | test-retest r | confidence | unflagged | Spearman confidence | unflagged | head |")
  print("|---|---|---|---|---|---|---|---|")
  for f in dict.fromkeys(fam):
    fr = [r for r in rows if r["family"] == f]
    t = [r["mean"] for r in fr]
    rho = [spearman([r[d] for r in fr], t) for d in ("confidence", "unflagged", "head")]
    print(f"| {f} | {len(fr)} | {pearson([r['k0'] for r in fr], [r['k1'] for r in fr]):+.3f} | "
          f"{np.mean([r['confidence'] for r in fr]):.4f} | {np.mean([r['unflagged'] for r in fr]):.4f} | "
          + " | ".join("n/a" if v is None else f"{v:+.3f}" for v in rho) + " |")
  print("| design | Spearman vs target mean [95%] | within families [95%] |")
  print("|---|---|---|")
  for d in ("confidence", "unflagged", "head"):
    v = [r[d] for r in rows]
    rho, w = spearman(v, tm), within_groups_spearman(v, tm, fam)
    (lo, hi), (wlo, whi) = spearman_interval(rho, len(tm)), spearman_interval(w, len(tm) - len(set(fam)) + 1)
    print(f"| {d} | {rho:+.3f} [{lo:+.2f}, {hi:+.2f}] | {w:+.3f} [{wlo:+.2f}, {whi:+.2f}] |")


if __name__ == "__main__":
  main(*sys.argv[1:3])
