"""The permutation-equivariant cluster network shared by every agent.

A per-cluster MLP embeds each cluster's static features with its dynamic state (taken fraction, left, share of the
budget, available); a context vector pools the selected set (embeddings weighted by each cluster's share of the
budget), the mean over clusters and the global state (budget left, time). Each cluster's output comes from its own
embedding and the context, so permuting clusters permutes the outputs. Unavailable clusters get `MASKED`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlsel.env import Obs

MASKED = -1e9  # finite, so an all-masked row (a finished episode) gives no NaN


class ClusterContextDense(nn.Module):
  """Dense([h; ctx]) for every cluster without materialising the concatenation: h [..., C, A] @ kernel[:A] plus
  ctx [..., B] @ kernel[A:] computed once per observation, not once per cluster. The same params ("kernel" [A+B, F],
  "bias" [F]) and the same initialisation as `nn.Dense` on the concatenation, so the function is unchanged; the
  head's per-cluster FLOPs fall by the share B/(A+B)."""
  features: int

  @nn.compact
  def __call__(self, h, ctx):
    a = h.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (a + ctx.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return h @ kernel[:a] + (ctx @ kernel[a:] + bias)[..., None, :]


class ClusterNet(nn.Module):
  """(feats [C, F], obs) -> (masked per-cluster outputs [..., C], value [...]): logits (PPO) or Q-values (DQN)."""
  hidden: int

  @nn.compact
  def __call__(self, feats, obs: Obs):
    # Static features embedded once [C, H], not once per env and step; dynamic state added per env.
    h = nn.gelu(nn.Dense(self.hidden, name="embed_static")(feats)
                + nn.Dense(self.hidden, use_bias=False, name="embed_dyn")(obs.dyn))
    h = nn.gelu(nn.Dense(self.hidden, name="embed1")(h))
    share = obs.dyn[..., 2:3]
    selected = jnp.sum(share * h, axis=-2)
    ctx = jnp.concatenate([selected, jnp.mean(h, axis=-2), obs.glob], -1)
    ctx = nn.gelu(nn.Dense(self.hidden, name="ctx0")(ctx))
    ctx = nn.gelu(nn.Dense(self.hidden, name="ctx1")(ctx))
    z = nn.gelu(ClusterContextDense(self.hidden, name="head0")(h, ctx))
    out = nn.Dense(1, name="head1", kernel_init=nn.initializers.orthogonal(0.01))(z)[..., 0]
    out = jnp.where(obs.action_mask, out, MASKED)
    value = nn.Dense(1, name="value", kernel_init=nn.initializers.orthogonal(1.0))(ctx)[..., 0]
    return out, value


def with_size_prior(out, obs: Obs, sizes, weight: float):
  """`out` [..., C] plus `weight` x log(rows left in each cluster) (left = obs.dyn's left/size x `sizes` [C], at least
  1): with weight 1 and a network that outputs a constant, the policy picks clusters in proportion to the rows they
  have left, a stratified random draw, instead of uniformly over clusters (which over-samples small ones). Masked
  clusters stay masked. `weight` 0 returns `out` unchanged (rl.size_prior; DQN's Q-values never take it)."""
  if not weight:
    return out
  left = obs.dyn[..., 1] * sizes.astype(obs.dyn.dtype)
  return out + float(weight) * jnp.log(jnp.maximum(left, 1.0))


def init(key: jax.Array, hidden: int, feats, obs: Obs):
  return ClusterNet(hidden).init(key, feats, obs)["params"]


def apply(hidden: int, params, feats, obs: Obs):
  return ClusterNet(hidden).apply({"params": params}, feats, obs)


def forward_flops(hidden: int, num_clusters: int) -> float:
  """Analytic matmul FLOPs of one observation's forward pass (the static embedding counted once per call, not here)."""
  h, c = hidden, num_clusters
  per_cluster = 4 * h + h * h + h * h + h           # embed_dyn, embed1, head0's cluster half, head1
  context = (2 * h + 2) * h + h * h + h * h + h     # ctx0, ctx1, head0's context half (once), value
  return 2.0 * (c * per_cluster + context)
