"""How well the cheap proxy predicts the target, and how well any proxy could: subsets that span what a search
explores, the target's own test-retest noise, and the reward-overfitting gap.

  python -m rlsel.bench.proxy_fidelity --config=configs/glue.py --workdir=DIR [--subsets=30] [--seed=0]
      [--families=random,policy,skewed] [--retest_keys=2] [--designs=head|cheap|all|NAME,...] [--shard=I/N]
      [--finetune=False] [--keep_saved_subsets]

DIR is a main-command workdir (its embedding cache and results are reused; new files go to DIR/fidelity/).
1. The RL selectors' reward split, clusters, environment and proxy are rebuilt for run seed `--seed` with the keys
   `rl_ppo` uses in the main command.
2. `--subsets` budget-sized subsets of the selectable rows, split evenly over `--families` (the remainder to random),
   each deterministic from (--seed, family, index):
   - random: stratified random subsets (class shares as in the pool);
   - policy: episodes of a uniformly random policy in the RL environment (each step a uniform valid action), so
     cluster allocations as skewed as an untrained agent's;
   - skewed: cluster weights from a Dirichlet with concentration alpha on the ladder 0.1, 0.3, 1, 3 (strong to mild
     skew), examples drawn from each cluster in proportion to weight x cluster size, capped at the cluster's size and
     topped up to exactly the budget.
3. For every subset: the proxy's reward-split score (the RL reward, e.g. negative log-loss) and accuracy, and the
   target's test accuracy after the main command's fine-tune for run seed --seed (key 0) and after `--retest_keys`-1
   more fine-tunes with independent keys (head init, dropout and data order all change; no real cell uses them).
   Reported: the target's test-retest Pearson r (and Spearman) between keys 0 and 1 across subsets, the noise
   ceiling sqrt(r) that no proxy's correlation with one fine-tune can beat (n/a when r <= 0), the proxy's Spearman
   against key 0 and against the mean over keys with its ratio to the ceiling, and per family the spread of the target
   and its test-retest r. Within families (each family's mean removed) the same test-retest and ceiling: how far any
   score can order subsets that differ less than the families do (one random subset against another).
4. For every subset chosen at the budget in DIR/results.json (rl_*, climb, ...): the proxy's accuracy on the reward
   split and on the test split next to the target's test accuracy, so overfitting the reward shows as a gap.
5. `--designs`: every subset scored by each proxy design of `rlsel/bench/proxy_designs.py` (today's reward, its
   accuracy, several keys, longer training, a larger scoring split, an MLP, the incremental proxy, task-adapted
   features, the transformer proxy), each with its Spearman against the target's mean over keys, that figure's ratio
   to the noise ceiling of the mean, its pooled within-family Spearman, and its seconds per evaluation and to
   prepare.
`--shard=I/N` splits the fine-tunes over N processes on the same DIR (one per core); run once more without it for
the summary of everything (`--finetune=False` summarises what is saved so far, fine-tuning nothing). Every subset
and every fine-tune is saved as it finishes (DIR/fidelity/subset-*.json, target-*-k<key>.json), so an interrupted
run continues; files written under other settings are refused, naming the fields that changed (each file records
the fields it depends on, so a field rlsel gained since, left at its default, does not strand a study), and so is a
saved subset whose ids differ from this run's draw unless `--keep_saved_subsets` (a study continued on another
machine: XLA:CPU's float rounding there can flag a few other rows in the environment's confident-learning filter,
which shifts every draw; the saved subsets and their fine-tunes are then the record, and the summary counts them).
Summary: DIR/fidelity/summary-<task>-s<seed>.json.
The last two lines: `noise_ceiling_sqrt_r=<v>` and `spearman_proxy_vs_target=<rho>` (the proxy's reward score
against the main command's fine-tune, key 0).
"""

import functools
import json
import math
import os
import pathlib
import sys
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rlsel.stats import (  # noqa: E402  (numpy only)
    pearson, spearman, spearman_difference, spearman_interval, within_groups, within_groups_spearman)

FAMILIES = ("random", "policy", "skewed", "noisy")
DEFAULT_FAMILIES = ("random", "policy", "skewed")  # `noisy` needs a noised pool (`--config.data.label_noise`)
SKEW_ALPHAS = (0.1, 0.3, 1.0, 3.0)  # Dirichlet concentrations of the skewed family, strong to mild skew
NOISY_SHARES = (0.0, 0.2, 0.4, 0.6)  # the noisy family's shares of rows whose label the noise changed
# fold_in / seed tags of this benchmark's own randomness (the main command's cells use fold_in(root, 0 | 1 | 2)).
_POLICY_TAG, _SKEW_TAG, _RETEST_TAG, _NOISY_TAG = 1_000_001, 1_000_002, 1_000_003, 1_000_005

