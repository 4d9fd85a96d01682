"""Selection-loop throughput: env steps/s of the Python loop, the vmapped loop and PPO training end to end, for the
proxy restarted every step and the proxy carried through the episode, with FLOP/s against a same-run matmul.

  python -m rlsel.bench.throughput [--pool 10000 --dim 384 --envs 1,16,64,256,1024 --incremental_steps 2]

Builds a synthetic pool (Gaussian blobs with noisy labels) through the real selector pipeline (reward split,
k-means, initial proxy, EnvParams with the proxy reward). For each proxy (`restart`: `proxy.steps` Adam steps from
scratch every env step; `incremental`: `--incremental_steps` more steps from where the episode's proxy left off) it
times:
  * one episode at a time, `jit(step)` called from a Python loop;
  * `jit(vmap over num_envs)` of reset + `lax.scan` over random-policy episodes, for each num_envs;
  * PPO training end to end (rollouts and updates, `configs`' default `rl` settings), compiled first, then timed;
then a per-stage profile of one batched env step (env bookkeeping, proxy fine-tune, reward-split scoring), the
achieved FLOP/s of each loop from analytic counts against a float32 matmul and a memory sweep timed in the same run,
the process's peak memory, and what the same loop should reach on one H200-class GPU and a TPU v5e slice (roofline
from the analytic FLOP and byte counts). Last lines: `vs_restart_proxy=<incremental / restart PPO env steps/s>`,
`ppo_env_steps_per_s=<incremental PPO env steps/s>`.
"""

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel import proxy as proxy_lib
from rlsel.agents import networks
from rlsel.configlib import base_config
from rlsel.env.build import build_env
from rlsel.env.rewards import draw_selected

# Peak dense bf16 FLOP/s and memory bandwidth (bytes/s) per chip, from the vendors' data sheets.
ACCELERATORS = {"H200 (1 GPU)": (989e12, 4.8e12, 1), "TPU v5e-8 (8 chips)": (197e12, 819e9, 8)}
# Share of peak a loop of small batched products typically sustains on those chips (an assumption, stated).
ACCELERATOR_EFFICIENCY = 0.3


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


def make_vector_run(num_envs):
  """`run(key, params)`: one batch of `num_envs` random-policy episodes, reset included; returns the summed reward.

  The pool's arrays are an argument, not closed over: as constants baked into the program, XLA:CPU spends about
  7 ms more per batched step on them (measured at 16 envs), more than two proxy steps cost."""
  def run(key, params):
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


def python_loop_steps_per_s(params, episodes: int) -> float:
  """One episode at a time, a jitted step per call; the fastest of `episodes` episodes after a compile."""
  reset, step = jax.jit(env_lib.reset), jax.jit(env_lib.step)
  act, split = jax.jit(random_action), jax.jit(lambda k: tuple(jax.random.split(k, 3)))

  def episode(key):
    state, obs = reset(key, params)
    total = 0.0
    for _ in range(params.max_steps):
      key, k_a, k_s = split(key)
      state, obs, r, _, _ = step(k_s, state, act(k_a, obs.action_mask), params)
      total = total + r
    return jax.block_until_ready(total)

  episode(jax.random.PRNGKey(0))
  secs = []
  for i in range(episodes):
    t = time.perf_counter()
    episode(jax.random.PRNGKey(i + 1))
    secs.append(time.perf_counter() - t)
  return params.max_steps / min(secs)


class Counts:
  """Analytic FLOPs and bytes of one env step (one episode) and of one PPO observation, for a proxy and pool."""

  def __init__(self, params, train_steps: int):
    spec, data = params.proxy_spec, params.proxy
    self.dim, self.rows = int(data.x.shape[1]), int(data.rx.shape[0])
    self.spec, self.train_steps = spec, train_steps
    self.env_step = proxy_lib.finetune_flops(spec, self.dim, train_steps) + proxy_lib.score_flops(spec, self.dim,
                                                                                                 self.rows)

  def env_bytes(self, episodes: int) -> float:
    return proxy_lib.step_bytes(self.spec, self.dim, self.train_steps, self.rows, episodes)


def ppo_flops(cfg, params, counts: Counts) -> float:
  """Analytic FLOPs of PPO training: every env step's proxy work, the policy's forward in rollouts, and the
  update epochs' forward + backward (~3x forward) over every transition."""
  rl = cfg.rl
  transitions = int(rl.num_envs) * params.max_steps * int(rl.num_updates)
  net = networks.forward_flops(int(rl.hidden), int(params.sizes.shape[0]))
  return transitions * (counts.env_step + net + 3.0 * net * int(rl.update_epochs))


