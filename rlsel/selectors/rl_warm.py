"""`rl_ppo_warm`: PPO started from a policy cloned from a short `climb` search (rlsel/selectors/climb.py).

Before PPO: `climb.warm_iterations` rounds of the mixture search on the same environment; the `climb.bc_demos`
best distinct allocations (by the search's surrogate) are played round-robin in the environment, and the cluster
network is fitted to their action sequences by behaviour cloning (rlsel/agents/bc.py). PPO then runs from those
params; everything after training (greedy vs best sampled episode, ids, diagnostics) is `rl_ppo`'s. The diagnostics
adds the climb's and PPO's real proxy evaluations (summed in `real_proxy_evals`), the cloning accuracy and timings.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from rlsel import env as env_lib
from rlsel.agents import bc, networks
from rlsel.env.build import ENV_SECTIONS
from rlsel.selectors import climb as climb_sel
from rlsel.selectors.base import register
from rlsel.selectors.rl import FAST_COMPILE, RLSelector


def clone(key, config, env_params, allocs):
  """Behaviour cloning of fresh network params on the round-robin episodes of allocations [D, C]; returns
  (params, {"loss", "accuracy"}). The episodes share one order key (the order does not change the actions)."""
  return _JITS[bool(config.rl.fast_compile)][0](key, int(config.rl.hidden), int(config.climb.bc_steps),
                                                float(config.climb.bc_lr), float(config.rl.max_grad_norm),
                                                float(config.rl.size_prior), jnp.asarray(allocs, jnp.int32),
                                                env_params)


def _clone_impl(key, hidden, steps, lr, max_grad_norm, size_prior, allocs, env_params):
  k_play, k_init = jax.random.split(key)
  _, demo = jax.vmap(climb_sel.play, in_axes=(None, 0, None))(k_play, allocs, env_params)
  obs0 = env_lib.observe(jnp.zeros_like(env_params.sizes), jnp.zeros((), jnp.int32), env_params)
  params = networks.init(k_init, hidden, env_params.feats, obs0)
  return bc.fit(params, hidden, env_params, demo, steps, lr, max_grad_norm, size_prior)


_JITS = {fast: (jax.jit(_clone_impl, static_argnums=(1, 2, 3, 4, 5),
                        compiler_options=FAST_COMPILE if fast else None),)
         for fast in (False, True)}


@register("rl_ppo_warm")
class WarmPPOSelector(RLSelector):
  """PPO warm-started by behaviour cloning of a short climb search; see the module docstring."""
  algo = "ppo"
  config_sections = ENV_SECTIONS + ("climb",)

  def _train(self, key, env_params, checkpoint_dir) -> tuple:
    cfg = self.config
    k_climb, k_clone, k_ppo = jax.random.split(key, 3)
    t0 = time.time()
    found = climb_sel.search(cfg, k_climb, env_params, int(cfg.climb.warm_iterations))
    t1 = time.time()
    demos = found["ranked"][:max(1, int(cfg.climb.bc_demos))]
    init, fit = clone(k_clone, cfg, env_params, demos)
    t2 = time.time()
    out = jax.block_until_ready(dict(self._run_agent(k_ppo, env_params, self.name, checkpoint_dir, init_params=init)))
    climb_evals, ppo_evals = int(found["real_evals"]), int(out["real_evals"])
    out["real_evals"] = climb_evals + ppo_evals
    warm_info = {
        "climb_real_evals": climb_evals, "ppo_real_evals": ppo_evals,
        "climb_best_score": float(np.max(found["scores"])),
        "bc_demos": int(demos.shape[0]), "bc_accuracy": float(fit["accuracy"]), "bc_loss": float(fit["loss"]),
        "climb_seconds": t1 - t0, "bc_seconds": t2 - t1, "ppo_seconds": time.time() - t2}
    return out, warm_info