def define_flags() -> None:
  """Defines the command line's flags: called only when this module runs as a program, so that importing it for
  its functions (tests import several benchmarks into one process) defines none."""
  global _CONFIG, _WORKDIR, _SUBSETS, _SEED, _FAMILIES, _RETEST_KEYS, _SHARD, _DESIGNS, _FINETUNE, _KEEP_SAVED
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/glue.py", "Main-command config (task, budget, target).",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "A main-command workdir for the same config.")
  _SUBSETS = flags.DEFINE_integer("subsets", 30, "Budget-sized subsets to fine-tune the target on, split evenly over "
                                  "--families (the remainder to random).")
  _SEED = flags.DEFINE_integer("seed", 0, "Run seed whose reward split, environment, proxy and fine-tune keys are "
                               "used.")
  _FAMILIES = flags.DEFINE_string("families", ",".join(DEFAULT_FAMILIES), "Subset families, comma-separated: "
                                  + ", ".join(FAMILIES) + " (noisy: subsets with a ladder of changed-label shares, "
                                  "on a pool noised with --config.data.label_noise).")
  _RETEST_KEYS = flags.DEFINE_integer("retest_keys", 2, "Fine-tune key sets per subset: the main command's and this "
                                      "many minus one independent ones (2 or more for the test-retest ceiling).")
  _DESIGNS = flags.DEFINE_string("designs", "head", "Proxy designs to score every subset with and rank against the "
                                 "target (rlsel/bench/proxy_designs.py): names, `cheap` (no warm-up, no transformer) "
                                 "or `all`.")
  _FINETUNE = flags.DEFINE_boolean("finetune", True, "False: fine-tune nothing; summarise (and score with the "
                                   "designs) the subsets whose fine-tunes are saved, e.g. while shards still run.")
  _SHARD = flags.DEFINE_string("shard", "0/1", "I/N: fine-tune the target only for subsets n with n % N == I (run N "
                               "processes, one per core, on the same workdir); the others' saved fine-tunes are read, "
                               "and subsets not fine-tuned yet are left out of the summary and counted.")
  _KEEP_SAVED = flags.DEFINE_boolean("keep_saved_subsets", False, "Take saved subsets (and their fine-tunes) as they "
                                     "were drawn even where this run draws other ids, e.g. a study continued on "
                                     "another machine whose environment filter flags a few other rows; counted in "
                                     "the summary. Default: refuse them.")


def _fmt(value, spec: str = "+.3f") -> str:
  """A correlation for printing; None (undefined: a constant side) prints as n/a."""
  return "n/a" if value is None else format(value, spec)


def parse_families(value: str) -> tuple:
  """`--families` as a tuple of known family names, in the canonical order; UserError for unknown or none."""
  from rlsel.errors import require
  names = [v.strip() for v in str(value).split(",") if v.strip()]
  unknown = [n for n in names if n not in FAMILIES]
  require(not unknown, f"--families: unknown subset family {unknown[0] if unknown else ''!r}; choose from "
          f"{', '.join(FAMILIES)}")
  require(names, f"--families={value!r} names no family; choose from {', '.join(FAMILIES)}")
  return tuple(f for f in FAMILIES if f in names)


def parse_shard(value: str) -> tuple:
  """`--shard=I/N` as (I, N) with 0 <= I < N; UserError otherwise."""
  from rlsel.errors import require
  parts = str(value).split("/")
  ok = len(parts) == 2 and all(p.strip().isdigit() for p in parts)
  i, n = (int(parts[0]), int(parts[1])) if ok else (0, 0)
  require(ok and 0 <= i < n, f"--shard={value!r}: expected I/N with 0 <= I < N, e.g. 0/2 and 1/2 for two processes")
  return i, n


def family_counts(subsets: int, families) -> dict:
  """`subsets` split evenly over `families`; the remainder goes to random (or, without it, the first family)."""
  counts = {f: subsets // len(families) for f in families}
  counts["random" if "random" in counts else families[0]] += subsets - sum(counts.values())
  return counts


def plan(subsets: int, families) -> list:
  """(family, index within the family, strength) of every subset; the strength is the skewed family's alpha and the
  noisy family's share of changed labels."""
  ladder = {"skewed": SKEW_ALPHAS, "noisy": NOISY_SHARES}
  out = []
  for fam, n in family_counts(subsets, families).items():
    out += [(fam, i, ladder[fam][i % len(ladder[fam])] if fam in ladder else None) for i in range(n)]
  return out


def retest_keys(seed: int, index: int):
  """(head-init key, fine-tune key) of key set `index`: 0 is the main command's cell of run seed `seed`
  (fold_in(root, 1), fold_in(root, 2)); the others hang off fold_in(root, _RETEST_TAG), which no cell uses."""
  import jax
  root = jax.random.key(seed)
  if index > 0:
    root = jax.random.fold_in(jax.random.fold_in(root, _RETEST_TAG), index)
  return jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)


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


@functools.lru_cache(maxsize=1)
def _episode_jit():
  """One random-policy episode of the environment: each step a uniform draw among the valid actions; the final
  selection mask [N]. Jitted once per environment shape."""
  import jax
  import jax.numpy as jnp

  from rlsel import env as env_lib

  @jax.jit
  def episode(key, params):
    k_reset, k_steps = jax.random.split(key)
    state, obs = env_lib.reset(k_reset, params)

    def one(carry, k):
      state, obs = carry
      k_act, k_step = jax.random.split(k)
      action = jax.random.categorical(k_act, jnp.where(obs.action_mask, 0.0, -jnp.inf))
      state, obs, _, _, _ = env_lib.step(k_step, state, action, params)
      return (state, obs), None

    (state, _), _ = jax.lax.scan(one, (state, obs), jax.random.split(k_steps, params.max_steps))
    return state.mask

  return episode


