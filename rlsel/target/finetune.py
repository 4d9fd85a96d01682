"""Fine-tune the target classifier on a subset and evaluate it.

AdamW with linear warmup then linear decay, global-norm clipping, no weight decay on biases and LayerNorm scales.
Steps are drawn from a stream of seeded epoch permutations of the subset, so every batch has the same shape (one
compilation) even for subsets smaller than a batch. Validation accuracy every `eval_every` steps picks the best
parameters and stops early after `patience` evaluations without improvement.

With a `mesh` (rlsel/sharding.py; the harness passes one when there is more than one device) training is
data-parallel: each batch is split over the devices and the jitted step computes the global mean loss (GSPMD), so the
gradient is the one-device gradient; params are replicated, or with `mesh.fsdp > 1` their big arrays are split
FSDP-style over the `fsdp` axis and gathered where a layer needs them.

A target with LoRA adapters (rlsel/target/lora.py) trains only its adapters and head: the step differentiates and
optimises that part, and the frozen base is a plain argument (no gradient or optimiser state; never checkpointed,
the build recreates it). A target without adapters trains every parameter, as before.
"""

import functools
import time
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlsel import progress
from rlsel.selectors.base import Split
from rlsel.selectors.basic import numpy_rng
from rlsel.target import lora


class FinetuneResult(NamedTuple):
  params: dict
  steps: int              # optimiser steps taken
  best_step: int          # step whose parameters were kept
  planned_steps: int      # planned_steps(fc, subset size): epochs over the subset, within [min_steps, max_steps]
  seconds: float          # wall-clock of training and validation evaluations
  tokens: int             # token positions processed in training (padded batch x length x steps)
  flops: float            # estimated FLOPs of training plus validation evaluations
  val_accuracy: float     # of the kept parameters
  history: list           # [(step, train_loss, val_accuracy)]
  validation_seconds: float = 0.0  # the part of `seconds` spent in validation passes (first one compiles)


def decay_mask(params):
  """True for weights that get weight decay: matrices and embeddings, not biases or LayerNorm scales."""
  return jax.tree.map(lambda x: x.ndim > 1, params)


def make_optimizer(fc) -> optax.GradientTransformation:
  """AdamW without its learning rate: clipping, Adam moments and decoupled weight decay. The train step multiplies
  the update by -learning_rate_at(...), passed in as an argument, so one compiled step serves every schedule length
  (each cell of a run plans a different number of steps)."""
  return optax.chain(optax.clip_by_global_norm(fc.grad_clip), optax.scale_by_adam(),
                     optax.add_decayed_weights(fc.weight_decay, mask=decay_mask))


def warmup_decay_lr(peak: float, warmup_fraction: float, total_steps: int, count: int) -> float:
  """The one learning-rate schedule of rlsel's supervised training (target fine-tuning and the gradient selectors'
  warm-up): linear from 0 to `peak` over `warmup_fraction` of `total_steps`, then linear to 0 at `total_steps`;
  `count` = updates done."""
  warmup = max(1, int(round(warmup_fraction * total_steps)))
  if count < warmup:
    return peak * count / warmup
  return peak * max(0.0, 1.0 - (count - warmup) / max(1, total_steps - warmup))


def learning_rate_at(fc, total_steps: int, count: int) -> float:
  """The fine-tune section's schedule (`fc.learning_rate`, `fc.warmup_fraction`) after `count` updates."""
  return warmup_decay_lr(fc.learning_rate, fc.warmup_fraction, total_steps, count)


def planned_steps(fc, n: int) -> int:
  """Steps a fine-tune on `n` examples plans: `epochs` passes, raised to `min_steps` (a small subset needs more
  passes to converge) and capped at `max_steps` (a large pool, e.g. full data, sees less than the epochs)."""
  by_epochs = max(1, int(np.ceil(fc.epochs * n / fc.batch_size)))
  return int(min(fc.max_steps, max(fc.min_steps, by_epochs)))


def forward_flops_per_token(module, params, length: int) -> float:
  """≈ 2 FLOPs per non-embedding parameter per token, plus attention's 4·L·H per layer (scores and mixing).
  Embedding tables (BERT's `embeddings`, the decoder's `embed`) are lookups: a classifier never projects onto them."""
  n_emb = sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
              if "embed" in jax.tree_util.keystr(path))
  n_all = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  c = module.config
  return 2.0 * (n_all - n_emb) + 4.0 * c.num_layers * length * c.attention_width


