"""Environment throughput: the jitted, vmapped episode loop versus a plain Python loop, plus proxy FLOP/s.

  python -m rlsel.bench.throughput [--pool 10000 --dim 384 --envs 1,16,64,256]

Builds a synthetic pool (Gaussian blobs with noisy labels) through the real selector pipeline (reward split,
k-means, initial proxy, EnvParams with the proxy reward), then times random-policy episodes:
  * `jit(vmap over num_envs)` of reset + `lax.scan` over the episode, for each num_envs;
  * the same env, one episode at a time, `jit(step)` called from a Python loop;
and the proxy fine-tune (vmapped over 64 episodes) in FLOP/s next to a float32 matmul timed in the same run.
Last line: `speedup_vs_python_loop=<best vmapped steps/s / Python-loop steps/s>`.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel import proxy as proxy_lib
from rlsel.configlib import base_config
from rlsel.env.build import build_env


def synthetic(n: int, dim: int, classes: int, seed: int):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(32, dim)).astype(np.float32)
  z = rng.integers(0, 32, n)
  label_of = rng.integers(0, classes, 32)
  x = rng.standard_normal((n, dim), dtype=np.float32)  # float32 from the start: no float64 pool-sized temporary
  x *= 2.0
  x += centres[z]
  y = np.where(rng.random(n) < 0.8, label_of[z], rng.integers(0, classes, n)).astype(np.int32)
  return x, y


def random_action(key, mask):
  return jax.random.categorical(key, jnp.where(mask, 0.0, -1e9))


def make_vector_run(params, num_envs):
  """One batch of `num_envs` random-policy episodes, reset included; returns the summed reward."""
  def run(key):
    k_reset, k_steps = jax.random.split(key)
    state, obs = jax.vmap(env_lib.reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), params)

    def one(carry, k):
      state, obs = carry
      k_a, k_s = jax.random.split(k)
      a = random_action(k_a, obs.action_mask)
      state, obs, r, _, _ = jax.vmap(env_lib.step, in_axes=(0, 0, 0, None))(
          jax.random.split(k_s, num_envs), state, a, params)
      return (state, obs), r

    _, rewards = jax.lax.scan(one, (state, obs), jax.random.split(k_steps, params.max_steps))
    return rewards.sum()
  return jax.jit(run)


def timed(fn, *args, repeats=1):
  """Fastest of `repeats` timed calls after a warm-up call (the machine is shared: the minimum is the least noisy)."""
  out = jax.block_until_ready(fn(*args))  # compile + warm up
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best, out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--pool", type=int, default=10_000, help="synthetic pool size")
  ap.add_argument("--dim", type=int, default=384, help="embedding width")
  ap.add_argument("--classes", type=int, default=2)
  ap.add_argument("--budget", type=float, default=0.05, help="fraction of the pool")
  ap.add_argument("--envs", default="1,16,64,256", help="comma-separated num_envs for the vmapped loop")
  ap.add_argument("--python_episodes", type=int, default=3, help="episodes stepped from the Python loop (fastest kept)")
  ap.add_argument("--repeats", type=int, default=2, help="timed batches per num_envs below 256 (fastest kept)")
  ap.add_argument("--matmul", type=int, default=2048, help="side of the float32 matmul reference")
  ap.add_argument("--proxy_steps", type=int, default=0, help="proxy fine-tune steps per evaluation (0 = config)")
  ap.add_argument("--pca_dim", type=int, default=0, help="proxy.pca_dim (0 = full embeddings)")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)

  cfg = base_config()
  cfg.proxy.pca_dim = args.pca_dim
  if args.proxy_steps > 0:
    cfg.proxy.steps = args.proxy_steps
  x, y = synthetic(args.pool, args.dim, args.classes, args.seed)
  budget = int(round(args.budget * args.pool))
  t = time.perf_counter()
  params, _, _ = build_env(jax.random.PRNGKey(args.seed), cfg, x, y, args.classes, budget)
  spec = params.proxy_spec
  print(f"pool {args.pool} x {args.dim} (proxy sees {params.proxy.x.shape[1]} dims), reward split {params.proxy.rx.shape[0]}, clusters {params.sizes.shape[0]}, "
        f"budget {budget}, chunk {params.chunk}, steps/episode {params.max_steps}, proxy {spec.steps} steps x "
        f"batch {spec.batch_size} (hidden {spec.hidden}); setup {time.perf_counter() - t:.1f}s")

  # Python loop: one episode at a time, a jitted step per call.
  reset, step = jax.jit(env_lib.reset), jax.jit(env_lib.step)
  act, split = jax.jit(random_action), jax.jit(lambda k: tuple(jax.random.split(k, 3)))
  key = jax.random.PRNGKey(1)

  def python_episode(key):
    state, obs = reset(key, params)
    total = 0.0
    for _ in range(params.max_steps):
      key, k_a, k_s = split(key)
      state, obs, r, _, _ = step(k_s, state, act(k_a, obs.action_mask), params)
      total = total + r
    return jax.block_until_ready(total)

  python_episode(key)  # compile
  secs = []
  for i in range(args.python_episodes):
    t = time.perf_counter()
    python_episode(jax.random.fold_in(key, i))
    secs.append(time.perf_counter() - t)
  py_sps = params.max_steps / min(secs)
  print(f"python loop        : {py_sps:10.1f} env steps/s")

  best = 0.0
  for e in [int(v) for v in args.envs.split(",")]:
    run = make_vector_run(params, e)
    t = time.perf_counter()
    jax.block_until_ready(run(key))
    compile_s = time.perf_counter() - t
    secs, _ = timed(run, jax.random.fold_in(key, 7), repeats=args.repeats if e < 256 else 1)
    sps = e * params.max_steps / secs
    best = max(best, sps)
    print(f"jit+vmap num_envs={e:<4d}: {sps:10.1f} env steps/s  ({secs:.2f}s per batch of episodes, "
          f"first call incl. compile {compile_s:.1f}s, x{sps / py_sps:.1f} vs python loop)")

  # Proxy fine-tune FLOP/s (vmapped over episodes) next to a float32 matmul.
  n_ep, rows = 64, min(budget, params.proxy.x.shape[0])
  pos = jax.random.randint(jax.random.PRNGKey(3), (n_ep, rows), 0, params.proxy.x.shape[0])

  def fine(k, p):
    draw = lambda kk, shape: p[jax.random.randint(kk, shape, 0, rows)]
    return proxy_lib.evaluate(k, spec, params.proxy, draw, jnp.arange(params.proxy.rx.shape[0]))

  fine_v = jax.jit(jax.vmap(fine))
  secs, _ = timed(fine_v, jax.random.split(key, n_ep), pos, repeats=3)
  dim = int(params.proxy.x.shape[1])
  eval_flops = 2.0 * params.proxy.rx.shape[0] * (dim * spec.hidden + spec.hidden * args.classes
                                                 if spec.hidden else dim * args.classes)
  flops = n_ep * (proxy_lib.finetune_flops(spec, dim) + eval_flops)
  m = args.matmul
  a = jax.random.normal(jax.random.PRNGKey(4), (m, m), jnp.float32)
  mm_secs, _ = timed(jax.jit(lambda u: u @ u), a, repeats=3)
  mm = 2.0 * m ** 3 / mm_secs
  print(f"proxy fine-tune+score: {flops / secs / 1e9:8.2f} GFLOP/s (analytic {flops / n_ep / 1e6:.1f} MFLOP per "
        f"evaluation, {n_ep} vmapped, {secs * 1e3:.1f} ms)")
  print(f"float32 matmul {m}x{m}: {mm / 1e9:8.2f} GFLOP/s  -> proxy at {100 * flops / secs / mm:.1f}% of matmul")
  print(f"speedup_vs_python_loop={best / py_sps:.1f}")


if __name__ == "__main__":
  main()
