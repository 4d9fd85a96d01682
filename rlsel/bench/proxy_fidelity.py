"""How well the cheap proxy predicts the target: Spearman over random subsets, and the reward-overfitting gap.

  python -m rlsel.bench.proxy_fidelity --config=configs/glue.py --workdir=DIR [--subsets=20] [--seed=0]

DIR is a main-command workdir (its embedding cache and results are reused; new files go to DIR/fidelity/).
1. The RL selectors' reward split, clusters and proxy are rebuilt for run seed `--seed` with the keys `rl_ppo`
   uses in the main command.
2. For `--subsets` stratified random subsets of the budget, drawn from the selectable rows: the proxy's reward-split
   score (the RL reward, e.g. negative log-loss) and accuracy, and the target's test accuracy after the main
   command's fine-tune. Prints Spearman's rho between the proxy's score and the target's accuracy.
3. For every subset chosen at the budget in DIR/results.json (rl_*, climb, ...): the proxy's accuracy on the
   reward split and on the test split next to the target's test accuracy, so overfitting the reward shows as a gap.
Every fine-tune's result is saved as it finishes, so an interrupted run continues. Last line:
`spearman_proxy_vs_target=<rho>`.
"""

import functools
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rlsel.stats import spearman  # noqa: E402  (numpy only)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/glue.py", "Main-command config (task, budget, target).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A main-command workdir for the same config.")
_SUBSETS = flags.DEFINE_integer("subsets", 20, "Random budget-sized subsets to fine-tune the target on.")
_SEED = flags.DEFINE_integer("seed", 0, "Run seed whose reward split and proxy are used.")


def _fmt(value, spec: str = "+.3f") -> str:
  """A correlation for printing; None (undefined: a constant side) prints as n/a."""
  return "n/a" if value is None else format(value, spec)


def _proxy_report(key, spec, data, positions, test_x, test_y) -> dict:
  """Proxy fine-tuned on `positions` of the selectable rows (the RL reward's recipe): score and accuracies."""
  import jax.numpy as jnp
  score, reward_acc, test_acc = _proxy_jit()(key, spec, data, jnp.asarray(positions, jnp.int32), test_x, test_y)
  return {"proxy_reward_score": float(score), "proxy_reward_accuracy": float(reward_acc),
          "proxy_test_accuracy": float(test_acc)}


@functools.lru_cache(maxsize=1)
def _proxy_jit():
  """The jitted proxy report (built on first use: jax is imported lazily, after absl parsed the flags)."""
  import jax
  import jax.numpy as jnp

  from rlsel import proxy as proxy_lib

  @functools.partial(jax.jit, static_argnums=1)
  def report(key, spec, data, pos, test_x, test_y):
    params = proxy_lib.finetune(key, spec, data, proxy_lib.draw_from(pos))
    acc = lambda x, y: jnp.mean(jnp.argmax(proxy_lib.logits_fn(spec, params, x), -1) == y)
    return proxy_lib.score(spec, params, data.rx, data.ry), acc(data.rx, data.ry), acc(test_x, test_y)

  return report


def _target_accuracy(config, pool, test, ids, seed: int, name: str) -> dict:
  """The main command's fine-tune and test evaluation of the target on `ids` (same keys as a cell of that seed)."""
  import jax

  from rlsel.target import finetune as ft
  from rlsel.target import model as target_model
  root = jax.random.key(seed)
  subset = pool.train.take(pool.train.positions_of(ids))
  module, params = target_model.build(config, pool.num_classes, key=jax.random.fold_in(root, 1))
  result = ft.finetune(jax.random.fold_in(root, 2), config, module, params, subset, pool.validation,
                       log_prefix=f"{name} finetune")
  probs = ft.predict_proba(module, result.params, test, config.finetune.eval_batch_size)
  return {"target_test_accuracy": ft.metrics(test.labels, probs, pool.num_classes)["accuracy"],
          "finetune_seconds": result.seconds}


