"""Proxy designs the fidelity study compares: cheap ways to score a subset, each judged by how well it ranks
subsets the way the fine-tuned target does (`python -m rlsel.bench.proxy_fidelity --designs=...`).

A design is an object: the proxy settings it overrides, the features it reads, how many proxy keys it averages,
which rows it scores on, and whether it is trained the way the incremental environment trains it. `prepare` pays
the one-time cost (e.g. a warm-up fine-tune of the target and re-embedding the pool for task-adapted features) and
`score` scores one subset. Whatever a design learns from stays outside the test split: the warm-up set is drawn
from the selectable rows, `reward+validation` scores on the reward split plus the validation split and
`validation` on the validation split alone (the split the target's own early stopping reads). The
`influence` designs train no proxy: they score a subset by first-order influence at the warmed target (`Influence`);
nor do the label-quality designs, which score a subset by how far an out-of-fold probe trusts its labels
(`LabelQuality`).
"""

import dataclasses
import functools
import json
import pathlib
import time

import numpy as np

INFLUENCE = ("influence", "influence_unit")  # first-order designs: no proxy is trained (`Influence`)
LABEL_QUALITY = ("confidence", "unflagged")  # data-quality designs: no proxy is trained (`LabelQuality`)
FEATURES = ("frozen", "adapted") + INFLUENCE + LABEL_QUALITY
SCORE_ROWS = ("reward", "reward+validation", "validation")
_WARMUP_TAG = 1_000_004  # fold_in / seed tag of the adapted features' warm-up sample and fine-tune keys
PROBE_TAG = 1_000_005  # fold_in tag of the label-quality designs' out-of-fold probe


@dataclasses.dataclass(frozen=True)
class Design:
  """A proxy design. `overrides`: (field, value) pairs over `config.proxy` (e.g. ("score", "accuracy"));
  `keys`: proxy keys averaged per subset; `incremental_steps` > 0 trains the proxy the way the incremental
  environment does (the subset added chunk by chunk in a random order, that many Adam steps after each chunk)."""
  features: str = "frozen"
  overrides: tuple = ()
  keys: int = 1
  score_rows: str = "reward"
  incremental_steps: int = 0

  def __post_init__(self):
    if self.features not in FEATURES or self.score_rows not in SCORE_ROWS or self.keys < 1:
      raise ValueError(f"bad design {self}")


DESIGNS = {
    "head": Design(),                                               # today's reward: logistic head, 30 steps, -log-loss
    "head_accuracy": Design(overrides=(("score", "accuracy"),)),
    "head_balanced": Design(overrides=(("score", "balanced_neg_log_loss"),)),  # the class prior cannot move it
    "head_keys5": Design(keys=5),
    "head_steps300": Design(overrides=(("steps", 300),)),
    "head_validation": Design(score_rows="reward+validation"),      # a larger scoring split
    "head_val_only": Design(score_rows="validation"),               # scored where the target is early-stopped
    "head_val_only_accuracy": Design(score_rows="validation", overrides=(("score", "accuracy"),)),
    "incremental_val_only": Design(score_rows="validation", incremental_steps=2),
    "mlp": Design(overrides=(("hidden", 256),)),
    "incremental": Design(incremental_steps=2),                     # the carried proxy of `proxy.incremental_steps=2`
    "adapted": Design(features="adapted"),
    "adapted_steps300": Design(features="adapted", overrides=(("steps", 300),)),
    "transformer": Design(overrides=(("kind", "transformer"), ("batch_size", 16))),
    "influence": Design(features="influence"),            # subset mean gradient . reward-split mean gradient
    "influence_unit": Design(features="influence_unit"),  # the same with unit per-example gradients (LESS's cosine)
    "confidence": Design(features="confidence"),  # mean out-of-fold probability of each row's given label
    "unflagged": Design(features="unflagged"),    # share of rows confident learning does not flag
}
CHEAP = ("head", "head_accuracy", "head_balanced", "head_keys5", "head_steps300", "head_validation", "head_val_only",
         "head_val_only_accuracy", "mlp", "incremental", "incremental_val_only", "confidence", "unflagged")