def train_flops_factor(trainable, frozen) -> float:
  """A training step's FLOPs over a forward pass: forward 1 + input gradients 1 + weight gradients (1 for every
  trainable parameter, so 3 for full fine-tuning and about 2 with LoRA)."""
  n_train = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trainable))
  n_all = n_train + sum(int(np.prod(x.shape)) for x in jax.tree.leaves(frozen))
  return 2.0 + n_train / max(n_all, 1)


def _batch(split: Split, pos: np.ndarray):
  return split.input_ids[pos], split.attention_mask[pos], split.token_type_ids[pos], split.labels[pos]


@functools.lru_cache(maxsize=16)
def make_eval_fn(module):
  @jax.jit
  def probs(params, ids, mask, types):
    return jax.nn.softmax(module.apply({"params": params}, ids, mask, types, deterministic=True), axis=-1)
  return probs


def _place_batch(mesh, arrays):
  if mesh is None:
    return arrays
  from rlsel import sharding
  return sharding.shard_batch(mesh, arrays)


def place_params(mesh, tree, min_size: int):
  """`tree` (params or optimizer state) on the mesh: FSDP-split big arrays when `mesh.fsdp > 1`, else replicated."""
  if mesh is None:
    return tree
  from rlsel import sharding
  if mesh.shape[sharding.FSDP] > 1:
    return jax.device_put(tree, sharding.fsdp_param_sharding(mesh, tree, min_size))
  return sharding.replicate(mesh, tree)


def predict_proba(module, params, split: Split, batch_size: int, eval_fn=None, mesh=None,
                  length_multiple: int = 0) -> np.ndarray:
  """Class probabilities float32 [n, C] in fixed-size jitted batches (the last one padded); split over `mesh`.
  `length_multiple > 0` sorts rows by length and cuts each batch's padding columns (`features.length_sorted_batches`):
  the same probabilities up to float rounding, one compile per width."""
  from rlsel import features
  eval_fn = eval_fn or make_eval_fn(module)
  out = np.zeros((len(split), module.num_classes), np.float32)
  for pos, real, cols in features.length_sorted_batches(split.attention_mask, batch_size, length_multiple):
    ids, mask, types = _place_batch(mesh, tuple(a[:, :cols] for a in _batch(split, pos)[:3]))
    out[pos[:real]] = np.asarray(eval_fn(params, ids, mask, types))[:real]
  return out


