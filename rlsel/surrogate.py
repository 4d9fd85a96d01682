"""Surrogate reward: an MLP R^(mask features) -> proxy score, trained online on (features, real score) pairs.

A selection is summarised compactly by per-cluster counts (taken / cluster size and taken / budget, see
`rlsel.env.mask_features`), so the surrogate's input is [2C] whatever the pool size. Pairs live in a ring buffer of
JAX arrays inside `SurrogateState`, so adding and training stay inside the agent's jitted loop.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class SurrogateNet(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, f):
    h = nn.gelu(nn.Dense(self.hidden)(f))
    h = nn.gelu(nn.Dense(self.hidden)(h))
    return nn.Dense(1)(h)[..., 0]


@struct.dataclass
class SurrogateState:
  params: dict
  opt_state: optax.OptState
  feats: jnp.ndarray      # [S, F] ring buffer of mask features
  targets: jnp.ndarray    # [S] real proxy scores
  count: jnp.ndarray      # pairs ever added (int32)
  hidden: int = struct.field(pytree_node=False)
  lr: float = struct.field(pytree_node=False)


def init(key: jax.Array, feat_dim: int, hidden: int, buffer: int, lr: float) -> SurrogateState:
  params = SurrogateNet(hidden).init(key, jnp.zeros((1, feat_dim)))["params"]
  return SurrogateState(params=params, opt_state=optax.adam(lr).init(params),
                        feats=jnp.zeros((buffer, feat_dim), jnp.float32), targets=jnp.zeros((buffer,), jnp.float32),
                        count=jnp.zeros((), jnp.int32), hidden=hidden, lr=lr)


def predict(hidden: int, params: dict, feats: jnp.ndarray) -> jnp.ndarray:
  """Predicted score for features [..., F]."""
  return SurrogateNet(hidden).apply({"params": params}, feats)


def add(state: SurrogateState, feats: jnp.ndarray, targets: jnp.ndarray) -> SurrogateState:
  """Appends pairs [n, F], [n] to the ring buffer (oldest overwritten)."""
  chex.assert_rank(feats, 2)
  n, size = feats.shape[0], state.targets.shape[0]
  idx = (state.count + jnp.arange(n)) % size
  return state.replace(feats=state.feats.at[idx].set(feats), targets=state.targets.at[idx].set(targets),
                       count=state.count + n)


def train(key: jax.Array, state: SurrogateState, steps: int, batch: int):
  """`steps` Adam steps of squared error on minibatches from the filled part of the buffer; returns (state, loss)."""
  tx = optax.adam(state.lr)
  filled = jnp.maximum(jnp.minimum(state.count, state.targets.shape[0]), 1)

  def loss_fn(p, idx):
    return jnp.mean((predict(state.hidden, p, state.feats[idx]) - state.targets[idx]) ** 2)

  def one(carry, k):
    p, opt = carry
    idx = jax.random.randint(k, (batch,), 0, filled)
    loss, g = jax.value_and_grad(loss_fn)(p, idx)
    upd, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, upd), opt), loss

  (params, opt), losses = jax.lax.scan(one, (state.params, state.opt_state), jax.random.split(key, steps))
  return state.replace(params=params, opt_state=opt), losses[-1]