def rl_env(config, pool, budget: int, run_seed: int):
  """(EnvParams, selectable positions of pool.train) of the RL selectors for run seed `run_seed`: the key `rl_ppo`
  derives in the main command (fold_in(root, 0), then the first of four splits, as RLSelector.select)."""
  import jax

  from rlsel.env.build import build_pool_env
  from rlsel.selectors.rl import select_keys
  k_env = select_keys(jax.random.fold_in(jax.random.key(run_seed), 0)).env
  params, selectable, _ = build_pool_env(k_env, config, pool, budget)
  return params, selectable


def cluster_of(env_params):
  """The cluster of every selectable row [N], from the environment's per-cluster row lists."""
  import numpy as np
  order, sizes = np.asarray(env_params.order), np.asarray(env_params.sizes)
  out = np.full(env_params.num_rows, -1, np.int64)
  for c, s in enumerate(sizes):
    out[order[c, :s]] = c
  return out


def skewed_counts(weights, sizes, budget: int):
  """Examples per cluster: `budget` shared in proportion to weight x size, each capped at the cluster's size (the
  excess re-shared among the others, by size once no weight is left), then whole numbers by largest remainder."""
  import numpy as np
  sizes = np.asarray(sizes, np.int64)
  want = np.asarray(weights, np.float64) * sizes
  alloc, capped = np.zeros(sizes.shape[0]), sizes <= 0
  while True:
    free = ~capped
    left = budget - alloc[capped].sum()
    mass = want[free].sum()
    share = np.zeros_like(alloc)
    share[free] = left * (want[free] / mass if mass > 0 else sizes[free] / sizes[free].sum())
    over = free & (share > sizes)
    if not over.any():
      alloc[free] = share[free]
      break
    alloc[over], capped = sizes[over], capped | over
  counts = np.minimum(np.floor(alloc + 1e-9).astype(np.int64), sizes)
  frac = alloc - counts
  while counts.sum() < budget:  # largest remainder first, among clusters with room
    c = int(np.argmax(np.where(counts < sizes, frac, -np.inf)))
    counts[c] += 1
    frac[c] = -1.0
  while counts.sum() > budget:  # only from float round-off
    c = int(np.argmax(counts))
    counts[c] -= 1
  return counts


def draw_subset(family: str, index: int, strength, seed: int, env_params, cluster, budget: int, changed=None):
  """Sorted positions (rows of the selectable set) of one budget-sized subset, deterministic from its arguments.
  `changed` [selectable] marks rows whose label the pool's noise changed (the noisy family draws round(strength x
  budget) of them, as many as there are, and the rest from the unchanged rows)."""
  import jax
  import numpy as np

  from rlsel.selectors.basic import stratified_sample, top_up
  if family == "random":  # as before this benchmark had families: the same subsets for the same (seed, index)
    pos = stratified_sample(np.random.default_rng([seed, index]), np.asarray(env_params.proxy.y), budget)
  elif family == "policy":
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _POLICY_TAG), index)
    from rlsel import env as env_lib
    walk = env_params.replace(reward=env_lib.NoReward(), proxy=None, surrogate=None)  # no reward in a random walk
    walked = np.flatnonzero(np.asarray(_episode_jit()(key, walk)))
    pos = top_up(np.random.default_rng([seed, _POLICY_TAG, index]), walked, env_params.num_rows, budget)
  elif family == "skewed":
    rng = np.random.default_rng([seed, _SKEW_TAG, index])
    sizes = np.bincount(cluster, minlength=int(np.asarray(env_params.sizes).shape[0]))
    w = rng.dirichlet(np.full(sizes.shape[0], float(strength)))
    if not np.all(np.isfinite(w)) or w.sum() <= 0:  # every gamma draw underflowed (tiny alpha): one cluster
      w = np.eye(sizes.shape[0])[rng.integers(sizes.shape[0])]
    counts = skewed_counts(w, sizes, budget)
    pos = np.concatenate([rng.choice(np.flatnonzero(cluster == c), size=int(k), replace=False)
                          for c, k in enumerate(counts) if k > 0])
  elif family == "noisy":
    rng = np.random.default_rng([seed, _NOISY_TAG, index])
    noisy, clean = np.flatnonzero(changed), np.flatnonzero(~np.asarray(changed, bool))
    k = min(int(round(float(strength) * budget)), noisy.shape[0])
    k = max(k, budget - clean.shape[0])  # too few unchanged rows: the rest from the changed ones
    pos = np.concatenate([rng.choice(noisy, size=k, replace=False), rng.choice(clean, size=budget - k, replace=False)])
  else:
    raise ValueError(family)
  pos = np.sort(np.asarray(pos, np.int64))
  if pos.shape[0] != budget or np.unique(pos).shape[0] != budget:
    raise RuntimeError(f"{family} subset {index}: {pos.shape[0]} positions ({np.unique(pos).shape[0]} unique), "
                       f"not the budget of {budget}")
  return pos


