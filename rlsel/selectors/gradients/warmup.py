"""The warm-up (Adam, checkpoints with their moments: LESS needs them) and the base of the selectors that warm a model
up first, with the one-entry cache that lets the selectors of one seed share a warm-up.
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlsel import features
from rlsel.selectors.base import Split
from rlsel.selectors.gradients.model import ModelFns, batch_of, target_model_fns
from rlsel.selectors.gradients.params import select_paths
from rlsel.target import lora
from rlsel.target.finetune import warmup_decay_lr


class Checkpoint(NamedTuple):
  """The model at the end of a warm-up epoch: params, Adam moments (the tree of the trained params: all of them, or with
  LoRA the adapters and head), Adam step count, mean lr since the previous checkpoint."""
  params: dict
  mu: dict
  nu: dict
  count: int
  lr_mean: float


@functools.partial(jax.jit, static_argnames=("apply", "hparams"))
def _train_step(params, frozen, state, lr, batch, *, apply, hparams):
  """One Adam step on the mean cross-entropy of a batch (compiled once per model and batch shape); `frozen` (a LoRA
  target's base, else {}) gets no gradient."""
  def loss_fn(p):
    logits = apply(lora.combine(p, frozen), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["labels"][:, None], 1))
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, state = optax.scale_by_adam(*hparams).update(grads, state, params)
  params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
  return params, state, loss