def time_ppo(cfg, params):
  """(seconds of one PPO training run after compiling it, compile seconds)."""
  from rlsel.agents import ppo
  train = jax.jit(lambda key, params: ppo.make_train(cfg, params, name="throughput")(key))  # as rl_ppo runs it
  key = jax.random.PRNGKey(5)
  t = time.perf_counter()
  compiled = train.lower(key, params).compile()
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(compiled(key, params)["best_score"])
  return time.perf_counter() - t, compile_s


def stage_profile(params, num_envs: int, reward, repeats: int):
  """Seconds per batched env step of: env bookkeeping alone (no reward), the proxy's fine-tune, the reward-split
  scoring (the three add up to about one env step of the loop)."""
  spec, data = params.proxy_spec, params.proxy
  quiet = params.replace(reward=env_lib.NoReward())
  secs_env, _ = timed(make_vector_run(num_envs), jax.random.PRNGKey(2), quiet, repeats=repeats)
  state, _ = jax.vmap(env_lib.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(3), num_envs), params)
  taken = jnp.broadcast_to(jnp.maximum(params.sizes // 2, 1), (num_envs,) + params.sizes.shape)
  steps = reward.steps if isinstance(reward, env_lib.IncrementalProxyReward) else spec.steps
  start = proxy_lib.start(spec, data)

  def fine(key, taken, order, data):
    return proxy_lib.train(key, spec, data, start, draw_selected(taken, order), steps).params

  keys = jax.random.split(jax.random.PRNGKey(4), num_envs)
  fine_v = jax.jit(jax.vmap(fine, in_axes=(0, 0, 0, None)))
  secs_fine, trained = timed(fine_v, keys, taken, state.order, data, repeats=repeats)
  score = jax.jit(jax.vmap(lambda p, rows, data: proxy_lib.reward_score(spec, p, data, rows), in_axes=(0, 0, None)))
  secs_score, _ = timed(score, trained, state.rows, data, repeats=repeats)
  return secs_env / params.max_steps, secs_fine, secs_score


def matmul_flops_per_s(side: int) -> float:
  a = jax.random.normal(jax.random.PRNGKey(4), (side, side), jnp.float32)
  secs, _ = timed(jax.jit(lambda u: u @ u), a, repeats=3)
  return 2.0 * side ** 3 / secs


def memory_bytes_per_s(megabytes: int) -> float:
  """Read bandwidth: a reduction over a float32 array far larger than the caches."""
  a = jnp.ones((megabytes * 2 ** 18,), jnp.float32)
  secs, _ = timed(jax.jit(jnp.sum), a, repeats=3)
  return a.size * 4 / secs


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--pool", type=int, default=10_000, help="synthetic pool size")
  ap.add_argument("--dim", type=int, default=384, help="embedding width")
  ap.add_argument("--classes", type=int, default=2)
  ap.add_argument("--budget", type=float, default=0.05, help="fraction of the pool")
  ap.add_argument("--envs", default="1,16,64,256,1024", help="comma-separated num_envs for the vmapped loop")
  ap.add_argument("--incremental_steps", type=int, default=2, help="Adam steps per env step of the carried proxy")
  ap.add_argument("--modes", default="restart,incremental", help="proxies to time: restart, incremental")
  ap.add_argument("--ppo_updates", type=int, default=0, help="PPO updates timed (0 = the config's rl.num_updates)")
  ap.add_argument("--python_episodes", type=int, default=3, help="episodes stepped from the Python loop (fastest kept)")
  ap.add_argument("--repeats", type=int, default=2, help="timed batches per num_envs below 256 (fastest kept)")
  ap.add_argument("--profile_envs", type=int, default=256, help="num_envs of the per-stage profile")
  ap.add_argument("--matmul", type=int, default=2048, help="side of the float32 matmul reference")
  ap.add_argument("--memory_mb", type=int, default=512, help="array size of the bandwidth reference")
  ap.add_argument("--proxy_steps", type=int, default=0, help="restart proxy fine-tune steps (0 = config)")
  ap.add_argument("--pca_dim", type=int, default=0, help="proxy.pca_dim (0 = full embeddings)")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  bad = [m for m in modes if m not in ("restart", "incremental")]
  if bad or not modes or args.incremental_steps < 1:
    ap.error(f"--modes takes restart and/or incremental (got {args.modes!r}); --incremental_steps must be >= 1")
  envs = [int(v) for v in args.envs.split(",")]

  cfg = base_config()
  cfg.proxy.pca_dim = args.pca_dim
  if args.proxy_steps > 0:
    cfg.proxy.steps = args.proxy_steps
  if args.ppo_updates > 0:
    cfg.rl.num_updates = args.ppo_updates
  cfg.rl.log_every = 0
  x, y = synthetic(args.pool, args.dim, args.classes, args.seed)
  budget = int(round(args.budget * args.pool))
  t = time.perf_counter()
  base, _, _ = build_env(jax.random.PRNGKey(args.seed), cfg, x, y, args.classes, budget)
  spec = base.proxy_spec
  print(f"pool {args.pool} x {args.dim} (proxy sees {base.proxy.x.shape[1]} dims), reward split "
        f"{base.proxy.rx.shape[0]}, clusters {base.sizes.shape[0]}, budget {budget}, chunk {base.chunk}, "
        f"steps/episode {base.max_steps}, proxy batch {spec.batch_size} (hidden {spec.hidden}), restart "
        f"{spec.steps} steps, incremental {args.incremental_steps} steps per env step; PPO {cfg.rl.num_envs} envs x "
        f"{cfg.rl.num_updates} updates x {cfg.rl.update_epochs} epochs; setup {time.perf_counter() - t:.1f}s",
        flush=True)
  mm = matmul_flops_per_s(args.matmul)
  bw = memory_bytes_per_s(args.memory_mb)
  print(f"same-run references: float32 matmul {args.matmul}^3 {mm / 1e9:.1f} GFLOP/s, memory read "
        f"{bw / 1e9:.1f} GB/s ({args.memory_mb} MB)", flush=True)

  rewards = {"restart": env_lib.ProxyReward(), "incremental": env_lib.IncrementalProxyReward(args.incremental_steps)}
  results = {}
  for mode in modes:
    reward = rewards[mode]
    params = base.replace(reward=reward)
    counts = Counts(params, args.incremental_steps if mode == "incremental" else spec.steps)
    py_sps = python_loop_steps_per_s(params, args.python_episodes)
    print(f"[{mode}] analytic {counts.env_step / 1e6:.2f} MFLOP per env step; python loop: {py_sps:9.1f} env steps/s",
          flush=True)
    vec = {}
    for e in envs:
      run = make_vector_run(e)
      t = time.perf_counter()
      jax.block_until_ready(run(jax.random.PRNGKey(1), params))
      compile_s = time.perf_counter() - t
      secs, _ = timed(run, jax.random.PRNGKey(7), params, repeats=args.repeats if e < 256 else 1)
      vec[e] = e * params.max_steps / secs
      print(f"[{mode}] jit+vmap num_envs={e:<5d}: {vec[e]:9.1f} env steps/s ({secs:.2f}s per batch, first call "
            f"incl. compile {compile_s:.1f}s), {vec[e] * counts.env_step / 1e9:6.2f} GFLOP/s = "
            f"{100 * vec[e] * counts.env_step / mm:5.1f}% of matmul; bytes {counts.env_bytes(e) / 1e3:.0f} kB/step "
            f"= {100 * vec[e] * counts.env_bytes(e) / bw:5.1f}% of memory read", flush=True)
    secs, compile_s = time_ppo(cfg, params)
    steps = int(cfg.rl.num_envs) * params.max_steps * int(cfg.rl.num_updates)
    flops = ppo_flops(cfg, params, counts)
    ppo_sps = steps / secs
    print(f"[{mode}] PPO end to end: {ppo_sps:9.1f} env steps/s ({steps} env steps in {secs:.1f}s, compile "
          f"{compile_s:.1f}s), {flops / secs / 1e9:6.2f} GFLOP/s = {100 * flops / secs / mm:5.1f}% of matmul "
          f"({flops / steps / 1e6:.2f} MFLOP per env step incl. updates)", flush=True)
    pe = args.profile_envs
    s_env, s_fine, s_score = stage_profile(params, pe, reward, args.repeats)
    total = s_env + s_fine + s_score
    print(f"[{mode}] one batched env step at num_envs={pe}: {1e3 * total:.1f} ms = env bookkeeping "
          f"{100 * s_env / total:.0f}% + proxy fine-tune {100 * s_fine / total:.0f}% + reward-split scoring "
          f"{100 * s_score / total:.0f}%", flush=True)
    results[mode] = (py_sps, vec, ppo_sps, counts)

  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB -> GiB (Linux)
  print(f"peak memory (process max RSS): {peak:.2f} GiB")
  for mode, (_, _, _, counts) in results.items():
    for name, (flops, bandwidth, chips) in ACCELERATORS.items():
      e = max(envs)
      by_flops = chips * ACCELERATOR_EFFICIENCY * flops / counts.env_step
      by_bytes = chips * ACCELERATOR_EFFICIENCY * bandwidth / (counts.env_bytes(e) / 2)  # bf16 halves the bytes
      print(f"on paper [{mode}] {name}, bf16, num_envs={e}, {ACCELERATOR_EFFICIENCY:.0%} of peak: "
            f"{min(by_flops, by_bytes):,.0f} env steps/s ({'memory' if by_bytes < by_flops else 'compute'}-bound)")
  if "restart" in results and "incremental" in results:
    print(f"vs_restart_proxy={results['incremental'][2] / results['restart'][2]:.2f}")
  print(f"ppo_env_steps_per_s={results[modes[-1]][2]:.1f}")


if __name__ == "__main__":
  main()