def _target_accuracy(config, pool, test, ids, seed: int, key_index: int, name: str, inits: dict = None) -> dict:
  """The main command's fine-tune and test evaluation of the target on `ids` with key set `key_index`
  (0: the same keys as a cell of run seed `seed`). `inits` caches (module, initial params) per key set: they do not
  depend on the subset, and building them costs a compilation each time."""
  from rlsel.target import finetune as ft
  from rlsel.target import model as target_model
  k_init, k_ft = retest_keys(seed, key_index)
  inits = {} if inits is None else inits
  if key_index not in inits:
    module = next(iter(inits.values()))[0] if inits else None
    built = target_model.build(config, pool.num_classes, key=k_init)
    # One module object for every key set, so its jitted train and eval programs are built once.
    inits[key_index] = (built[0] if module is None else module, built[1])
  module, params = inits[key_index]
  subset = pool.train.take(pool.train.positions_of(ids))
  result = ft.finetune(k_ft, config, module, params, subset, pool.validation, log_prefix=f"{name} finetune")
  probs = ft.predict_proba(module, result.params, test, config.finetune.eval_batch_size,
                           length_multiple=config.features.length_multiple)
  return {"target_test_accuracy": ft.metrics(test.labels, probs, pool.num_classes)["accuracy"],
          "finetune_seconds": result.seconds}


class Settings(NamedTuple):
  """What a saved file depends on: `hash` (the fingerprint a file is matched on, as before fields were recorded) and
  `fields` ({"section.field": value}, saved beside it so that a file whose hash differs only because rlsel has
  since gained a field, left at its default, still counts; `rlsel.results.changed_fields`)."""
  hash: str
  fields: dict


def settings_of(*named) -> Settings:
  """Settings of (name, part) pairs: a part is a config section (anything with `to_json`, flattened under its name),
  a JSON scalar or an array (kept by its fingerprint). The hash is `fingerprint` of the parts in order."""
  from rlsel.checkpoint import fingerprint
  from rlsel.configlib import flat_items
  fields = {}
  for name, part in named:
    if hasattr(part, "to_json"):
      fields.update(flat_items(json.loads(part.to_json()), name + "."))
    else:
      fields[name] = fingerprint(part) if hasattr(part, "shape") else part
  return Settings(fingerprint(*(p for _, p in named)), json.loads(json.dumps(fields, default=repr)))


def subset_settings(config, seed: int) -> Settings:
  """What a saved subset (its draw and proxy report) depends on."""
  from rlsel import features
  return settings_of(("task", config.task), ("data", config.data), ("features", features.identity(config.features)),
                     ("budget", config.budget), ("proxy", subset_proxy_fields(config)), ("kmeans", config.kmeans),
                     ("rl.chunk", config.rl.chunk), ("rl.episode_steps", config.rl.episode_steps), ("seed", seed))


def target_settings(config, seed: int) -> Settings:
  """What the target's fine-tunes depend on (a fine-tune adds its subset's ids and key: `target_file_settings`)."""
  from rlsel import features
  return settings_of(("task", config.task), ("data", config.data), ("features", features.identity(config.features)),
                     ("target", config.target), ("finetune", config.finetune), ("seed", seed))


def target_file_settings(target: Settings, ids, key: int) -> Settings:
  from rlsel.checkpoint import fingerprint
  return Settings(fingerprint(target.hash, ids, key), {**target.fields, "ids": fingerprint(ids), "key": key})


def load_or_make(path, settings: Settings, defaults: dict, make):
  """The saved row at `path` if it was made under `settings` (`defaults`: the fields' values in a base config, for
  fields the file predates); else UserError naming what changed. Without a file, `make()` it and save."""
  from rlsel.errors import UserError
  from rlsel.io import atomic_write_json
  from rlsel.results import changed_fields
  if path.exists():
    row = json.loads(path.read_text())
    if row.get("settings") != settings.hash:
      before = row.get("settings_fields")
      diff = (["its settings were not recorded (a file from before 2026-12-07)"] if before is None else
              [f"{k}: {before.get(k, '?')!r} -> {settings.fields.get(k, '?')!r}"
               for k in changed_fields(before, settings.fields, defaults)])
      if diff:
        raise UserError(f"{path} was written under other settings ({'; '.join(diff[:5])}"
                        f"{'; ...' if len(diff) > 5 else ''}); move {path.parent} away or use another --workdir")
    return row, False
  row = {**make(), "settings": settings.hash, "settings_fields": settings.fields}
  atomic_write_json(path, row)
  return row, True


def test_retest(accuracies) -> dict:
  """From per-subset target accuracies [subsets][keys]: the Pearson r and Spearman rho of key 0 against key 1 across
  subsets, the noise ceiling sqrt(r) on any score's correlation with one fine-tune, and the ceiling for the mean of
  all K keys, sqrt(K r / (1 + (K - 1) r)) (Spearman-Brown). Ceilings are None when r is undefined or r <= 0; all
  None with fewer than 2 keys."""
  out = dict.fromkeys(("test_retest_pearson", "test_retest_spearman", "noise_ceiling", "noise_ceiling_of_mean"))
  keys = min((len(a) for a in accuracies), default=0)
  if keys < 2:
    return out
  a0, a1 = [a[0] for a in accuracies], [a[1] for a in accuracies]
  r = pearson(a0, a1)
  out.update(test_retest_pearson=r, test_retest_spearman=spearman(a0, a1))
  if r is not None and r > 0:
    out.update(noise_ceiling=math.sqrt(r), noise_ceiling_of_mean=math.sqrt(keys * r / (1 + (keys - 1) * r)))
  return out


