"""Multi-device checks of rlsel.sharding on simulated CPU devices, printed as one JSON line for tests to assert on.

Run as `python -m tests.multidevice [num_devices]` (default 8): it forces that many host devices before JAX
starts, which is why it is a separate process (pytest's JAX is already initialised with one device). Every
multi-device result is reported next to the same computation done plainly on one device.

`python -m tests.multidevice multihost N` is one process of a real multi-process run on this host (start N of
them with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set): it goes through
`rlsel.distributed.maybe_initialize`, feeds its own rows to `shard_batch`, and compares the gradient with one device.
"""

import json
import os
import sys


def _setup(num_devices: int) -> None:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={num_devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _config(data: int, fsdp: int):
  import ml_collections
  c = ml_collections.ConfigDict()
  c.mesh = ml_collections.ConfigDict({"data": data, "fsdp": fsdp})
  return c


def _error(fn) -> str:
  from rlsel.errors import UserError
  try:
    fn()
  except UserError as e:
    return str(e)
  return ""


def _max_diff(a, b) -> float:
  import jax
  import numpy as np
  return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(jax.tree.leaves(a),
                                                                                    jax.tree.leaves(b))))


def _problem(key, batch: int, features: int, hidden: int, classes: int):
  """A small MLP classifier, its params and a batch: enough to exercise sums over rows in the gradient."""
  import jax
  import optax
  k1, k2, k3, k4 = jax.random.split(key, 4)
  params = {"w1": jax.random.normal(k1, (features, hidden)) / features**0.5, "b1": jax.numpy.zeros((hidden,)),
            "w2": jax.random.normal(k2, (hidden, classes)) / hidden**0.5, "b2": jax.numpy.zeros((classes,))}
  data = {"x": jax.random.normal(k3, (batch, features)), "y": jax.random.randint(k4, (batch,), 0, classes)}

  def loss_fn(p, b):
    h = jax.numpy.tanh(b["x"] @ p["w1"] + p["b1"])
    return optax.softmax_cross_entropy_with_integer_labels(h @ p["w2"] + p["b2"], b["y"]).mean()

  return params, data, loss_fn


