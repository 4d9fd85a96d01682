"""Kill -9 the main command at several points, restart it, and get exactly the uninterrupted results; and the same
run on 8 simulated devices (data-parallel fine-tuning, episodes split over devices) picks the same examples."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

TIMING = {"select_seconds", "finetune_seconds", "validation_seconds", "test_seconds", "embed_seconds", "info"}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
ARGS = ["--config=configs/debug.py", "--config.finetune.max_steps=30",
        "--config.data.max_examples=300", "--config.finetune.eval_batch_size=32",
        # no progress callback in the agent program: JAX then caches it, so the restarts reuse its compilation
        "--config.rl.log_every=0"]


def _run(workdir, kill_on=None, env=None, selectors="full,random,rl_ppo"):
  """Runs the main command; with `kill_on`, SIGKILLs it as soon as a stdout line contains that text."""
  proc = subprocess.Popen([sys.executable, "-m", "rlsel.main", *ARGS, f"--config.selectors={selectors}", f"--workdir={workdir}"], cwd=REPO,
                          env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if kill_on and kill_on in line:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      return "killed", seen
  proc.wait()
  assert proc.returncode == 0, "".join(seen[-20:])
  return "finished", seen


def _comparable(workdir):
  rows = json.loads((workdir / "results.json").read_text())
  rows = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
  sel = {p.name: json.loads(p.read_text()) for p in sorted((workdir / "selections").glob("*.json"))}
  return rows, sel


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted one-device run both tests compare against."""
  ref = tmp_path_factory.mktemp("fault") / "ref"
  assert _run(ref)[0] == "finished"
  return ref


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_matches_uninterrupted(tmp_path, reference):
  ref = reference

  wd = tmp_path / "faulty"
  kill_points = [
      "[full-rt-0 finetune] checkpoint saved at step 10",   # during fine-tuning, right after a checkpoint
      "[full-rt-0 finetune] checkpoint saved at step 20",   # again, after resuming from step 10
      "[full-rt-0] row saved to results.json",              # between cells: the row is written, the next not begun
      "[rl_ppo] agent checkpoint saved at update 2",        # during agent training (4 updates, saved every 2)
  ]
  outputs = []
  for point in kill_points:
    status, out = _run(wd, kill_on=point)
    assert status == "killed", f"never reached: {point}"
    outputs.append("".join(out))
  status, out = _run(wd)
  assert status == "finished"
  assert "resuming from the checkpoint at step 10" in outputs[1]
  assert "resuming from the checkpoint at step 20" in outputs[2]
  assert "resuming agent training from the checkpoint at update 2" in "".join(out)
  assert "[full-rt-0]" not in "".join(out)  # the finished cell is not redone
  assert _comparable(wd) == _comparable(ref)
  assert not any((wd / "checkpoints").iterdir())  # finished cells leave no checkpoints behind


@pytest.mark.slow
def test_eight_devices_give_the_same_selection_ids(tmp_path, reference):
  env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  # random and rl_ppo only: their fine-tunes exercise the same data-parallel step as full, with fewer steps
  status, out = _run(tmp_path / "eight", env=env, selectors="random,rl_ppo")
  assert status == "finished"
  assert "mesh: {'data': 8, 'fsdp': 1} over 8 cpu devices" in "".join(out)
  rows8, sel8 = _comparable(tmp_path / "eight")
  rows1, sel1 = _comparable(reference)
  rows1 = [r for r in rows1 if r["selector"] != "full"]
  sel1 = {k: v for k, v in sel1.items() if not k.startswith("full")}
  assert sel8 == sel1 and len(sel1) == 2  # random, rl_ppo: identical ids
  assert len(rows8) == len(rows1) == 2
  for r1, r8 in zip(rows1, rows8):  # same metrics, up to float reduction order on another device layout
    assert (r1["selector"], r1["n_selected"], r1["finetune_steps"]) == (r8["selector"], r8["n_selected"],
                                                                          r8["finetune_steps"])
    assert abs(r1["test_accuracy"] - r8["test_accuracy"]) <= 1.0 / 30, (r1, r8)
