"""The score behind the environment's reward, as objects the environment is given (Jumanji's `RewardFn`).

A reward is a frozen, hashable dataclass held as a static field of `EnvParams`; the arrays it reads (proxy data,
surrogate params, toy values) live in `EnvParams`, so one compiled program serves every pool of the same shapes. A new
proxy design is a new class here, not another branch in the step function. The environment's reward is the change
in this score each step (or final minus initial at the end, `proxy.reward_timing`).
"""

import abc
import dataclasses

import jax
import jax.numpy as jnp

from rlsel import proxy as proxy_lib
from rlsel import surrogate as surrogate_lib
from rlsel.env.observe import mask_features
from rlsel.env.types import EnvParams


class RewardFn(abc.ABC):
  """Scores a selection given by per-cluster counts `taken` [C], the episode's within-cluster `order` [C, W] and the
  reward-split `rows` scored this episode.

  `__call__` scores a selection from scratch (a function of the set). A reward may also carry state through an
  episode (`EnvState.reward_state`): `advance` updates it after each step and `current` scores the selection from
  it; by default the state is empty and `current` is `__call__`."""

  @abc.abstractmethod
  def initial(self, rows: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
    """Score of the empty selection."""

  @abc.abstractmethod
  def __call__(self, key: jax.Array, taken: jnp.ndarray, order: jnp.ndarray, rows: jnp.ndarray,
               params: EnvParams) -> jnp.ndarray:
    """Score of the selection (float32 scalar)."""

  def init_state(self, params: EnvParams):
    """The state an episode starts with (a pytree; empty by default)."""
    return ()

  def advance(self, key: jax.Array, state, taken: jnp.ndarray, order: jnp.ndarray, params: EnvParams):
    """The state after a step that led to `taken`."""
    return state

  def current(self, key: jax.Array, state, taken: jnp.ndarray, order: jnp.ndarray, rows: jnp.ndarray,
              params: EnvParams) -> jnp.ndarray:
    """Score of the selection within its episode (from `state` where the reward carries one)."""
    return self(key, taken, order, rows, params)


def draw_selected(taken, order):
  """A sampler of uniformly drawn selected rows, from counts and the episode order (O(log C) per draw)."""
  cs = jnp.cumsum(taken)
  total = jnp.maximum(cs[-1], 1)

  def draw(key, shape):
    u = jax.random.randint(key, shape, 0, total)
    c = jnp.searchsorted(cs, u, side="right")
    j = u - (cs[c] - taken[c])
    return order[c, j]

  return draw


@dataclasses.dataclass(frozen=True)
class ProxyReward(RewardFn):
  """The small proxy fine-tuned on the selection (`rlsel/proxy.py`), scored on the reward split."""

  def initial(self, rows, params):
    return proxy_lib.reward_score(params.proxy_spec, params.proxy.init_params, params.proxy, rows)

  def __call__(self, key, taken, order, rows, params):
    return proxy_lib.evaluate(key, params.proxy_spec, params.proxy, draw_selected(taken, order), rows)


@dataclasses.dataclass(frozen=True)
class IncrementalProxyReward(ProxyReward):
  """The proxy carried through the episode: each step continues its fine-tune for `steps` Adam steps on the selection
  so far (from where the previous step left off) instead of restarting, then scores it on the reward split.

  An episode of T steps costs T * `steps` proxy steps instead of T * `proxy.steps`. Scoring a selection out of an
  episode (`__call__`: climb's candidates, re-scoring) still fine-tunes from scratch, as `ProxyReward` does."""
  steps: int

  def init_state(self, params):
    return proxy_lib.start(params.proxy_spec, params.proxy)

  def advance(self, key, state, taken, order, params):
    key = jax.random.fold_in(key, jnp.sum(taken))  # a fresh minibatch stream each step, fixed for the selection size
    return proxy_lib.train(key, params.proxy_spec, params.proxy, state, draw_selected(taken, order), self.steps)

  def current(self, key, state, taken, order, rows, params):
    return proxy_lib.reward_score(params.proxy_spec, state.params, params.proxy, rows)


def proxy_reward(proxy_cfg) -> ProxyReward:
  """The proxy reward `config.proxy` asks for: restarted every step, or incremental (`proxy.incremental_steps`)."""
  steps = int(proxy_cfg.incremental_steps)
  return IncrementalProxyReward(steps) if steps > 0 else ProxyReward()


@dataclasses.dataclass(frozen=True)
class SurrogateReward(RewardFn):
  """The learned MLP on the selection's mask features (`rlsel/surrogate.py`); starts from the proxy's initial score,
  so its steps are comparable with the proxy's."""
  hidden: int

  def initial(self, rows, params):
    return ProxyReward().initial(rows, params)

  def __call__(self, key, taken, order, rows, params):
    return surrogate_lib.predict(self.hidden, params.surrogate, mask_features(taken, params))


@dataclasses.dataclass(frozen=True)
class ToyReward(RewardFn):
  """sum_c value_c * taken_c / budget with hidden per-cluster values (`EnvParams.values`; see rlsel/env/toy.py)."""

  def initial(self, rows, params):
    return jnp.zeros((), jnp.float32)

  def __call__(self, key, taken, order, rows, params):
    return jnp.dot(params.values, taken.astype(jnp.float32)) / params.budget


@dataclasses.dataclass(frozen=True)
class NoReward(RewardFn):
  """Always 0: for playing a fixed allocation or a random walk, where only the selection matters (cheap steps)."""

  def initial(self, rows, params):
    return jnp.zeros((), jnp.float32)

  def __call__(self, key, taken, order, rows, params):
    return jnp.zeros((), jnp.float32)
