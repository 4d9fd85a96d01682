"""The proxy: a small Flax classifier fine-tuned in `lax.scan`, whose score on the reward split rewards a selection.

`ProxySpec` holds the static choices (hashable, so it can sit in jitted env params); `ProxyData` the arrays
(selectable embeddings and labels, the reward split, the initial parameters every evaluation starts from).
A proxy evaluation = fine-tune from `init_params` for `steps` Adam steps on minibatches drawn from the chosen
examples, then score on the reward split (negative log-loss or accuracy). Deterministic for a key; no Python
branching on traced values, so it jits and vmaps over episodes.

Two kinds (`proxy.kind`):
- `head` (CPU default): a logistic-regression or MLP head on the cached frozen MiniLM embeddings; `x` rows are
  embeddings.
- `transformer` (for GPU/TPU): the target's encoder cut to its first `proxy.transformer_layers` layers (MiniLM's
  pretrained layers when `target.kind="minilm"`), mean-pooled, with a linear head, fine-tuned end to end on tokens;
  `x` rows are token ids (pad id 0 is masked). Dropout is off so an evaluation is a deterministic function of its key.
"""

import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from typing import Optional

from rlsel.errors import UserError

SCORES = ("neg_log_loss", "accuracy", "balanced_neg_log_loss")
KINDS = ("head", "transformer")
# proxy.reward_source: "pool" = a stratified proxy.reward_fraction of the pool, never selectable; "validation" = the
# task's validation split (every pool row selectable; clean where the pool is noisy, but the target's early stopping
# reads the same rows).
REWARD_SOURCES = ("pool", "validation")


@struct.dataclass
class ProxySpec:
  """Static proxy settings (all hashable)."""
  num_classes: int = struct.field(pytree_node=False)
  hidden: int = struct.field(pytree_node=False)
  steps: int = struct.field(pytree_node=False)
  batch_size: int = struct.field(pytree_node=False)
  learning_rate: float = struct.field(pytree_node=False)
  score: str = struct.field(pytree_node=False)
  reward_subsample: int = struct.field(pytree_node=False)
  kind: str = struct.field(pytree_node=False, default="head")
  bert: Optional[object] = struct.field(pytree_node=False, default=None)  # transformer: a frozen BertConfig
  pretrained: bool = struct.field(pytree_node=False, default=False)       # transformer: start from MiniLM's layers


@struct.dataclass
class ProxyData:
  """Arrays the proxy reads: x [N, d] selectable rows (embeddings, or token ids [N, L] for the transformer), y [N],
  the reward split rx [R, d] / ry [R], and the initial params every evaluation starts from."""
  x: jnp.ndarray
  y: jnp.ndarray
  rx: jnp.ndarray
  ry: jnp.ndarray
  init_params: dict


class DenseT(nn.Module):
  """A dense layer with its kernel stored [out, in]: under vmap over episodes, XLA:CPU computes the weight gradient
  (a batched g^T x contraction) about 4x faster in this layout than in flax's [in, out]."""
  features: int

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.lecun_normal(in_axis=1, out_axis=0), (self.features, x.shape[-1]))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    return jnp.einsum("...d,kd->...k", x, w) + b


class Head(nn.Module):
  """MLP (or, with hidden=0, logistic regression) over frozen embeddings."""
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    if self.hidden > 0:
      x = nn.gelu(DenseT(self.hidden)(x))
    return DenseT(self.num_classes)(x)


def spec_from_config(config, num_classes: int) -> ProxySpec:
  """Validates `config.proxy` and returns the static spec."""
  p = config.proxy
  if p.kind not in KINDS:
    raise UserError(f"proxy.kind={p.kind!r} is unknown; choose one of {', '.join(KINDS)}")
  if p.score not in SCORES:
    raise UserError(f"proxy.score={p.score!r} is unknown; choose one of {', '.join(SCORES)}")
  for f in ("steps", "batch_size"):
    if int(p[f]) < 1:
      raise UserError(f"proxy.{f}={p[f]} must be a positive integer")
  bert, pretrained = None, False
  if p.kind == "transformer":
    import dataclasses

    from rlsel.target.model import target_config
    base = target_config(config.target)
    layers = int(p.transformer_layers)
    if not 1 <= layers <= base.num_layers:
      raise UserError(f"proxy.transformer_layers={layers} must be between 1 and the target's {base.num_layers} layers")
    bert = dataclasses.replace(base, num_layers=layers, dropout=0.0)
    pretrained = config.target.kind == "minilm"
  return ProxySpec(num_classes=int(num_classes), hidden=int(p.hidden), steps=int(p.steps),
                   batch_size=int(p.batch_size), learning_rate=float(p.learning_rate), score=str(p.score),
                   reward_subsample=int(p.reward_subsample), kind=str(p.kind), bert=bert, pretrained=pretrained)


