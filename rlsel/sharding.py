"""The device mesh and how arrays are laid out on it: batches split over devices, params replicated or FSDP-sharded.

The mesh has two axes, `data` and `fsdp` (`config.mesh`), both `AxisType.Auto` so plain `jax.jit` code runs on it
without pre-placed inputs. A batch's leading axis is split over every device (`data` x `fsdp`, the usual FSDP layout;
with `fsdp=1` that is the data axis); params are replicated, or with `fsdp > 1` their big arrays are split over `fsdp`.
`data_parallel_grad` is the shard_map pattern for replicated params: the gradient of the device-averaged loss.
"""

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from rlsel.errors import require

DATA = "data"
FSDP = "fsdp"
BATCH_AXES = (DATA, FSDP)  # a batch's leading axis is split over both mesh axes, i.e. over every device


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
  """The (data, fsdp) sizes for `num_devices`, filling a -1; UserError when they cannot cover the devices exactly."""
  fix = (f"set --config.mesh.data=-1 to use all {num_devices} devices, or choose --config.mesh.data and "
         f"--config.mesh.fsdp whose product is {num_devices}")
  require(data == -1 or data >= 1, f"config.mesh.data={data} must be -1 (fill) or >= 1; {fix}")
  require(fsdp == -1 or fsdp >= 1, f"config.mesh.fsdp={fsdp} must be -1 (fill) or >= 1; {fix}")
  require(not (data == -1 and fsdp == -1), f"config.mesh.data and config.mesh.fsdp are both -1; {fix}")
  if data == -1 or fsdp == -1:
    known = fsdp if data == -1 else data
    require(num_devices % known == 0,
            f"config.mesh (data={data}, fsdp={fsdp}) does not fit the {num_devices} devices: {num_devices} is not "
            f"divisible by {known}; {fix}")
    other = num_devices // known
    data, fsdp = (other, fsdp) if data == -1 else (data, other)
  require(data * fsdp == num_devices,
          f"config.mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but {num_devices} devices are available; "
          f"{fix}")
  return data, fsdp


def make_mesh(config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The ("data", "fsdp") mesh of `config.mesh` over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(int(config.mesh.data), int(config.mesh.fsdp), len(devices))
  return jax.make_mesh(shape, BATCH_AXES, axis_types=(AxisType.Auto,) * len(BATCH_AXES), devices=devices)


def batch_devices(mesh: Mesh) -> int:
  """How many ways a batch's leading axis is split on `mesh`."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def _axes_name(mesh: Mesh) -> str:
  return "data axis" if mesh.shape[FSDP] == 1 else "data x fsdp axes"


def check_divisible(num_envs: int, mesh: Mesh) -> None:
  """UserError unless `num_envs` (the parallel batch) splits evenly over the mesh's batch devices."""
  n = batch_devices(mesh)
  require(num_envs % n == 0,
          f"num_envs={num_envs} is not divisible by the {n} devices of the {_axes_name(mesh)}; "
          f"set --config.rl.num_envs to a multiple of {n}")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over every device of `mesh`, the rest whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device."""
  return NamedSharding(mesh, P())


def _place(x, sharding: NamedSharding):
  """Puts `x` on `sharding`; in a multi-process run `x` is this process's part (global = concatenation over hosts)."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  return jax.make_array_from_process_local_data(sharding, np.asarray(x))


def shard_batch(mesh: Mesh, tree: Any) -> Any:
  """Every leaf of `tree` with its leading axis split over the mesh's batch devices (UserError if it does not divide).

  In a multi-process run each process passes its own rows; the global batch is their concatenation.
  """
  n = batch_devices(mesh) // jax.process_count()
  for leaf in jax.tree.leaves(tree):
    require(np.ndim(leaf) >= 1 and np.shape(leaf)[0] % n == 0,
            f"batch leading dimension {np.shape(leaf)[:1]} is not divisible by the {n} local devices of the "
            f"{_axes_name(mesh)}; make the batch size a multiple of {n}")
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: _place(x, sharding), tree)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Every leaf of `tree` copied to every device of `mesh` (all processes must pass the same values)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: _place(x, sharding), tree)


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int) -> P:
  """FSDP layout of one param: its largest axis divisible by `fsdp_size` goes on `fsdp` when the param is big."""
  if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  candidates = [(dim, i) for i, dim in enumerate(shape) if dim % fsdp_size == 0]
  if not candidates:
    return P()
  _, axis = max(candidates, key=lambda c: (c[0], -c[1]))  # largest dim; the first one on ties
  return P(*([None] * axis + [FSDP]))


def fsdp_param_sharding(mesh: Mesh, params: Any, min_size: int) -> Any:
  """A tree of NamedSharding like `params`: big params split along one axis over `fsdp`, the rest replicated.

  Use with `jax.device_put(params, shardings)` and as a jit `out_shardings`; XLA gathers the params where needed.
  """
  size = mesh.shape[FSDP]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), size, min_size)), params)


def data_parallel_grad(loss_fn: Callable[[Any, Any], jax.Array], mesh: Mesh,
                       axes: tuple[str, ...] = BATCH_AXES) -> Callable[[Any, Any], tuple[jax.Array, Any]]:
  """`(params, batch) -> (loss, grads)` of the loss averaged over devices, computed under `jax.shard_map`.

  `loss_fn(params, local_batch)` is the mean loss of one device's rows. Params go in replicated (`P()`), the batch
  split over `axes`. Under shard_map the gradient of a replicated param is already summed over devices, so
  `pmean(grad(loss))` would be device-count times too large; the gradient of `pmean(loss)` is the true mean-loss
  gradient (equal to the single-device one when every device holds the same number of rows).
  """

  def local(params, batch):
    return jax.value_and_grad(lambda p: lax.pmean(loss_fn(p, batch), axes))(params)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes)), out_specs=(P(), P()))


def make_data_parallel_step(loss_fn: Callable[[Any, Any], jax.Array], optimizer, mesh: Mesh):
  """A jitted optax step `(params, opt_state, batch) -> (params, opt_state, loss)` with replicated params.

  Place params/opt_state with `replicate` and the batch with `shard_batch`; the update runs on every device alike.
  """
  import optax  # only the training step needs it

  grad_fn = data_parallel_grad(loss_fn, mesh)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = grad_fn(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step