def _stats(values) -> dict:
  import numpy as np
  v = np.asarray(values, np.float64)
  return {"n": int(v.size), "target_mean": float(v.mean()) if v.size else None,
          "target_std": float(v.std()) if v.size else None}


# config.proxy fields a subset's draw and proxy report never read: left out of the saved subsets' settings, so that
# adding one to rlsel keeps a long study's saved work valid.
_UNREAD_PROXY_FIELDS = ("rescore_keys",)


class _Json(str):
  """A JSON text that `fingerprint` hashes as it would a ConfigDict's `to_json()`."""

  def to_json(self) -> str:
    return str(self)


def subset_proxy_fields(config) -> _Json:
  """config.proxy as JSON (its own field order) without `_UNREAD_PROXY_FIELDS`, for the subsets' fingerprint."""
  d = json.loads(config.proxy.to_json())
  for f in _UNREAD_PROXY_FIELDS:
    d.pop(f, None)
  return _Json(json.dumps(d))


def reward_positions(config, pool, run_seed: int):
  """Reward-split positions of pool.train in the environment `rl_env` builds for run seed `run_seed`."""
  import jax

  from rlsel.env.build import split_reward
  from rlsel.selectors.basic import numpy_rng
  from rlsel.selectors.rl import select_keys
  k_env = select_keys(jax.random.fold_in(jax.random.key(run_seed), 0)).env
  return split_reward(numpy_rng(k_env), config, pool.train.labels)[1]


def within_family(rows) -> dict:
  """The target's test-retest beyond the families' levels: key 0 against key 1 with each family's mean removed
  (`test_retest` on the residuals), so the ceiling says how far any score can order subsets *within* a family (e.g.
  one random subset against another), which is what a search among similar subsets needs; None entries where the
  families leave no shared variation."""
  fams = [r["family"] for r in rows]
  keys = min((len(r["target_test_accuracy"]) for r in rows), default=0)
  res = [within_groups([r["target_test_accuracy"][j] for r in rows], fams) for j in range(keys)]
  return test_retest([[res[j][i] for j in range(keys)] for i in range(len(rows))])


def design_report(scores, rows, ceiling, reference=None) -> dict:
  """One design's ranking of the subsets against the target: Spearman against key 0 and against the mean over
  keys (with a 95% interval), Pearson against the mean, that Spearman's ratio to `ceiling` (the noise ceiling of the
  mean over keys), the pooled within-family Spearman against the mean (ranks within each family; its interval over
  n - families + 1 points), and with `reference` (another design's scores of the same subsets, today's reward) the
  paired bootstrap difference of the two Spearmans."""
  t0 = [r["target_test_accuracy"][0] for r in rows]
  tm = [r["target_test_accuracy_mean"] for r in rows]
  fams = [r["family"] for r in rows]
  rho = spearman(scores, tm)
  within = within_groups_spearman(scores, tm, fams)
  out = {"spearman_vs_target": spearman(scores, t0), "spearman_vs_target_mean": rho,
         "spearman_ci": list(spearman_interval(rho, len(tm))), "pearson_vs_target_mean": pearson(scores, tm),
         "ratio_to_ceiling": None if ceiling is None or rho is None else rho / ceiling,
         "spearman_within_family": within,
         "spearman_within_family_ci": list(spearman_interval(within, len(tm) - len(set(fams)) + 1))}
  if reference is not None:
    out["spearman_minus_head"] = spearman_difference(scores, reference, tm)
  return out