def _transformer(spec: ProxySpec):
  from rlsel.target.model import Classifier
  return Classifier(spec.bert, spec.num_classes)


def init_params(key: jax.Array, spec: ProxySpec, dim: int) -> dict:
  """Initial params; `dim` is the embedding width (head) or the token length (transformer)."""
  if spec.kind == "transformer":
    dummy = jnp.zeros((1, dim), jnp.int32)
    params = dict(_transformer(spec).init(key, dummy, jnp.ones_like(dummy), dummy)["params"])
    if spec.pretrained:
      from rlsel.target.model import minilm_encoder_params
      params["encoder"] = minilm_encoder_params(spec.bert.num_layers)
    return params
  return Head(spec.hidden, spec.num_classes).init(key, jnp.zeros((1, dim), jnp.float32))["params"]


def logits_fn(spec: ProxySpec, params: dict, x: jnp.ndarray) -> jnp.ndarray:
  if spec.kind == "transformer":
    ids = x.astype(jnp.int32)
    return _transformer(spec).apply({"params": params}, ids, (ids != 0).astype(jnp.int32), jnp.zeros_like(ids))
  return Head(spec.hidden, spec.num_classes).apply({"params": params}, x)


@struct.dataclass
class ProxyState:
  """A proxy part-way through its fine-tune: what the incremental reward carries from one env step to the next."""
  params: dict
  opt_state: object


def start(spec: ProxySpec, data: ProxyData) -> ProxyState:
  """The untrained proxy: `data.init_params` and fresh Adam moments."""
  return ProxyState(params=data.init_params, opt_state=optax.adam(spec.learning_rate).init(data.init_params))


def train(key: jax.Array, spec: ProxySpec, data: ProxyData, state: ProxyState,
          draw: Callable[[jax.Array, tuple], jnp.ndarray], steps: int) -> ProxyState:
  """`steps` more Adam steps from `state`; `draw(key, (steps, batch)) -> int rows of data.x` for all steps at once
  (one vectorised draw is much cheaper than a PRNG call per step)."""
  tx = optax.adam(spec.learning_rate)

  def loss_fn(p, rows):
    logits = logits_fn(spec, p, data.x[rows])
    return optax.softmax_cross_entropy_with_integer_labels(logits, data.y[rows]).mean()

  def one(carry, rows):
    p, opt = carry
    g = jax.grad(loss_fn)(p, rows)
    upd, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, upd), opt), None

  rows = draw(key, (steps, spec.batch_size))
  (params, opt), _ = jax.lax.scan(one, (state.params, state.opt_state), rows)
  return ProxyState(params=params, opt_state=opt)


def finetune(key: jax.Array, spec: ProxySpec, data: ProxyData, draw: Callable[[jax.Array, tuple], jnp.ndarray],
             steps: int = 0) -> dict:
  """Adam fine-tune from `data.init_params` for `steps` (default `spec.steps`); returns the params."""
  return train(key, spec, data, start(spec, data), draw, steps or spec.steps).params


