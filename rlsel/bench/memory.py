"""Memory at scale: a synthetic pool of a million examples through clustering, environment construction and PPO.

  python -m rlsel.bench.memory [--pool 1000000 --dim 384 --updates 2 --envs 4]

Prints, per stage, the seconds taken and the process's peak resident memory so far, and checks that no stage holds
a pool x pool or pool x parameters array (peak memory stays a small multiple of the embedding matrix). Last line:
`peak_rss_over_embeddings=<peak RSS / bytes of the embedding matrix>`.
"""

import argparse
import resource
import time

import jax
import numpy as np

from rlsel.bench.throughput import synthetic
from rlsel.configlib import base_config


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--pool", type=int, default=1_000_000)
  ap.add_argument("--dim", type=int, default=384)
  ap.add_argument("--classes", type=int, default=3)
  ap.add_argument("--budget", type=float, default=0.05)
  ap.add_argument("--clusters", type=int, default=64)
  ap.add_argument("--updates", type=int, default=2)
  ap.add_argument("--envs", type=int, default=4)
  ap.add_argument("--reward_subsample", type=int, default=4096)
  args = ap.parse_args(argv)

  from rlsel.env.build import build_env
  from rlsel.selectors import rl
  rows, t_all = [], time.time()

  def stage(name, t0):
    rows.append((name, time.time() - t0, peak_rss_bytes()))
    print(f"{name:<28s} {rows[-1][1]:8.1f} s   peak RSS {rows[-1][2] / 2**30:6.2f} GiB", flush=True)

  t = time.time()
  x, y = synthetic(args.pool, args.dim, args.classes, seed=0)
  emb_bytes = x.nbytes
  stage(f"synthetic pool {args.pool}x{args.dim}", t)

  c = base_config()
  c.kmeans.num_clusters = args.clusters
  c.proxy.reward_subsample = args.reward_subsample
  c.rl.num_envs, c.rl.num_updates, c.rl.log_every = args.envs, args.updates, 1
  budget = int(round(args.budget * args.pool))
  t = time.time()
  params, selectable, _ = build_env(jax.random.key(0), c, x, y, args.classes, budget)
  jax.block_until_ready(params)
  stage("reward split+k-means+env", t)

  import ml_collections
  t = time.time()
  jits = rl.programs(c)
  out = jax.block_until_ready(jits.train("ppo", "rl_ppo", ml_collections.FrozenConfigDict(c), None, jax.random.key(1),
                                         params, None))
  stage(f"PPO {args.updates} updates x {args.envs} envs", t)
  t = time.time()
  final, _ = jits.greedy(int(c.rl.hidden), float(c.rl.size_prior), jax.random.key(2), out["params"], params)
  chosen = int(np.asarray(final.mask).sum())
  stage("greedy episode", t)
  assert chosen == budget, (chosen, budget)

  print(f"\npool {args.pool}: budget {budget} met exactly; episode length {params.max_steps}, chunk {params.chunk}; "
        f"embeddings {emb_bytes / 2**30:.2f} GiB; total {time.time() - t_all:.1f} s")
  print(f"pool x pool float32 would be {4 * args.pool**2 / 2**40:.1f} TiB; peak RSS "
        f"{rows[-1][2] / 2**30:.2f} GiB")
  print(f"peak_rss_over_embeddings={rows[-1][2] / emb_bytes:.2f}")


if __name__ == "__main__":
  main()