def warmup_train(key, fns: ModelFns, params, split: Split, epochs: int, batch_size: int, learning_rate: float,
                 schedule_warmup_fraction: float, adam_hparams=(0.9, 0.999, 1e-8), adam_count0: int = 0,
                 mu=None, nu=None, checkpoints: int = 0) -> list:
  """Adam (linear warm-up then linear decay) on `split` for `epochs`; returns a `Checkpoint` at the end of every
  epoch, or with `checkpoints` = K > 0 at the ends of K evenly spaced epochs (the last one included).

  Batches are fixed-size (the last one wraps around), so the step compiles once. No dropout: the warm-up only has to
  give the gradient selectors a model that has seen the task. `mu`/`nu`/`adam_count0` continue an earlier run (CROPI).
  A target with LoRA adapters trains only them and its head, as its fine-tune does (rlsel/target/lora.py).
  """
  params, frozen = lora.partition(params)
  b1, b2, eps = adam_hparams
  n = len(split)
  steps_per_epoch = max(1, -(-n // batch_size))
  total = steps_per_epoch * epochs
  adam = optax.scale_by_adam(b1, b2, eps)
  state = adam.init(params)
  if mu is not None:
    state = state._replace(mu=mu, nu=nu, count=jnp.asarray(adam_count0, jnp.int32))

  keep = checkpoint_epochs(epochs, checkpoints)
  out, t, lrs = [], 0, []
  for epoch in range(epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
    order = np.resize(order, steps_per_epoch * batch_size)
    for s in range(steps_per_epoch):
      lr = warmup_decay_lr(learning_rate, schedule_warmup_fraction, total, t)
      lrs.append(lr)
      params, state, _ = _train_step(params, frozen, state, jnp.float32(lr),
                                     batch_of(split, order[s * batch_size:(s + 1) * batch_size]),
                                     apply=fns.apply, hparams=(float(b1), float(b2), float(eps)))
      t += 1
    if epoch + 1 in keep:
      out.append(Checkpoint(lora.combine(params, frozen), state.mu, state.nu, int(state.count), float(np.mean(lrs))))
      lrs = []
  return out


def checkpoint_epochs(epochs: int, count: int) -> set:
  """The (1-based) epochs after which a checkpoint is kept: all of them when `count` is 0 or at least `epochs`, else
  `count` evenly spaced ones ending with the last."""
  if count <= 0 or count >= epochs:
    return set(range(1, epochs + 1))
  return {(i * epochs) // count for i in range(1, count + 1)}


def warmup_epochs(sel_cfg, n: int) -> int:
  """Epochs of the warm-up on `n` examples: `warmup_epochs`, or more when that is fewer than `warmup_steps` steps."""
  steps_per_epoch = max(1, -(-n // int(sel_cfg.train_batch_size)))
  return max(int(sel_cfg.warmup_epochs), -(-int(sel_cfg.warmup_steps) // steps_per_epoch))


def adam_hparams(sel_cfg) -> tuple:
  return float(sel_cfg.adam_b1), float(sel_cfg.adam_b2), float(sel_cfg.adam_eps)


_WARMUP_STREAM = 0x7761726D  # fold_in tag of the warm-up's key, shared by every warmed selector of a seed
_WARM_CACHE: dict = {}  # the latest warm-up (one entry: a MiniLM warm-up with per-epoch Adam moments is ~1 GB)


def clear_cache() -> None:
  """Forgets the cached warm-up (the next warmed selector trains its own)."""
  _WARM_CACHE.clear()


class Warmup(NamedTuple):
  """A warmed-up model: its functions, the param paths whose gradients are taken, per-epoch checkpoints, the pool
  rows it was warmed on, and whether it was reused from an earlier selector of the same seed (whose seconds then
  exclude the warm-up)."""
  fns: "ModelFns"
  paths: list
  checkpoints: list
  positions: np.ndarray
  reused: bool


class WarmedSelector:
  """Mixin for selectors that warm the target model up on a random share of the pool before scoring.

  The warm-up depends only on the selector's key (i.e. the run seed), the pool and the warm-up settings, not on which
  selector asks, so LESS, LearnAlign, CROPI and DOTS of one seed share it: the latest one is kept in memory and reused
  by the next selector of the same seed (the harness runs a seed's selectors one after another).
  `model_factory(config, num_classes, key) -> ModelFns` defaults to the target model; tests replace it with a tiny
  model.
  """
  model_factory: Callable = staticmethod(target_model_fns)
  config_sections = ("selection",)
  version = 3  # 3: at least selection.warmup_steps steps, selection.warmup_checkpoints checkpoints (2026-12-02)

  def warm_up(self, key, pool) -> Warmup:
    """The model warmed up on a random `warmup_fraction` of the pool. `key` is the selector's own key; the warm-up's
    key is derived from it the same way for every selector."""
    from rlsel.checkpoint import fingerprint
    s = self.config.selection
    key = jax.random.fold_in(key, _WARMUP_STREAM)
    tag = fingerprint(id(self.model_factory), self.config.target, features.identity(self.config.features),
                      s.warmup_fraction, s.warmup_epochs, s.warmup_steps, s.warmup_checkpoints, s.train_batch_size,
                      s.learning_rate, s.schedule_warmup_fraction,
                      adam_hparams(s), s.param_scope, s.last_k, tuple(s.head_patterns), s.layer_pattern,
                      np.asarray(jax.random.key_data(key)), np.asarray(pool.train.ids), np.asarray(pool.train.labels))
    reused = tag in _WARM_CACHE
    if not reused:
      _WARM_CACHE.clear()
      # the entry holds the factory too, so its id() cannot be recycled by another function while cached
      _WARM_CACHE[tag] = (self.model_factory, self._warm_up(key, pool))
    return Warmup(*_WARM_CACHE[tag][1], reused=reused)

  def _warm_up(self, key, pool):
    from rlsel.selectors.basic import numpy_rng, stratified_sample
    s = self.config.selection
    kinit, kpos, ktrain = jax.random.split(key, 3)
    fns = self.model_factory(self.config, pool.num_classes, kinit)
    paths = select_paths(fns.params, s.param_scope, int(s.last_k), tuple(s.head_patterns), s.layer_pattern)
    n_warm = int(min(pool.size, max(pool.num_classes, round(float(s.warmup_fraction) * pool.size))))
    warm_pos = stratified_sample(numpy_rng(kpos), pool.train.labels, n_warm)
    checkpoints = warmup_train(ktrain, fns, fns.params, pool.train.take(warm_pos), warmup_epochs(s, n_warm),
                               int(s.train_batch_size), float(s.learning_rate), float(s.schedule_warmup_fraction),
                               adam_hparams(s), checkpoints=int(s.warmup_checkpoints))
    return fns, paths, checkpoints, warm_pos