def score(spec: ProxySpec, params: dict, x: jnp.ndarray, y: jnp.ndarray, weight=None) -> jnp.ndarray:
  """Negative log-loss (default), accuracy, or the class-balanced negative log-loss (the mean over the classes
  present of each class's mean; a selection cannot raise it by shifting the proxy's class prior toward the majority)
  of the proxy on (x, y); optional per-row weights (subsampling)."""
  logits = logits_fn(spec, params, x)
  if spec.score == "accuracy":
    per = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  else:
    per = -optax.softmax_cross_entropy_with_integer_labels(logits, y)
  w = jnp.ones_like(per) if weight is None else weight.astype(per.dtype)
  if spec.score == "balanced_neg_log_loss":
    member = jax.nn.one_hot(y, spec.num_classes, dtype=per.dtype) * w[:, None]   # [R, C]
    count = member.sum(0)
    per_class = (per[:, None] * member).sum(0) / jnp.maximum(count, 1.0)
    present = (count > 0).astype(per.dtype)
    return jnp.sum(per_class * present) / jnp.maximum(present.sum(), 1.0)
  if weight is None:
    return per.mean()
  return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def reward_rows(key: jax.Array, spec: ProxySpec, data: ProxyData) -> jnp.ndarray:
  """Rows of the reward split scored this episode: all of them, or a fresh random subsample."""
  r = data.rx.shape[0]
  if not uses_subsample(spec, data):
    return jnp.zeros((1,), jnp.int32)  # unused: the whole split is scored
  return jax.random.choice(key, r, (spec.reward_subsample,), replace=False).astype(jnp.int32)


def uses_subsample(spec: ProxySpec, data: ProxyData) -> bool:
  return 0 < spec.reward_subsample < data.rx.shape[0]


def reward_score(spec: ProxySpec, params: dict, data: ProxyData, rows: jnp.ndarray) -> jnp.ndarray:
  """Score on the episode's reward rows. Without subsampling the split is used as is: gathering it per episode
  under vmap would copy [num_envs, R, d] on every step."""
  if uses_subsample(spec, data):
    return score(spec, params, data.rx[rows], data.ry[rows])
  return score(spec, params, data.rx, data.ry)


def evaluate(key: jax.Array, spec: ProxySpec, data: ProxyData, draw, rows: jnp.ndarray) -> jnp.ndarray:
  """Fine-tune on the drawn examples, then score on the given reward rows."""
  return reward_score(spec, finetune(key, spec, data, draw), data, rows)


def score_positions(key: jax.Array, spec: ProxySpec, data: ProxyData, positions) -> float:
  """Reward-split score of the proxy fine-tuned on the given rows of `data.x` (e.g. a final selection)."""
  positions = jnp.asarray(positions, jnp.int32)
  chex.assert_rank(positions, 1)
  return float(_score_positions(key, spec, data, positions))


def rescore(key: jax.Array, spec: ProxySpec, data: ProxyData, candidates: dict, keys: int) -> dict:
  """Re-scores candidate subsets ({name: positions}) with `keys` proxy keys (`key`, then fold_ins of it) and returns
  {name: {"scores": [per key], "mean": ...}}. A search keeps the subset its own noisy scores liked best (the
  winner's curse); picking by the mean over keys it never saw removes that bias. Equal position sets are scored once."""
  done, out = {}, {}
  ks = [key] + [jax.random.fold_in(key, 1 + j) for j in range(keys - 1)]
  for name, pos in candidates.items():
    sig = tuple(sorted(int(v) for v in pos))
    if sig not in done:
      rows = jnp.asarray(sig, jnp.int32)
      done[sig] = [float(_score_positions(k, spec, data, rows)) for k in ks]
    out[name] = {"scores": done[sig], "mean": float(sum(done[sig]) / len(done[sig]))}
  return out


def best_by_mean(rescored: dict) -> str:
  """The candidate name with the highest mean re-scored score (the first on ties, in the dict's order)."""
  return max(rescored, key=lambda n: rescored[n]["mean"])


def draw_from(positions: jnp.ndarray) -> Callable[[jax.Array, tuple], jnp.ndarray]:
  """A `draw` for `finetune`: minibatch rows sampled uniformly (with replacement) from the given rows."""
  return lambda kk, shape: positions[jax.random.randint(kk, shape, 0, positions.shape[0])]


@functools.partial(jax.jit, static_argnums=1)
def _score_positions(key, spec, data, pos):
  return score(spec, finetune(key, spec, data, draw_from(pos)), data.rx, data.ry)


def fit_initial(key: jax.Array, spec: ProxySpec, data: ProxyData, positions, steps: int) -> dict:
  """An initial proxy trained on the given rows (e.g. a random budget-sized sample), for cluster features."""
  return _fit_initial(key, spec, data, jnp.asarray(positions, jnp.int32), int(steps))


@functools.partial(jax.jit, static_argnums=(1, 4))
def _fit_initial(key, spec, data, positions, steps):
  return finetune(key, spec, data, draw_from(positions), steps)