def parse_designs(value: str) -> tuple:
  """`--designs` as a tuple of known names (`cheap` expands to the designs without a warm-up or a transformer,
  `all` to every design); UserError for an unknown name."""
  from rlsel.errors import require
  names = []
  for v in (x.strip() for x in str(value).split(",") if x.strip()):
    names += list(CHEAP) if v == "cheap" else list(DESIGNS) if v == "all" else [v]
  unknown = [n for n in names if n not in DESIGNS]
  require(not unknown, f"--designs: unknown design {unknown[0] if unknown else ''!r}; choose from cheap, all, "
          + ", ".join(DESIGNS))
  require(names, f"--designs={value!r} names no design")
  return tuple(dict.fromkeys(names))


@dataclasses.dataclass
class Context:
  """What every design reads: the run's config, pool and test split, the environment the RL selectors build for the
  seed (its proxy data and the selectable / reward positions of pool.train), and where to cache. A subset's
  positions index `rows` (pool.train positions; default the selectable ones; proxy_fidelity appends rows that a
  saved subset drawn on another machine holds)."""
  config: object
  pool: object
  test: object
  env_params: object
  selectable: np.ndarray
  reward: np.ndarray
  seed: int
  budget: int
  out_dir: pathlib.Path
  score_key: object
  rows: np.ndarray = None
  memo: dict = dataclasses.field(default_factory=dict, repr=False)  # results shared by designs (`oof_probs`)

  def __post_init__(self):
    if self.rows is None:
      self.rows = self.selectable


def _proxy_config(config, overrides):
  c = config.copy_and_resolve_references()
  for field, value in overrides:
    c.proxy[field] = value
  return c


def warmed_target(ctx: Context):
  """(module, params, meta) of the target fine-tuned (the protocol's fine-tune) on a stratified random budget-sized
  warm-up sample of the selectable rows: what the `adapted` and `influence` designs start from. The params are cached
  in ctx.out_dir (msgpack) with the sample size, the seconds and the validation accuracy."""
  import jax
  from flax import serialization

  from rlsel.checkpoint import fingerprint
  from rlsel import features
  from rlsel.io import atomic_write_bytes, atomic_write_json
  from rlsel.selectors.basic import stratified_sample
  from rlsel.target import finetune as ft
  from rlsel.target import model as target_model

  config, pool = ctx.config, ctx.pool
  settings = fingerprint(config.task, config.data, features.identity(config.features), config.target, config.finetune,
                         config.budget, config.proxy.reward_fraction, ctx.seed, "warmed-v1")
  stem = ctx.out_dir / f"warmed-{pool.task}-s{ctx.seed}"
  root = jax.random.fold_in(jax.random.key(ctx.seed), _WARMUP_TAG)
  module, params = target_model.build(config, pool.num_classes, key=jax.random.fold_in(root, 1))
  meta_path, params_path = stem.with_suffix(".json"), stem.with_suffix(".msgpack")
  if meta_path.exists() and params_path.exists() and json.loads(meta_path.read_text()).get("settings") == settings:
    return module, serialization.from_bytes(params, params_path.read_bytes()), json.loads(meta_path.read_text())
  rng = np.random.default_rng([ctx.seed, _WARMUP_TAG])
  warm = ctx.selectable[stratified_sample(rng, pool.train.labels[ctx.selectable], ctx.budget)]
  res = ft.finetune(jax.random.fold_in(root, 2), config, module, params, pool.train.take(np.sort(warm)),
                    pool.validation, log_prefix="warm-up finetune (proxy designs)")
  meta = {"settings": settings, "warmup_examples": int(warm.shape[0]), "warmup_seconds": float(res.seconds),
          "warmup_best_step": int(res.best_step), "warmup_val_accuracy": float(res.val_accuracy)}
  atomic_write_bytes(params_path, serialization.to_bytes(res.params))
  atomic_write_json(meta_path, meta)
  return module, res.params, meta


def _cached_arrays(stem: pathlib.Path, settings: str, names) -> dict:
  """{name: array} from `stem`-name.npy plus the meta in `stem`.json when all are there for `settings`, else None."""
  meta_path = stem.with_suffix(".json")
  files = [pathlib.Path(f"{stem}-{n}.npy") for n in names]
  if not (meta_path.exists() and all(f.exists() for f in files)):
    return None
  meta = json.loads(meta_path.read_text())
  if meta.get("settings") != settings:
    return None
  return {**{n: np.load(f) for n, f in zip(names, files)}, **meta}