def run(num_devices: int) -> dict:
  import jax
  import numpy as np
  import optax
  from jax import lax
  from jax.sharding import PartitionSpec as P

  from rlsel import sharding

  out = {"num_devices": jax.device_count()}
  mesh = sharding.make_mesh(_config(-1, 1))
  out["mesh_default"] = dict(mesh.shape)
  out["mesh_axis_types"] = [str(t) for t in mesh.axis_types]
  out["mesh_fsdp"] = dict(sharding.make_mesh(_config(-1, 2)).shape)
  out["mesh_bad_error"] = _error(lambda: sharding.make_mesh(_config(3, 1)))
  out["mesh_bad_fill_error"] = _error(lambda: sharding.make_mesh(_config(-1, 3)))
  out["check_divisible_ok"] = _error(lambda: sharding.check_divisible(2 * num_devices, mesh)) == ""
  out["check_divisible_error"] = _error(lambda: sharding.check_divisible(num_devices + num_devices // 2, mesh))

  # Batch placement: rows split in order, one block per device.
  batch = {"x": np.arange(2 * num_devices * 3, dtype=np.float32).reshape(2 * num_devices, 3)}
  placed = sharding.shard_batch(mesh, batch)["x"]
  out["batch_spec"] = str(placed.sharding.spec)
  out["batch_shard_shapes"] = sorted({tuple(s.data.shape) for s in placed.addressable_shards})
  out["batch_num_shards"] = len(placed.addressable_shards)
  out["batch_shard_rows"] = sorted([s.index[0].start, s.index[0].stop] for s in placed.addressable_shards)
  out["batch_roundtrip"] = bool(np.array_equal(np.asarray(placed), batch["x"]))
  out["batch_bad_error"] = _error(lambda: sharding.shard_batch(mesh, {"x": np.zeros((num_devices + 1, 2))}))
  rep = sharding.replicate(mesh, {"w": np.ones((4, 3), np.float32)})["w"]
  out["replicated_spec"] = str(rep.sharding.spec)
  out["replicated_full_copies"] = all(s.data.shape == (4, 3) for s in rep.addressable_shards)

  # Gradients: data_parallel_grad on the mesh vs plain jax.grad on one device over the same whole batch.
  params, data, loss_fn = _problem(jax.random.key(0), 4 * num_devices, 6, 16, 3)
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss_fn))(params, data)
  dp = jax.jit(sharding.data_parallel_grad(loss_fn, mesh))
  dp_loss, dp_grads = dp(sharding.replicate(mesh, params), sharding.shard_batch(mesh, data))
  out["grad_max_abs_diff"] = _max_diff(ref_grads, dp_grads)
  out["grad_ref_max_abs"] = _max_diff(ref_grads, jax.tree.map(np.zeros_like, ref_grads))
  out["loss_abs_diff"] = float(abs(ref_loss - dp_loss))
  out["grad_out_spec"] = str(dp_grads["w1"].sharding.spec)

  # The pitfall the helper avoids: pmean of per-device grads of replicated params is device-count times too big.
  naive = jax.jit(jax.shard_map(lambda p, b: lax.pmean(jax.grad(loss_fn)(p, b), sharding.BATCH_AXES), mesh=mesh,
                                in_specs=(P(), P(sharding.BATCH_AXES)), out_specs=P()))
  naive_grads = naive(sharding.replicate(mesh, params), sharding.shard_batch(mesh, data))
  out["naive_grad_ratio"] = float(np.linalg.norm(naive_grads["w1"]) / np.linalg.norm(ref_grads["w1"]))

  # A few optax steps: replicated params + sharded batch vs the single-device loop.
  optimizer = optax.adam(1e-2)
  steps = 5
  ref_step = jax.jit(lambda p, s, b: _plain_step(loss_fn, optimizer, p, s, b))
  p1, s1, ref_losses = params, optimizer.init(params), []
  for _ in range(steps):
    p1, s1, loss = ref_step(p1, s1, data)
    ref_losses.append(float(loss))
  dp_step = sharding.make_data_parallel_step(loss_fn, optimizer, mesh)
  p8 = sharding.replicate(mesh, params)
  s8 = sharding.replicate(mesh, optimizer.init(params))
  b8 = sharding.shard_batch(mesh, data)
  dp_losses = []
  for _ in range(steps):
    p8, s8, loss = dp_step(p8, s8, b8)
    dp_losses.append(float(loss))
  out["train_param_max_abs_diff"] = _max_diff(p1, p8)
  out["train_loss_max_abs_diff"] = float(np.max(np.abs(np.array(ref_losses) - np.array(dp_losses))))
  out["train_loss_decreased"] = ref_losses[-1] < ref_losses[0]
  out["train_param_spec"] = str(p8["w1"].sharding.spec)

  # FSDP: spec of a param tree, then jitted steps with sharded params on a data x fsdp mesh vs one device.
  fmesh = sharding.make_mesh(_config(-1, 2))
  tree = {"embed": np.zeros((30, 64)), "dense": {"kernel": np.zeros((64, 48)), "bias": np.zeros((48,))},
          "odd": np.zeros((33, 35)), "tiny": np.zeros((4, 4))}
  specs = sharding.fsdp_param_sharding(fmesh, tree, min_size=256)
  out["fsdp_specs"] = {"/".join(str(getattr(k, "key", k)) for k in path): str(s.spec)
                       for path, s in jax.tree_util.tree_leaves_with_path(specs)}
  out["fsdp_specs_mesh_fsdp1"] = sorted({str(s.spec) for s in jax.tree.leaves(
      sharding.fsdp_param_sharding(mesh, tree, min_size=256))})

  pshard = sharding.fsdp_param_sharding(fmesh, params, min_size=32)
  out["fsdp_train_param_specs"] = {k: str(v.spec) for k, v in pshard.items()}
  fsdp_step = jax.jit(lambda p, s, b: _plain_step(loss_fn, optimizer, p, s, b),
                      out_shardings=(pshard, None, None))
  pf = jax.device_put(params, pshard)
  sf = optimizer.init(pf)
  bf = sharding.shard_batch(fmesh, data)
  for _ in range(steps):
    pf, sf, _ = fsdp_step(pf, sf, bf)
  out["fsdp_train_param_max_abs_diff"] = _max_diff(p1, pf)
  out["fsdp_train_param_spec_after"] = str(pf["w1"].sharding.spec)
  out.update(_target_finetune(num_devices))
  out.update(_rl_episodes(num_devices))
  return out