def run(config, workdir: str, subsets: int, seed: int, families=DEFAULT_FAMILIES, retest: int = 2, shard=(0, 1),
        designs=("head",), finetune: bool = True, keep_saved: bool = False) -> dict:
  import jax
  import numpy as np

  from rlsel import harness, results
  from rlsel.errors import require
  from rlsel.io import atomic_write_json
  from rlsel.selectors import base as selbase
  from rlsel.env.build import standardise

  families = parse_families(families if isinstance(families, str) else ",".join(families))
  require(subsets >= 3, f"--subsets={subsets}: a rank correlation needs at least 3 subsets (30 or more is sensible)")
  require(subsets >= len(families), f"--subsets={subsets} is fewer than the {len(families)} families in --families")
  require(retest >= 1, f"--retest_keys={retest} must be at least 1 (2 or more for the test-retest noise ceiling)")
  require("noisy" not in families or float(config.data.label_noise) > 0, "--families=noisy draws subsets by their "
          "share of changed labels and needs a noised pool: set --config.data.label_noise (e.g. 0.3)")
  shard_i, shards = shard
  from rlsel.bench import proxy_designs
  designs = proxy_designs.parse_designs(designs if isinstance(designs, str) else ",".join(designs))
  require(int(config.proxy.pca_dim) == 0, "proxy_fidelity scores the proxy on test embeddings and needs "
          "--config.proxy.pca_dim=0")
  from rlsel import validation
  validation.validate(config)
  validation.check_sections(config, ("rl_ppo",))  # the environment's proxy, clusters and chunks, before any work
  out_dir = pathlib.Path(workdir) / "fidelity"
  out_dir.mkdir(parents=True, exist_ok=True)
  task = harness.load_task_for_run(config, workdir)
  pool, test = harness.build_pool(config, task, workdir)
  budget = selbase.budget_size(float(config.budget), pool.size)
  emb = np.asarray(pool.train.embeddings, np.float32)
  if config.proxy.kind == "transformer":  # the transformer proxy reads tokens
    test_x = jax.numpy.asarray(test.input_ids)
  else:
    test_x = jax.numpy.asarray(standardise(test.embeddings, reference=emb))
  test_y = jax.numpy.asarray(test.labels)

  env_for = functools.partial(rl_env, config, pool, budget)
  score_key = jax.random.key(10_000 + seed)  # one proxy key for every subset: differences come from the subsets
  params, selectable = env_for(seed)
  from rlsel.data.noise import changed_mask
  changed = changed_mask(task, pool.train.ids[selectable])
  cluster = cluster_of(params)
  num_clusters = int(np.asarray(params.sizes).shape[0])
  # Families interleaved (random 0, policy 0, skewed 0, random 1, ...) so a partial run already spans them.
  todo = sorted(plan(subsets, families), key=lambda t: (t[1], FAMILIES.index(t[0])))
  counts = family_counts(subsets, families)
  print(f"{task.name}: pool {pool.size}, budget {budget}, selectable {selectable.shape[0]}, reward split "
        f"{params.proxy.rx.shape[0]}, {num_clusters} clusters; {subsets} subsets ("
        + ", ".join(f"{n} {f}" for f, n in counts.items()) + f") x {retest} fine-tune key set(s)", flush=True)
  # What each saved file depends on: a file from other settings is refused rather than mixed in.
  from rlsel import configlib
  subset_set, target_set = subset_settings(config, seed), target_settings(config, seed)
  base = configlib.base_config()
  subset_defaults, target_defaults = subset_settings(base, seed).fields, target_settings(base, seed).fields
  rows, inits, missing, kept, from_saved = [], {}, 0, [], 0
  # Positions index `scored_rows` (pool.train positions): the selectable rows, then any row a kept saved subset holds
  # that this run's environment does not offer (`--keep_saved_subsets`), so the designs can score every subset.
  scored_rows = [int(v) for v in selectable]
  where = {int(pool.train.ids[v]): j for j, v in enumerate(scored_rows)}
  pool_where = {int(v): j for j, v in enumerate(pool.train.ids)}
  for n, (fam, i, strength) in enumerate(todo):
    stem = f"{task.name}-s{seed}-{fam}-{i:03d}"
    pos = draw_subset(fam, i, strength, seed, params, cluster, budget, changed)
    ids = pool.train.ids[selectable[pos]]
    hist = np.bincount(cluster[pos], minlength=num_clusters)

    def make_subset():
      return {"family": fam, "index": i, "strength": strength, "ids": [int(v) for v in ids],
              "cluster_counts": hist.tolist(),
              **_proxy_report(score_key, params.proxy_spec, params.proxy, pos, test_x, test_y)}

    row, _ = load_or_make(out_dir / f"subset-{stem}.json", subset_set, subset_defaults, make_subset)
    if row["ids"] != [int(v) for v in ids]:
      require(keep_saved, f"{out_dir / f'subset-{stem}.json'} holds other ids than this run draws (another machine's "
              "draw, or other code); pass --keep_saved_subsets to continue with the saved subsets, or move "
              f"{out_dir} away or use another --workdir")
      ids = np.asarray(row["ids"], np.int64)
      for v in ids:
        if int(v) not in where:
          where[int(v)] = len(scored_rows)
          scored_rows.append(pool_where[int(v)])
      pos = np.asarray([where[int(v)] for v in ids])
      hist = np.asarray(row["cluster_counts"])
      from_saved += 1
    accs, secs, fresh = [], 0.0, False
    mine = finetune and n % shards == shard_i
    for j in range(retest):
      name = f"{fam} subset {i} key {j}"
      path = out_dir / f"target-{stem}-k{j}.json"
      if not mine and not path.exists():  # another shard's fine-tune, not made yet
        break
      res, made = load_or_make(
          path, target_file_settings(target_set, ids, j), target_defaults,
          lambda: {"key": j, **_target_accuracy(config, pool, test, ids, seed, j, name, inits)})
      accs.append(float(res["target_test_accuracy"]))
      secs += float(res["finetune_seconds"]) if made else 0.0
      fresh |= made
    if len(accs) < retest:
      missing += 1
      continue
    row = {k: v for k, v in row.items() if k not in ("ids", "settings", "settings_fields")}
    row.update(target_test_accuracy=accs, target_test_accuracy_mean=float(np.mean(accs)),
               max_cluster_share=float(hist.max() / budget),
               changed_label_share=float(changed_mask(task, ids).mean()))
    rows.append(row)
    kept.append(pos)
    if fresh:
      print(f"subset {n + 1}/{len(todo)} ({fam}{'' if strength is None else f', alpha {strength:g}'}): proxy reward "
            f"score {row['proxy_reward_score']:.4f}, target test accuracy "
            + " / ".join(f"{a:.4f}" for a in accs) + f" (fine-tunes {secs:.0f}s)", flush=True)

  require(len(rows) >= 3, f"only {len(rows)} of {len(todo)} subsets have all {retest} fine-tunes so far (the other "
          "shards are still running): run again without --shard once they finish")
  proxy_s = [r["proxy_reward_score"] for r in rows]
  proxy_a = [r["proxy_reward_accuracy"] for r in rows]
  target0 = [r["target_test_accuracy"][0] for r in rows]
  target_mean = [r["target_test_accuracy_mean"] for r in rows]
  tt = test_retest([r["target_test_accuracy"] for r in rows])
  ceiling, ceiling_mean = tt["noise_ceiling"], tt["noise_ceiling_of_mean"]
  rho_mean = spearman(proxy_s, target_mean)
  ctx = proxy_designs.Context(config=config, pool=pool, test=test, env_params=params, selectable=selectable,
                              reward=reward_positions(config, pool, seed), seed=seed, budget=budget, out_dir=out_dir,
                              score_key=score_key, rows=np.asarray(scored_rows, selectable.dtype))
  scored = proxy_designs.evaluate(designs, ctx, kept)
  design_rows = {name: {**{k: v for k, v in d.items() if k != "scores"},
                        **design_report(d["scores"], rows, ceiling_mean,
                                        scored["head"]["scores"] if "head" in scored and name != "head" else None)}
                 for name, d in scored.items()}
  for name, d in scored.items():
    for r, v in zip(rows, d["scores"]):
      r.setdefault("designs", {})[name] = v
  fams = {}
  for fam in families:
    fr = [r for r in rows if r["family"] == fam]
    fams[fam] = {**_stats([r["target_test_accuracy_mean"] for r in fr]),
                 "mean_max_cluster_share": float(np.mean([r["max_cluster_share"] for r in fr])),
                 "mean_changed_label_share": float(np.mean([r["changed_label_share"] for r in fr])),
                 "spearman_proxy_score_vs_target_mean": spearman([r["proxy_reward_score"] for r in fr],
                                                                 [r["target_test_accuracy_mean"] for r in fr]),
                 "test_retest_pearson": test_retest([r["target_test_accuracy"] for r in fr])["test_retest_pearson"]}
  summary = {"task": task.name, "seed": seed, "budget": budget, "subsets": subsets, "retest_keys": retest,
             "subsets_complete": len(rows), "subsets_missing": missing, "subsets_kept_from_saved_draws": from_saved,
             "num_clusters": num_clusters,
             "spearman_proxy_score_vs_target": spearman(proxy_s, target0),
             "spearman_proxy_accuracy_vs_target": spearman(proxy_a, target0),
             "spearman_proxy_test_vs_target": spearman([r["proxy_test_accuracy"] for r in rows], target0),
             "spearman_proxy_score_vs_target_mean": rho_mean,
             **tt, "ratio_to_ceiling": None if ceiling is None or rho_mean is None else rho_mean / ceiling,
             "ratio_to_ceiling_of_mean": None if ceiling_mean is None or rho_mean is None else rho_mean / ceiling_mean,
             "families": fams, "within_family": within_family(rows), "designs": design_rows,
             "target_test_accuracy_range": [float(min(target_mean)), float(max(target_mean))],
             "proxy_reward_score_range": [float(min(proxy_s)), float(max(proxy_s))], "rows": rows}

  chosen = [r for r in results.load_rows(workdir)
            if r["task"] == task.name and r["budget"] == float(config.budget) and r["selector"] != "random"
            and r["n_selected"] == budget]
  gaps, envs = [], {}
  for r in chosen:
    sel_path = pathlib.Path(workdir) / "selections" / f"{harness.cell_name(r['selector'], task.name, r['seed'])}.json"
    if not sel_path.exists():
      continue
    if r["seed"] not in envs:
      envs[r["seed"]] = (params, selectable) if r["seed"] == seed else env_for(r["seed"])
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
  rand = [r for r in rows if r["family"] == "random"]
  rand_gap = float(np.mean([r["proxy_reward_accuracy"] - r["proxy_test_accuracy"] for r in rand])) if rand else None
  summary.update(chosen=gaps, random_mean_gap_proxy_reward_minus_proxy_test=rand_gap)
  atomic_write_json(out_dir / f"summary-{task.name}-s{seed}.json", summary)
  return summary