def loss_and_entropy(spec: ProxySpec, params: dict, x: jnp.ndarray, y: jnp.ndarray, batch: int = 8192):
  """Per-example cross-entropy and predictive entropy of the proxy, in batches ([n], [n])."""
  if spec.kind == "transformer":
    batch = min(batch, 256)  # attention scores are batch x heads x L x L
  out_l, out_e = [], []
  for i in range(0, x.shape[0], batch):
    l, e = _loss_ent(spec, params, x[i:i + batch], y[i:i + batch])
    out_l.append(l)
    out_e.append(e)
  return jnp.concatenate(out_l), jnp.concatenate(out_e)


@functools.partial(jax.jit, static_argnums=0)
def _loss_ent(spec, params, x, y):
  logits = logits_fn(spec, params, x)
  logp = jax.nn.log_softmax(logits)
  return (optax.softmax_cross_entropy_with_integer_labels(logits, y), -jnp.sum(jnp.exp(logp) * logp, -1))


def forward_flops(spec: ProxySpec, dim: int) -> float:
  """Analytic matmul FLOPs of one example's forward pass; `dim` as in `init_params`."""
  if spec.kind == "transformer":
    b = spec.bert
    return b.num_layers * (2 * (4 * b.hidden_size ** 2 + 2 * b.hidden_size * b.intermediate_size)
                           + 4 * dim * b.hidden_size) * dim
  h = spec.hidden
  return 2 * dim * h + 2 * h * spec.num_classes if h > 0 else 2 * dim * spec.num_classes


def finetune_flops(spec: ProxySpec, dim: int, steps: int = 0) -> float:
  """Analytic FLOPs of `steps` (default `spec.steps`) fine-tune steps (forward + backward ~ 3x the forward)."""
  return 3.0 * forward_flops(spec, dim) * spec.batch_size * (steps or spec.steps)


def score_flops(spec: ProxySpec, dim: int, rows: int) -> float:
  """Analytic FLOPs of scoring `rows` reward-split examples (forward only)."""
  return forward_flops(spec, dim) * rows


def step_bytes(spec: ProxySpec, dim: int, steps: int, rows: int, episodes: int, itemsize: int = 4) -> float:
  """Bytes one env step of one episode must move at least, with `episodes` sharing each read of the reward split:
  each fine-tune step gathers its own minibatch of rows; the reward split is read once per batch of episodes."""
  row = dim * itemsize
  return steps * spec.batch_size * row + rows * row / max(episodes, 1)


def validate(config) -> None:
  """Checks `config.proxy` before any work (rlsel.validation calls it when a chosen selector reads the proxy)."""
  from rlsel.env import TIMINGS
  from rlsel.errors import require, require_choice, require_int, require_number
  p = config.proxy
  require_choice(p.kind, "proxy.kind", KINDS)
  require_choice(p.score, "proxy.score", SCORES)
  require_choice(p.reward_timing, "proxy.reward_timing", TIMINGS)
  require_choice(p.reward_source, "proxy.reward_source", REWARD_SOURCES)
  for f in ("steps", "batch_size", "init_steps", "transformer_layers", "rescore_keys"):
    require_int(p[f], f"proxy.{f}", low=1)
  for f in ("hidden", "reward_subsample", "pca_dim", "incremental_steps"):
    require_int(p[f], f"proxy.{f}", low=0)
  require_number(p.learning_rate, "proxy.learning_rate", low=0, low_open=True)
  require_number(p.reward_fraction, "proxy.reward_fraction", low=0, high=1, low_open=True, high_open=True)
  require_number(p.reward_trusted, "proxy.reward_trusted", low=0, high=1, low_open=True)
  require_number(p.pick_share, "proxy.pick_share", low=0, high=1, high_open=True)
  require(p.reward_source == "pool" or float(p.pick_share) == 0.0,
          f"proxy.pick_share={p.pick_share} splits a reward split carved from the pool; with "
          "proxy.reward_source='validation' leave it at 0")
  require(p.reward_source == "pool" or float(p.reward_trusted) == 1.0,
          f"proxy.reward_trusted={p.reward_trusted} thins a reward split carved from the pool; with "
          "proxy.reward_source='validation' leave it at 1")
  spec_from_config(config, 2)  # the transformer proxy's layer count against the target's