def _target_finetune(num_devices: int) -> dict:
  """rlsel.target.finetune of a tiny BERT: data-parallel and FSDP meshes vs no mesh, same key and data."""
  import jax
  import numpy as np

  from rlsel import configlib, sharding
  from rlsel.selectors.base import Split
  from rlsel.target import finetune as ft
  from rlsel.target import model

  c = configlib.base_config()
  c.target.kind, c.target.hidden_size, c.target.num_layers, c.target.num_heads = "tiny", 32, 2, 4
  c.target.intermediate_size, c.features.max_length = 64, 16
  c.finetune.batch_size, c.finetune.eval_batch_size = 2 * num_devices, 2 * num_devices
  c.finetune.max_steps, c.finetune.eval_every, c.finetune.learning_rate = 6, 3, 1e-3
  c.mesh.fsdp_min_size = 256
  rng = np.random.default_rng(0)
  n, length = 4 * num_devices, 16

  def split(m):
    ids = rng.integers(1, 1000, (m, length)).astype(np.int32)
    return Split(np.arange(m), rng.integers(0, 2, m).astype(np.int32), ids, np.ones_like(ids), np.zeros_like(ids),
                 lambda: np.zeros((m, 4), np.float32))

  train, val = split(n), split(n)
  module, params = model.build(c, 2, key=jax.random.key(0))
  ref = ft.finetune(jax.random.key(1), c, module, params, train, val, log_prefix="1-device")
  out = {}
  for tag, (data, fsdp) in {"dp": (-1, 1), "fsdp": (-1, 2)}.items():
    c.mesh.data, c.mesh.fsdp = data, fsdp
    mesh = sharding.make_mesh(c)
    res = ft.finetune(jax.random.key(1), c, module, params, train, val, log_prefix=tag, mesh=mesh)
    probs = ft.predict_proba(module, res.params, val, c.finetune.eval_batch_size, mesh=mesh)
    out[f"finetune_{tag}_param_max_abs_diff"] = _max_diff(ref.params, res.params)
    out[f"finetune_{tag}_prob_max_abs_diff"] = float(np.max(np.abs(
        probs - ft.predict_proba(module, ref.params, val, c.finetune.eval_batch_size))))
    out[f"finetune_{tag}_history_equal_steps"] = [h[0] for h in res.history] == [h[0] for h in ref.history]
    out[f"finetune_{tag}_train_loss_max_abs_diff"] = float(max(abs(a[1] - b[1]) for a, b in zip(res.history,
                                                                                                 ref.history)))
    out[f"finetune_{tag}_param_specs"] = sorted({str(x.sharding.spec) for x in jax.tree.leaves(res.params)})
  out["finetune_ref_param_change"] = _max_diff(ref.params, params)
  return out


def _rl_episodes(num_devices: int) -> dict:
  """PPO on the toy pool with its parallel episodes split over the devices vs all on one device."""
  import jax
  import ml_collections
  import numpy as np

  from rlsel import configlib, env as env_lib, sharding
  from rlsel.agents import ppo, rollout, sample_policy

  c = configlib.base_config()
  c.rl.num_envs, c.rl.num_updates, c.rl.update_epochs, c.rl.num_minibatches = 2 * num_devices, 4, 2, 2
  c.rl.hidden, c.rl.log_every = 16, 0
  mesh = sharding.make_mesh(c)
  shard = sharding.batch_sharding(mesh)
  params = env_lib.toy_params(jax.random.key(0))
  frozen = ml_collections.FrozenConfigDict(c)
  ref = jax.jit(ppo.make_train(frozen, params))(jax.random.key(2))
  got = jax.jit(ppo.make_train(frozen, params, sharding=shard))(jax.random.key(2))
  net = ref["params"]
  traj, _ = jax.jit(lambda k: rollout(k, sample_policy(16, net, params), params, 2 * num_devices, shard))(
      jax.random.key(3))
  return {"rl_param_max_abs_diff": _max_diff(ref["params"], got["params"]),
          "rl_best_mask_equal": bool(np.array_equal(np.asarray(ref["best_mask"]), np.asarray(got["best_mask"]))),
          "rl_best_score_diff": float(abs(ref["best_score"] - got["best_score"])),
          "rl_traj_reward_spec": str(traj.reward.sharding.spec),
          "rl_traj_reward_devices": len(traj.reward.sharding.device_set)}


def run_multihost(batch: int) -> dict:
  """One process of a multi-process run: initialise, take this process's rows, data-parallel gradient vs 1 device."""
  import jax
  import numpy as np

  from rlsel import configlib, distributed, sharding

  config = configlib.base_config()
  plan = distributed.maybe_initialize(config)
  mesh = sharding.make_mesh(config)
  params, data, loss_fn = _problem(jax.random.key(0), batch, 6, 8, 3)
  ref_grads = jax.jit(jax.grad(loss_fn))(params, data)
  rows = batch // jax.process_count()
  mine = jax.tree.map(lambda x: np.asarray(x)[jax.process_index() * rows:(jax.process_index() + 1) * rows], data)
  _, grads = jax.jit(sharding.data_parallel_grad(loss_fn, mesh))(sharding.replicate(mesh, params),
                                                                  sharding.shard_batch(mesh, mine))
  local_grads = jax.tree.map(lambda g: np.asarray(g.addressable_shards[0].data), grads)
  return {"plan": None if plan is None else plan._asdict(), "process_index": jax.process_index(),
          "process_count": jax.process_count(), "device_count": jax.device_count(),
          "local_device_count": jax.local_device_count(), "is_main_process": distributed.is_main_process(),
          "mesh": dict(mesh.shape), "grad_max_abs_diff": _max_diff(ref_grads, local_grads)}


def _plain_step(loss_fn, optimizer, params, opt_state, batch):
  import jax
  import optax
  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "multihost":
    _setup(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    print(json.dumps(run_multihost(batch=16)))
  else:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    _setup(n)
    print(json.dumps(run(n)))