def adapted_embeddings(ctx: Context) -> dict:
  """Task-adapted features {train, validation} of the pool: every row re-embedded with the encoder of the warmed
  target (`warmed_target`; mean pooling, as the frozen features). Cached in ctx.out_dir with the seconds each part
  took."""
  from rlsel import features
  from rlsel.errors import require
  from rlsel.io import atomic_save_npy, atomic_write_json
  from rlsel.target import model as target_model

  config, pool = ctx.config, ctx.pool
  require(target_model.shares_feature_tokens(config), "the adapted design re-embeds the pool with the target's "
          "encoder and needs a BERT target (target.kind=minilm or tiny)")
  module, params, warm = warmed_target(ctx)
  settings = warm["settings"] + "-adapted-v2"
  stem = ctx.out_dir / f"adapted-{pool.task}-s{ctx.seed}"
  cached = _cached_arrays(stem, settings, ("train", "validation"))
  if cached is not None:
    return cached
  encoder = (target_model.Encoder(module.config), params["encoder"])
  t0 = time.time()
  out = {}
  for split, data in (("train", pool.train), ("validation", pool.validation)):
    toks = {"input_ids": data.input_ids, "attention_mask": data.attention_mask, "token_type_ids": data.token_type_ids}
    out[split] = features.embed_tokens(toks, int(config.features.batch_size), f"adapted embedding {split}", encoder,
                                       int(config.features.length_multiple))
    atomic_save_npy(pathlib.Path(f"{stem}-{split}.npy"), out[split])
  meta = {**warm, "settings": settings, "embed_seconds": time.time() - t0}
  atomic_write_json(stem.with_suffix(".json"), meta)
  return {**out, **meta}


def influence_features(ctx: Context) -> dict:
  """{"train": [n, d]} projected per-example loss gradients of every pool row at the warmed target
  (`warmed_target`), in the gradient selectors' scope and projection (`config.selection`: by default the last layer
  and the head, Kronecker-projected). Cached in ctx.out_dir with the seconds they took."""
  import jax

  from rlsel.checkpoint import fingerprint
  from rlsel.io import atomic_save_npy, atomic_write_json
  from rlsel.selectors import gradients

  config, pool = ctx.config, ctx.pool
  module, params, warm = warmed_target(ctx)
  s = config.selection
  settings = fingerprint(warm["settings"], "influence-v1", s.param_scope, s.last_k, s.projection_dim,
                         s.projection_kind, tuple(s.head_patterns), s.layer_pattern)
  stem = ctx.out_dir / f"influence-{pool.task}-s{ctx.seed}"
  cached = _cached_arrays(stem, settings, ("train",))
  if cached is not None:
    return cached
  t0 = time.time()
  fns = gradients.ModelFns(gradients.module_apply(module), params)
  paths = gradients.select_paths(params, s.param_scope, int(s.last_k), tuple(s.head_patterns), s.layer_pattern)
  projector = gradients.make_projector(jax.random.fold_in(jax.random.key(ctx.seed), _WARMUP_TAG + 1), s,
                                       gradients.leaf_shapes(params, paths), sparse=False)
  feats = gradients.gradient_features(fns, params, pool.train, paths, projector, int(s.grad_batch_size),
                                      progress=True, label="influence gradients",
                                      length_multiple=int(config.features.length_multiple))
  atomic_save_npy(pathlib.Path(f"{stem}-train.npy"), feats)
  meta = {**warm, "settings": settings, "gradient_seconds": time.time() - t0, **projector.describe()}
  atomic_write_json(stem.with_suffix(".json"), meta)
  return {"train": feats, **meta}


class Influence:
  """A first-order design: the subset's mean per-example gradient dotted with the reward split's mean gradient, at
  the warmed target. Up to the step size, the decrease of the reward split's loss after one gradient step on the
  subset. `influence_unit` normalises each example's gradient first (LESS's cosine), so long or confidently wrong
  examples do not dominate. Per-row scores are computed once, so a subset costs a mean over its rows."""

  def __init__(self, name: str, design: "Design", ctx: Context):
    self.name, self.design = name, design
    feats = influence_features(ctx)
    t0 = time.time()  # the warm-up's and gradients' own seconds (cached or not) are added below, once
    self.info = {k: v for k, v in feats.items() if k not in ("train", "settings")}
    g = np.asarray(feats["train"], np.float64)
    if design.features == "influence_unit":
      g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    self.row_scores = g[ctx.rows] @ g[ctx.reward].mean(0)
    self.prepare_seconds = time.time() - t0 + sum(float(self.info.get(k, 0.0)) for k in ("warmup_seconds",
                                                                                          "gradient_seconds"))

  def score(self, positions) -> float:
    return float(np.mean(self.row_scores[np.asarray(positions)]))