def metrics(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> dict:
  """Accuracy and macro-F1 (classes absent from both truth and prediction are skipped)."""
  pred = probs.argmax(-1)
  acc = float((pred == labels).mean()) if labels.size else float("nan")
  f1s = []
  for c in range(num_classes):
    tp = np.sum((pred == c) & (labels == c))
    fp = np.sum((pred == c) & (labels != c))
    fn = np.sum((pred != c) & (labels == c))
    if tp + fp + fn:
      f1s.append(2 * tp / (2 * tp + fp + fn))
  return {"accuracy": acc, "macro_f1": float(np.mean(f1s)) if f1s else float("nan")}


@functools.lru_cache(maxsize=16)
def _programs(module, weight_decay, grad_clip):
  """(optimizer, jitted train step, jitted eval) for a module, built once and reused across cells."""
  tx = make_optimizer(types.SimpleNamespace(weight_decay=weight_decay, grad_clip=grad_clip))

  def loss_fn(p, frozen, ids, mask, types_, labels, rng):
    logits = module.apply({"params": lora.combine(p, frozen)}, ids, mask, types_, deterministic=False,
                          rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def train_step(p, frozen, s, ids, mask, types_, labels, rng, lr):
    """One AdamW step on the trainable params `p`; `frozen` (LoRA's base, else {}) gets no gradient."""
    loss, grads = jax.value_and_grad(loss_fn)(p, frozen, ids, mask, types_, labels, rng)
    updates, s = tx.update(grads, s, p)
    updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
    return optax.apply_updates(p, updates), s, loss

  return tx, train_step, make_eval_fn(module)


def finetune(key, config, module, params, train: Split, validation: Split, log_prefix: str = "finetune",
             checkpointer=None, mesh=None) -> FinetuneResult:
  """Trains `params` on `train` and returns the parameters with the best validation accuracy.

  With a `rlsel.checkpoint.Checkpointer`, the state is saved after every validation evaluation and a later call with
  the same checkpointer resumes from it, giving the same result as an uninterrupted run. With a `mesh`, training and
  evaluation are data-parallel over its devices (see the module docstring).
  """
  fc = config.finetune
  n, bs = len(train), fc.batch_size
  planned = planned_steps(fc, n)
  tx, train_step, eval_fn = _programs(module, fc.weight_decay, fc.grad_clip)
  min_size = int(config.mesh.fsdp_min_size)
  params, frozen = lora.partition(params)  # from here on `params` are the trainable ones
  params, frozen = place_params(mesh, params, min_size), place_params(mesh, frozen, min_size)
  opt_state = place_params(mesh, tx.init(params), min_size)

  key, order_key = jax.random.split(key)
  rng = numpy_rng(order_key)
  stream = np.concatenate([rng.permutation(n) for _ in range(int(np.ceil(planned * bs / n)) + 1)])

  val_seconds = [0.0]

  def evaluate(p):
    jax.block_until_ready(p)  # the queued train steps finish first, so their time is not counted as validation
    t_eval = time.time()
    probs = predict_proba(module, lora.combine(p, frozen), validation, fc.eval_batch_size, eval_fn, mesh,
                          config.features.length_multiple)
    val_seconds[0] += time.time() - t_eval
    return metrics(validation.labels, probs, module.num_classes)["accuracy"]

  t0 = time.time()
  best_acc, best_step, best_params, bad_evals, history, losses = -1.0, 0, params, 0, [], []
  start, elapsed_before = 1, 0.0
  if checkpointer is not None:
    template = {"params": params, "opt_state": opt_state, "best_params": params, "key": jax.random.key_data(key)}
    restored = checkpointer.restore(template)
    if restored is not None:
      state, meta = restored
      params, opt_state, best_params = (place_params(mesh, state[k], min_size)
                                        for k in ("params", "opt_state", "best_params"))
      key = jax.random.wrap_key_data(state["key"])
      best_acc, best_step, bad_evals = meta["best_acc"], meta["best_step"], meta["bad_evals"]
      history, elapsed_before, start = [tuple(h) for h in meta["history"]], meta["seconds"], meta["step"] + 1
      val_seconds[0] = float(meta.get("validation_seconds", 0.0))
      print(f"[{log_prefix}] resuming from the checkpoint at step {meta['step']}", flush=True)
  bar = progress.bar(planned - start + 1, log_prefix, unit="steps")
  step = start - 1
  for step in range(start, planned + 1):
    key, sub = jax.random.split(key)
    pos = stream[(step - 1) * bs: step * bs]
    lr = np.float32(learning_rate_at(fc, planned, step - 1))
    params, opt_state, loss = train_step(params, frozen, opt_state, *_place_batch(mesh, _batch(train, pos)), sub,
                                         lr)
    losses.append(loss)
    bar.update(1)
    if step % fc.eval_every == 0 or step == planned:
      acc = evaluate(params)
      mean_loss = float(jnp.mean(jnp.stack(losses)))
      losses = []
      history.append((step, mean_loss, acc))
      if acc > best_acc:
        best_acc, best_step, best_params, bad_evals = acc, step, params, 0
      else:
        bad_evals += 1
      if step % (fc.eval_every * 4) == 0 or step == planned:
        print(f"[{log_prefix}] step {step}/{planned} train_loss {mean_loss:.4f} val_acc {acc:.4f}", flush=True)
      if checkpointer is not None and step < planned and bad_evals < fc.patience:
        checkpointer.save(step, {"params": params, "opt_state": opt_state, "best_params": best_params,
                                 "key": jax.random.key_data(key)},
                          {"step": step, "best_acc": best_acc, "best_step": best_step, "bad_evals": bad_evals,
                           "history": history, "seconds": elapsed_before + time.time() - t0,
                           "validation_seconds": val_seconds[0]})
        print(f"[{log_prefix}] checkpoint saved at step {step}", flush=True)
      if bad_evals >= fc.patience:
        print(f"[{log_prefix}] early stop at step {step}: no validation gain in {fc.patience} evaluations", flush=True)
        break
  bar.close()
  jax.block_until_ready(best_params)
  seconds = elapsed_before + time.time() - t0
  length = train.input_ids.shape[1]
  tokens = step * bs * length
  per_token = forward_flops_per_token(module, lora.combine(params, frozen), length)
  flops = (train_flops_factor(params, frozen) * per_token * tokens
           + per_token * len(history) * len(validation) * length)
  return FinetuneResult(lora.combine(best_params, frozen), step, best_step, planned, seconds, tokens, flops, best_acc,
                        history, val_seconds[0])
