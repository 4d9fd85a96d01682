"""rlsel.sharding: mesh shapes and errors in-process; placement, gradients and training on 8 simulated CPU devices.

The 8-device checks run once in a subprocess (`python -m tests.multidevice 8`, which forces 8 host devices
before JAX starts) and each test asserts on its JSON report against the single-device computation it also reports.
"""

import json
import os
import subprocess
import sys

import pytest

from rlsel import configlib, sharding
from rlsel.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DEVICES = 8
TOL = 1e-6


@pytest.fixture(scope="module")
def report():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  # XLA's backend optimisation off halves the report's compile time (about 60 s -> 30 s); every comparison in it is
  # between computations compiled in that same process, so the flag applies to both sides
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  proc = subprocess.run([sys.executable, "-m", "tests.multidevice", str(NUM_DEVICES)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# In-process (one device) -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,fsdp,n,expected", [(-1, 1, 8, (8, 1)), (-1, 2, 8, (4, 2)), (2, -1, 8, (2, 4)),
                                                  (4, 2, 8, (4, 2)), (-1, 1, 1, (1, 1))])
def test_mesh_shape_fills_and_accepts(data, fsdp, n, expected):
  assert sharding.mesh_shape(data, fsdp, n) == expected


@pytest.mark.parametrize("data,fsdp", [(3, 1), (-1, 3), (2, 2), (0, 1), (-1, -1), (4, 0)])
def test_mesh_shape_mismatch_is_one_line_user_error(data, fsdp):
  with pytest.raises(UserError) as e:
    sharding.mesh_shape(data, fsdp, 8)
  message = str(e.value)
  assert "\n" not in message
  assert "8" in message and "--config.mesh.data=-1" in message


def test_make_mesh_on_this_process_uses_all_devices_with_auto_axes():
  import jax
  mesh = sharding.make_mesh(configlib.base_config())
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_check_divisible_accepts_anything_on_one_device():
  import jax
  mesh = sharding.make_mesh(configlib.base_config(), devices=jax.devices()[:1])
  sharding.check_divisible(7, mesh)  # one device divides anything


@pytest.mark.parametrize("shape,size,min_size,expected", [
    ((64, 48), 2, 256, ("fsdp",)),            # largest divisible axis first
    ((30, 64), 2, 256, (None, "fsdp")),       # 30 % 2 == 0 but 64 is larger
    ((64, 64), 4, 256, ("fsdp",)),            # ties: first axis
    ((33, 35), 2, 256, ()),                   # nothing divisible: replicate
    ((4, 4), 2, 256, ()),                     # small: replicate
    ((64, 48), 1, 256, ()),                   # no fsdp axis: replicate
    ((48, 36), 8, 16, ("fsdp",)),             # 36 % 8 != 0, 48 % 8 == 0
])
def test_fsdp_spec(shape, size, min_size, expected):
  assert tuple(sharding.fsdp_spec(shape, size, min_size)) == expected


# 8 simulated devices (subprocess) ----------------------------------------------------------------------------------

def test_eight_devices_mesh_fill_and_auto_axes(report):
  assert report["num_devices"] == NUM_DEVICES
  assert report["mesh_default"] == {"data": NUM_DEVICES, "fsdp": 1}
  assert report["mesh_fsdp"] == {"data": NUM_DEVICES // 2, "fsdp": 2}
  assert report["mesh_axis_types"] == ["AxisType.Auto", "AxisType.Auto"]


def test_eight_devices_bad_mesh_errors_say_count_and_fix(report):
  for key in ("mesh_bad_error", "mesh_bad_fill_error"):
    message = report[key]
    assert f"{NUM_DEVICES} devices" in message and "--config.mesh.data=-1" in message and "\n" not in message
  assert "data=3 x fsdp=1 = 3 devices" in report["mesh_bad_error"]


def test_eight_devices_check_divisible(report):
  assert report["check_divisible_ok"]
  bad = NUM_DEVICES + NUM_DEVICES // 2
  assert report["check_divisible_error"] == (
      f"num_envs={bad} is not divisible by the {NUM_DEVICES} devices of the data axis; "
      f"set --config.rl.num_envs to a multiple of {NUM_DEVICES}")


def test_eight_devices_batch_is_split_in_order_and_params_replicated(report):
  rows = 2  # the script places 2 * NUM_DEVICES rows
  assert report["batch_spec"] == "P(('data', 'fsdp'),)"
  assert report["batch_num_shards"] == NUM_DEVICES
  assert report["batch_shard_shapes"] == [[rows, 3]]
  assert report["batch_shard_rows"] == [[i * rows, (i + 1) * rows] for i in range(NUM_DEVICES)]
  assert report["batch_roundtrip"]
  assert "not divisible by the 8 local devices" in report["batch_bad_error"]
  assert report["replicated_spec"] == "P()" and report["replicated_full_copies"]


def test_eight_devices_data_parallel_grad_matches_single_device(report):
  assert report["grad_ref_max_abs"] > 1e-2  # the comparison is not between two near-zero gradients
  assert report["grad_max_abs_diff"] < TOL
  assert report["loss_abs_diff"] < TOL
  assert report["grad_out_spec"] == "P()"
  # The pitfall this helper avoids is real here: pmean of per-device grads is device-count times too large.
  assert report["naive_grad_ratio"] == pytest.approx(NUM_DEVICES, rel=1e-4)


def test_eight_devices_optax_loop_matches_single_device(report):
  assert report["train_loss_decreased"]
  assert report["train_param_max_abs_diff"] < TOL
  assert report["train_loss_max_abs_diff"] < TOL
  assert report["train_param_spec"] == "P()"


def test_eight_devices_fsdp_specs_and_training(report):
  assert report["fsdp_specs"] == {"embed": "P(None, 'fsdp')", "dense/kernel": "P('fsdp',)", "dense/bias": "P()",
                                  "odd": "P()", "tiny": "P()"}
  assert report["fsdp_specs_mesh_fsdp1"] == ["P()"]
  assert report["fsdp_train_param_specs"] == {"w1": "P(None, 'fsdp')", "w2": "P('fsdp',)", "b1": "P()", "b2": "P()"}
  assert report["fsdp_train_param_spec_after"] == "P(None, 'fsdp')"
  assert report["fsdp_train_param_max_abs_diff"] < TOL



def test_eight_devices_target_finetune_matches_one_device(report):
  """rlsel.target.finetune with a data-parallel mesh and with FSDP-sharded params: the same model as on one device.

  Params are compared through the model's outputs: Adam turns a zero gradient that is 1e-12 on another reduction
  order into a full learning-rate step, so raw params differ by ~1e-4 where the function does not."""
  for tag in ("dp", "fsdp"):
    assert report[f"finetune_{tag}_history_equal_steps"], tag
    assert report[f"finetune_{tag}_train_loss_max_abs_diff"] < 1e-5, tag
    assert report[f"finetune_{tag}_prob_max_abs_diff"] < 1e-5, tag
  assert report["finetune_ref_param_change"] > 1e-4  # training moved the params
  assert report["finetune_dp_param_specs"] == ["P()"]
  assert "P(None, 'fsdp')" in report["finetune_fsdp_param_specs"]  # big params stay split after training


def test_eight_devices_ppo_episodes_are_split_and_pick_the_same_subset(report):
  assert report["rl_traj_reward_spec"] == "P(None, 'data')"  # [steps, episodes]: episodes over the data axis
  assert report["rl_traj_reward_devices"] == NUM_DEVICES
  assert report["rl_best_mask_equal"] and report["rl_best_score_diff"] == 0.0