def oof_probs(ctx: Context):
  """(the out-of-fold linear probe's probabilities [pool.train rows, C], the seconds the fit took):
  `coverage.configured_oof_probs`, the probe of `label_clean` and `ccs`, on the whole pool's frozen embeddings. Fit
  once per context and shared by the label-quality designs, each of which counts its seconds."""
  if "oof_probs" not in ctx.memo:
    import jax

    from rlsel.selectors import coverage
    t0 = time.time()
    probs = coverage.configured_oof_probs(
        jax.random.fold_in(ctx.score_key, PROBE_TAG), ctx.config, np.asarray(ctx.pool.train.embeddings, np.float32),
        np.asarray(ctx.pool.train.labels, np.int32), ctx.pool.num_classes)
    ctx.memo["oof_probs"] = (probs, time.time() - t0)
  return ctx.memo["oof_probs"]


class LabelQuality:
  """A data-quality design: no proxy is trained. The out-of-fold linear probe of `label_clean` and `ccs`
  (`coverage.configured_oof_probs`, selection.probe_* settings) is fit once on the whole pool's frozen embeddings;
  `confidence` scores a subset by the mean probability of its rows' given labels, `unflagged` by the share of its
  rows confident learning does not flag (selection.clean_filter_by). It asks whether the target rewards rows whose
  labels agree with their neighbours' more than a proxy's fine-tune can tell."""

  def __init__(self, name: str, design: "Design", ctx: Context):
    from rlsel.selectors import coverage
    self.name, self.design, self.info = name, design, {}
    labels = np.asarray(ctx.pool.train.labels, np.int32)
    probs, probe_seconds = oof_probs(ctx)
    t0 = time.time() - probe_seconds  # the probe's fit counts for every design that reads it, cached or not
    if design.features == "confidence":
      row = probs[np.arange(labels.shape[0]), labels]
    else:
      row = ~coverage.label_issues(labels, probs, str(ctx.config.selection.clean_filter_by), f"design {name}")
      self.info = {"flagged_share_of_pool": float(1.0 - row.mean())}
    self.row_scores = np.asarray(row, np.float64)[np.asarray(ctx.rows)]
    self.prepare_seconds = time.time() - t0

  def score(self, positions) -> float:
    return float(np.mean(self.row_scores[np.asarray(positions)]))


def prepare(name: str, ctx: Context):
  """The design `name` made ready for `ctx`: an object with `score(positions)`, `prepare_seconds` and `info`."""
  design = DESIGNS[name]
  if design.features in INFLUENCE:
    return Influence(name, design, ctx)
  if design.features in LABEL_QUALITY:
    return LabelQuality(name, design, ctx)
  return Prepared(name, design, ctx)