def main(argv) -> None:
  del argv
  from rlsel.errors import UserError, fail

  if not _WORKDIR.value:
    fail("proxy_fidelity", "--workdir is required: a main-command workdir for the same config")
  try:
    s = run(_CONFIG.value, _WORKDIR.value, _SUBSETS.value, _SEED.value, _FAMILIES.value, _RETEST_KEYS.value,
            parse_shard(_SHARD.value), _DESIGNS.value, _FINETUNE.value, _KEEP_SAVED.value)
  except UserError as e:
    fail("proxy_fidelity", str(e))
  print(f"\n{s['task']}, seed {s['seed']}, budget {s['budget']}: {s['subsets']} subsets x {s['retest_keys']} "
        f"fine-tune key set(s)" + (f"; {s['subsets_missing']} not fine-tuned yet (other shards), left out"
                                   if s["subsets_missing"] else ""))
  if s["subsets_kept_from_saved_draws"]:
    print(f"  {s['subsets_kept_from_saved_draws']} saved subset(s) differ from this run's draw and were kept as saved "
          "(--keep_saved_subsets)")
  print(f"  target test accuracy (mean over keys) {s['target_test_accuracy_range'][0]:.4f} .. "
        f"{s['target_test_accuracy_range'][1]:.4f}")
  print("\n| family | subsets | target acc mean | target acc std | max cluster share | changed labels | "
        "Spearman(proxy, target) | target test-retest r |")
  print("|---|---|---|---|---|---|---|---|")
  for name, f in s["families"].items():
    print(f"| {name} | {f['n']} | {f['target_mean']:.4f} | {f['target_std']:.4f} | {f['mean_max_cluster_share']:.3f} "
          f"| {f['mean_changed_label_share']:.3f} | {_fmt(f['spearman_proxy_score_vs_target_mean'])} | "
          f"{_fmt(f['test_retest_pearson'])} |")
  print()
  if s["retest_keys"] >= 2:
    print(f"  target test-retest (key 0 vs key 1): Pearson r = {_fmt(s['test_retest_pearson'])}, "
          f"Spearman = {_fmt(s['test_retest_spearman'])}")
    print(f"  noise ceiling sqrt(r) = {_fmt(s['noise_ceiling'], '.3f')} (for one fine-tune; for the mean of "
          f"{s['retest_keys']} keys {_fmt(s['noise_ceiling_of_mean'], '.3f')})")
    w = s["within_family"]
    print(f"  within families (each family's mean removed): test-retest r = {_fmt(w['test_retest_pearson'])}, "
          f"ceiling {_fmt(w['noise_ceiling'], '.3f')} (mean of {s['retest_keys']} keys "
          f"{_fmt(w['noise_ceiling_of_mean'], '.3f')})")
  else:
    print("  test-retest and noise ceiling skipped: --retest_keys=1 fine-tunes each subset once (use 2 or more)")
  print(f"  Spearman(proxy reward score, target test acc)    = {_fmt(s['spearman_proxy_score_vs_target'])}")
  print(f"  Spearman(proxy reward accuracy, target test acc) = {_fmt(s['spearman_proxy_accuracy_vs_target'])}")
  print(f"  Spearman(proxy test accuracy, target test acc)   = {_fmt(s['spearman_proxy_test_vs_target'])}")
  print(f"  Spearman(proxy reward score, target mean over keys) = {_fmt(s['spearman_proxy_score_vs_target_mean'])}, "
        f"ratio to the ceiling {_fmt(s['ratio_to_ceiling'], '.3f')}")
  print("\n| design | Spearman vs target (key 0) | Spearman vs target mean [95%] | ratio to ceiling | minus head "
        "[95%, paired bootstrap] | within families [95%] | s per evaluation | s to prepare |")
  print("|---|---|---|---|---|---|---|---|")
  for name, d in s["designs"].items():
    lo, hi = d.get("spearman_ci") or (None, None)
    ci = "" if lo is None else f" [{lo:+.2f}, {hi:+.2f}]"
    vs = d.get("spearman_minus_head") or {}
    vs_txt = "—" if vs.get("diff") is None else (f"{vs['diff']:+.3f}" + (
        "" if vs.get("ci_low") is None else f" [{vs['ci_low']:+.2f}, {vs['ci_high']:+.2f}]"))
    wlo, whi = d.get("spearman_within_family_ci") or (None, None)
    wci = "" if wlo is None else f" [{wlo:+.2f}, {whi:+.2f}]"
    print(f"| {name} | {_fmt(d['spearman_vs_target'])} | {_fmt(d['spearman_vs_target_mean'])}{ci} | "
          f"{_fmt(d['ratio_to_ceiling'], '.3f')} | {vs_txt} | {_fmt(d.get('spearman_within_family'))}{wci} | "
          f"{d['seconds_per_eval']:.3f} | "
          f"{d['prepare_seconds']:.0f} |")
  if s["random_mean_gap_proxy_reward_minus_proxy_test"] is not None:
    print(f"  random subsets: proxy reward-split minus proxy test accuracy = "
          f"{s['random_mean_gap_proxy_reward_minus_proxy_test']:+.4f}")
  if s["chosen"]:
    print("\n| selector | seed | proxy reward acc | proxy test acc | target test acc | reward - proxy test |")
    print("|---|---|---|---|---|---|")
    for g in s["chosen"]:
      print(f"| {g['selector']} | {g['seed']} | {g['proxy_reward_accuracy']:.4f} | {g['proxy_test_accuracy']:.4f} | "
            f"{g['target_test_accuracy']:.4f} | {g['gap_proxy_reward_minus_proxy_test']:+.4f} |")
  print(f"noise_ceiling_sqrt_r={_fmt(s['noise_ceiling'], '.4f')}")
  print(f"spearman_proxy_vs_target={_fmt(s['spearman_proxy_score_vs_target'], '.4f')}")
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