def run(config, workdir: str, subsets: int, seed: int) -> dict:
  import jax
  import numpy as np

  from rlsel import harness, results
  from rlsel.data import load_task
  from rlsel.io import atomic_write_json
  from rlsel.selectors import base as selbase
  from rlsel.selectors.basic import stratified_sample
  from rlsel.selectors.rl import _STD_EPS, build_env
  from rlsel.errors import require

  require(int(config.proxy.pca_dim) == 0, "proxy_fidelity scores the proxy on test embeddings and needs "
          "--config.proxy.pca_dim=0")
  require(subsets >= 3, f"--subsets={subsets}: a rank correlation needs at least 3 subsets (20 or more is sensible)")
  out_dir = pathlib.Path(workdir) / "fidelity"
  out_dir.mkdir(parents=True, exist_ok=True)
  task = load_task(config)
  pool, test = harness.build_pool(config, task, workdir)
  budget = selbase.budget_size(float(config.budget), pool.size)
  emb = np.asarray(pool.train.embeddings, np.float32)
  mu, sd = emb.mean(0), emb.std(0) + _STD_EPS
  if config.proxy.kind == "transformer":  # the transformer proxy reads tokens
    test_x = jax.numpy.asarray(test.input_ids)
  else:
    test_x = jax.numpy.asarray((np.asarray(test.embeddings, np.float32) - mu) / sd / np.sqrt(emb.shape[1]))
  test_y = jax.numpy.asarray(test.labels)

  def env_for(run_seed):
    k_env = jax.random.split(jax.random.fold_in(jax.random.key(run_seed), 0), 4)[0]  # as RLSelector.select
    params, selectable, _ = build_env(k_env, config, emb, pool.train.labels, pool.num_classes, budget,
                                      tokens=pool.train.input_ids)
    return params, selectable

  score_key = jax.random.key(10_000 + seed)  # one proxy key for every subset: differences come from the subsets
  params, selectable = env_for(seed)
  print(f"{task.name}: pool {pool.size}, budget {budget}, selectable {selectable.shape[0]}, reward split "
        f"{params.proxy.rx.shape[0]}; {subsets} random subsets", flush=True)
  rows = []
  for i in range(subsets):
    path = out_dir / f"random-{task.name}-s{seed}-{i:03d}.json"
    if path.exists():
      rows.append(json.loads(path.read_text()))
      continue
    t0 = time.time()
    pos = np.sort(stratified_sample(np.random.default_rng([seed, i]), np.asarray(params.proxy.y), budget))
    ids = pool.train.ids[selectable[pos]]
    row = {"subset": i, **_proxy_report(score_key, params.proxy_spec, params.proxy, pos, test_x, test_y),
           **_target_accuracy(config, pool, test, ids, seed, f"random subset {i}")}
    atomic_write_json(path, row)
    rows.append(row)
    print(f"subset {i + 1}/{subsets}: proxy reward score {row['proxy_reward_score']:.4f}, target test accuracy "
          f"{row['target_test_accuracy']:.4f} ({time.time() - t0:.0f}s)", flush=True)
  proxy_s = [r["proxy_reward_score"] for r in rows]
  proxy_a = [r["proxy_reward_accuracy"] for r in rows]
  target = [r["target_test_accuracy"] for r in rows]
  summary = {"task": task.name, "seed": seed, "budget": budget, "subsets": subsets,
             "spearman_proxy_score_vs_target": spearman(proxy_s, target),
             "spearman_proxy_accuracy_vs_target": spearman(proxy_a, target),
             "spearman_proxy_test_vs_target": spearman([r["proxy_test_accuracy"] for r in rows], target),
             "target_test_accuracy_range": [float(min(target)), float(max(target))],
             "proxy_reward_score_range": [float(min(proxy_s)), float(max(proxy_s))], "random": rows}

  chosen = [r for r in results.load_rows(workdir)
            if r["task"] == task.name and r["budget"] == float(config.budget) and r["selector"] != "random"
            and r["n_selected"] == budget]
  gaps, envs = [], {}
  for r in chosen:
    sel_path = pathlib.Path(workdir) / "selections" / f"{harness.cell_name(r['selector'], task.name, r['seed'])}.json"
    if not sel_path.exists():
      continue
    if r["seed"] not in envs:
      envs[r["seed"]] = env_for(r["seed"])
    p, sel = envs[r["seed"]]
    where = {int(v): j for j, v in enumerate(pool.train.ids[sel])}
    ids = json.loads(sel_path.read_text())
    if not all(int(i) in where for i in ids):  # e.g. `full`, or ids from the reward split: not scoreable here
      continue
    pos = np.asarray(sorted(where[int(i)] for i in ids))
    rep = _proxy_report(score_key, p.proxy_spec, p.proxy, pos, test_x, test_y)
    gaps.append({"selector": r["selector"], "seed": r["seed"], **rep, "target_test_accuracy": r["test_accuracy"],
                 "gap_proxy_reward_minus_proxy_test": rep["proxy_reward_accuracy"] - rep["proxy_test_accuracy"],
                 "gap_proxy_reward_minus_target_test": rep["proxy_reward_accuracy"] - r["test_accuracy"]})
  rand_gap = float(np.mean([r["proxy_reward_accuracy"] - r["proxy_test_accuracy"] for r in rows]))
  summary.update(chosen=gaps, random_mean_gap_proxy_reward_minus_proxy_test=rand_gap)
  atomic_write_json(out_dir / f"summary-{task.name}-s{seed}.json", summary)
  return summary


def main(argv) -> None:
  del argv
  from rlsel.errors import UserError, fail

  if not _WORKDIR.value:
    fail("proxy_fidelity", "--workdir is required: a main-command workdir for the same config")
  try:
    s = run(_CONFIG.value, _WORKDIR.value, _SUBSETS.value, _SEED.value)
  except UserError as e:
    fail("proxy_fidelity", str(e))
  print(f"\n{s['task']}, seed {s['seed']}, budget {s['budget']}: {s['subsets']} random subsets")
  print(f"  target test accuracy {s['target_test_accuracy_range'][0]:.4f} .. {s['target_test_accuracy_range'][1]:.4f}")
  print(f"  Spearman(proxy reward score, target test acc)    = {_fmt(s['spearman_proxy_score_vs_target'])}")
  print(f"  Spearman(proxy reward accuracy, target test acc) = {_fmt(s['spearman_proxy_accuracy_vs_target'])}")
  print(f"  Spearman(proxy test accuracy, target test acc)   = {_fmt(s['spearman_proxy_test_vs_target'])}")
  print(f"  random subsets: proxy reward-split minus proxy test accuracy = "
        f"{s['random_mean_gap_proxy_reward_minus_proxy_test']:+.4f}")
  if s["chosen"]:
    print("\n| selector | seed | proxy reward acc | proxy test acc | target test acc | reward - proxy test |")
    print("|---|---|---|---|---|---|")
    for g in s["chosen"]:
      print(f"| {g['selector']} | {g['seed']} | {g['proxy_reward_accuracy']:.4f} | {g['proxy_test_accuracy']:.4f} | "
            f"{g['target_test_accuracy']:.4f} | {g['gap_proxy_reward_minus_proxy_test']:+.4f} |")
  print(f"spearman_proxy_vs_target={_fmt(s['spearman_proxy_score_vs_target'], '.4f')}")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