class Prepared:
  """A design made ready for one context: its spec and proxy data, and a jitted scorer of subset positions."""

  def __init__(self, name: str, design: Design, ctx: Context):
    import jax
    import jax.numpy as jnp

    from rlsel import proxy as proxy_lib
    from rlsel.env.build import standardise
    t0 = time.time()
    self.name, self.design, self.info = name, design, {}
    config = _proxy_config(ctx.config, design.overrides)
    spec = proxy_lib.spec_from_config(config, ctx.pool.num_classes)
    base = ctx.env_params.proxy
    val_emb = ctx.pool.validation.embeddings
    if spec.kind == "transformer":
      toks = np.asarray(ctx.pool.train.input_ids, np.int32)
      x, rx = toks[ctx.rows], toks[ctx.reward]
      vx = np.asarray(ctx.pool.validation.input_ids, np.int32)
    else:
      if design.features == "adapted":
        t1 = time.time()
        emb = adapted_embeddings(ctx)
        t0 += time.time() - t1  # counted below as the warm-up's and embedding's own seconds, cached or not
        self.info = {k: v for k, v in emb.items() if k not in ("train", "validation", "settings")}
        train_emb, val_emb = emb["train"], emb["validation"]
      else:
        train_emb = np.asarray(ctx.pool.train.embeddings, np.float32)
      z = standardise(train_emb)
      x, rx = z[ctx.rows], z[ctx.reward]
      vx = standardise(val_emb, reference=train_emb)
    ry = np.asarray(ctx.pool.train.labels, np.int32)[ctx.reward]
    vy = np.asarray(ctx.pool.validation.labels, np.int32)
    if design.score_rows == "reward+validation":
      rx, ry = np.concatenate([rx, vx]), np.concatenate([ry, vy])
    elif design.score_rows == "validation":
      rx, ry = vx, vy
    same_init = spec.kind == "head" and design.features == "frozen" and spec.hidden == ctx.env_params.proxy_spec.hidden
    init = base.init_params if same_init else proxy_lib.init_params(
        jax.random.fold_in(ctx.score_key, 1), spec, x.shape[1])
    self.spec = spec
    y = base.y  # the environment's labels of its selectable rows, then those of any rows appended after them
    extra = np.asarray(ctx.rows)[len(ctx.selectable):]
    if extra.size:
      y = jnp.concatenate([y, jnp.asarray(np.asarray(ctx.pool.train.labels)[extra], y.dtype)])
    self.data = proxy_lib.ProxyData(x=jnp.asarray(x), y=y, rx=jnp.asarray(rx), ry=jnp.asarray(ry), init_params=init)
    self.key = ctx.score_key
    self.chunk = int(ctx.env_params.chunk)
    self.prepare_seconds = time.time() - t0 + sum(float(self.info.get(k, 0.0)) for k in ("warmup_seconds",
                                                                                          "embed_seconds"))
    self._fn = _scorer(spec, design.incremental_steps, self.chunk)

  def score(self, positions) -> float:
    """The design's score of the subset at `positions` (indices into `Context.rows`): mean over its keys."""
    import jax
    import jax.numpy as jnp
    pos = jnp.asarray(np.sort(np.asarray(positions)), jnp.int32)
    keys = [self.key] + [jax.random.fold_in(self.key, 1000 + k) for k in range(1, self.design.keys)]
    return float(np.mean([float(self._fn(k, self.data, pos)) for k in keys]))


@functools.lru_cache(maxsize=None)
def _scorer(spec, incremental_steps: int, chunk: int):
  """jit(key, data, positions) -> score: fine-tuned from the initial params on the positions (restart), or carried
  through the subset added chunk by chunk in a random order (incremental)."""
  import jax
  import jax.numpy as jnp

  from rlsel import proxy as proxy_lib

  if incremental_steps <= 0:  # the restarted proxy: what the RL reward and the final re-scoring compute
    return lambda key, data, pos: proxy_lib.score_positions(key, spec, data, pos)

  def inc(key, data, pos):
    k_perm, k_train = jax.random.split(key)
    order = jax.random.permutation(k_perm, pos)
    n = order.shape[0]
    steps = -(-n // chunk)

    def one(state, t):
      size = jnp.minimum((t + 1) * chunk, n)
      draw = lambda kk, shape: order[jax.random.randint(kk, shape, 0, size)]
      return proxy_lib.train(jax.random.fold_in(k_train, t), spec, data, state, draw, incremental_steps), None

    state, _ = jax.lax.scan(one, proxy_lib.start(spec, data), jnp.arange(steps))
    return proxy_lib.score(spec, state.params, data.rx, data.ry)

  return jax.jit(inc)


def evaluate(names, ctx: Context, positions) -> dict:
  """{name: {"scores": [per subset], "prepare_seconds", "seconds_per_eval", ...}} for the given designs over the
  subsets at `positions` (a list of position arrays). Seconds per evaluation exclude the first (compiling) call."""
  out = {}
  for name in names:
    prep = prepare(name, ctx)
    scores, t_rest = [prep.score(positions[0])], 0.0
    t0 = time.time()
    for pos in positions[1:]:
      scores.append(prep.score(pos))
    t_rest = time.time() - t0
    per = t_rest / max(1, len(positions) - 1)
    out[name] = {"scores": scores, "prepare_seconds": prep.prepare_seconds, "seconds_per_eval": per, **prep.info}
    print(f"design {name}: {len(scores)} subsets scored, {per:.3f}s per evaluation"
          + (f" (+{prep.prepare_seconds:.0f}s to prepare)" if prep.prepare_seconds > 1 else ""), flush=True)
  return out
