"""launch/*.sh (dry runs and runs against fake gcloud/srun/python) and rlsel.distributed (planning, a real 2-process run).

The scripts run in subprocesses with a clean environment (no real SLURM_*/JAX_*/TPU_* variables) plus fakes on PATH;
printed commands are parsed back with shlex, so the tests also check that the quoting survives a shell.
"""

import json
import os
import shlex
import socket
import subprocess
import sys

import pytest

from rlsel import configlib, distributed
from rlsel.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
CONFIG = "--config=configs/glue.py:sst2"
WORKDIR_LOCAL = "--workdir=/shared/runs/a b"   # a space, to check quoting end to end
SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SLURM_NNODES": "2"}
COORDINATOR = f"gpu-node-07:{61440 + 4242 % 4096}"


def _clean_env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "JAX_", "TPU_")) and k not in ("CUDA_VISIBLE_DEVICES", "XLA_FLAGS")}
  env.update(extra)
  return env


def _write(path, text: str) -> str:
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, 0o755)
  return str(path)


@pytest.fixture
def fakes(tmp_path):
  """A bin dir with scontrol, srun and gcloud fakes, and a fake python that prints its env and argv as JSON."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.jsonl"
  _write(bin_dir / "scontrol", "#!/bin/sh\n[ \"$1 $2\" = \"show hostnames\" ] || exit 1\n"
                               "echo gpu-node-07\necho gpu-node-08\n")
  _write(bin_dir / "srun", "#!/usr/bin/env bash\nn=1\nwhile [[ $1 == --* ]]; do\n"
                           "  case $1 in --ntasks=*) n=${1#*=};; esac; shift\ndone\n"
                           "for ((i=0; i<n; i++)); do SLURM_PROCID=$i \"$@\"; done\n")
  _write(bin_dir / "gcloud", f"#!{sys.executable}\nimport json, os, sys\n"
                             f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                             "sys.exit(1 if 'describe' in sys.argv and not os.environ.get('FAKE_TPU_EXISTS') else 0)\n")
  python = _write(bin_dir / "fakepython", f"#!{sys.executable}\nimport json, os, sys\n"
                                          "keys = ('JAX_PROCESS_ID', 'JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',"
                                          " 'CUDA_VISIBLE_DEVICES')\n"
                                          "print(json.dumps({'env': {k: os.environ.get(k) for k in keys},"
                                          " 'argv': sys.argv[1:], 'cwd': os.getcwd()}))\n")
  return {"path": f"{bin_dir}:{os.environ['PATH']}", "log": log, "python": python, "tmp": tmp_path}


def _run(script: str, args, env, cwd=ROOT):
  return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], env=env, cwd=cwd, capture_output=True,
                        text=True, timeout=30)


def _lines(stdout: str):
  return [shlex.split(line) for line in stdout.strip().splitlines()]


# Usage and bad arguments -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", ["tpu_vm.sh", "gpu_slurm.sh", "gpu_local.sh"])
def test_help_prints_usage(script):
  proc = _run(script, ["--help"], _clean_env())
  assert proc.returncode == 0 and proc.stdout.startswith("Usage")
  assert "--dry-run" in proc.stdout


@pytest.mark.parametrize("script", ["tpu_vm.sh", "gpu_slurm.sh", "gpu_local.sh"])
def test_missing_workdir_fails_with_one_line(script, fakes):
  args = ["--name=t", "--zone=z"] if script == "tpu_vm.sh" else []
  proc = _run(script, [*args, "--dry-run", CONFIG], _clean_env(PATH=fakes["path"], **SLURM_ENV))
  assert proc.returncode != 0 and proc.stdout == ""
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"{script}: pass --workdir=DIR")


# TPU VM ------------------------------------------------------------------------------------------------------------

def test_tpu_dry_run_prints_create_copy_install_and_run_on_all_workers():
  workdir = "--workdir=gs://bucket/run 1"
  proc = _run("tpu_vm.sh", ["--name", "rl-v4", "--zone=us-central2-b", "--project=p1", "--accelerator=v4-16",
                            "--dry-run", CONFIG, workdir, "--config.seeds=(0,1)"], _clean_env())
  assert proc.returncode == 0, proc.stderr
  first, tar, scp, install, run = proc.stdout.strip().splitlines()
  assert first.startswith("gcloud compute tpus tpu-vm describe rl-v4 --zone=us-central2-b --project=p1")
  assert "|| gcloud compute tpus tpu-vm create rl-v4" in first and "--accelerator-type=v4-16" in first
  assert shlex.split(tar)[0] == "tar"
  scp, install, run = map(shlex.split, (scp, install, run))
  assert scp[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and scp[4] == "scp" and "--worker=all" in scp
  assert "--worker=all" in install and "pip install" in install[-1] and ".[tpu]" in install[-1]
  assert run[4] == "ssh" and "--worker=all" in run and "--zone=us-central2-b" in run
  remote = run[-1].removeprefix("--command=")
  assert remote.startswith("cd rlsel && ")
  assert shlex.split(remote.removeprefix("cd rlsel && ")) == [
      "python3", "-m", "rlsel.main", CONFIG, workdir, "--config.seeds=(0,1)", "--config.distributed.enabled=True"]


def test_tpu_run_creates_missing_vm_then_copies_installs_and_runs(fakes):
  proc = _run("tpu_vm.sh", ["--name=rl", "--zone=z1", CONFIG, WORKDIR_LOCAL],
              _clean_env(PATH=fakes["path"], TMPDIR=str(fakes["tmp"])))
  assert proc.returncode == 0, proc.stderr
  calls = [json.loads(line) for line in fakes["log"].read_text().splitlines()]
  assert [c[3] for c in calls] == ["describe", "create", "scp", "ssh", "ssh"]
  tarball = calls[2][4]
  assert os.path.getsize(tarball) > 0
  listing = subprocess.run(["tar", "-tzf", tarball], capture_output=True, text=True, check=True).stdout.split()
  assert "rlsel/sharding.py" in listing and "launch/tpu_vm.sh" in listing
  assert not any("__pycache__" in name for name in listing)
  assert "python3 -m rlsel.main" in calls[-1][-1] and all("--worker=all" in c for c in calls[2:])


def test_tpu_run_reuses_existing_vm(fakes):
  proc = _run("tpu_vm.sh", ["--name=rl", "--zone=z1", "--no-install", CONFIG, WORKDIR_LOCAL],
              _clean_env(PATH=fakes["path"], FAKE_TPU_EXISTS="1"))
  assert proc.returncode == 0, proc.stderr
  calls = [json.loads(line) for line in fakes["log"].read_text().splitlines()]
  assert [c[3] for c in calls] == ["describe", "ssh"]
  assert "reusing TPU VM rl" in proc.stderr


def test_tpu_requires_name():
  proc = _run("tpu_vm.sh", ["--zone=z", CONFIG, WORKDIR_LOCAL], _clean_env())
  assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("tpu_vm.sh: --name is required")


# Slurm -------------------------------------------------------------------------------------------------------------

def test_slurm_script_run_from_sbatchs_spool_copy_finds_its_helpers(fakes, tmp_path):
  """sbatch runs a copy of the script from its spool folder: the shared helpers then come from the code directory
  (SLURM_SUBMIT_DIR, or RLSEL_DIR), and without one the script says what to set."""
  spool = tmp_path / "spool"
  spool.mkdir()
  copy = spool / "slurm_script"
  copy.write_text(open(os.path.join(LAUNCH, "gpu_slurm.sh")).read())
  env = _clean_env(PATH=fakes["path"], SLURM_SUBMIT_DIR=ROOT, **SLURM_ENV)
  proc = subprocess.run(["bash", str(copy), "--dry-run", CONFIG, WORKDIR_LOCAL], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=30)
  assert proc.returncode == 0, proc.stderr
  assert _lines(proc.stdout)[0] == ["cd", ROOT]
  env = _clean_env(PATH=fakes["path"], SLURM_SUBMIT_DIR=str(tmp_path), **SLURM_ENV)
  proc = subprocess.run(["bash", str(copy), "--dry-run", CONFIG, WORKDIR_LOCAL], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=30)
  assert proc.returncode == 2 and "set RLSEL_DIR" in proc.stderr.strip().splitlines()[-1]


def test_slurm_dry_run_prints_coordinator_and_one_task_per_node(fakes):
  proc = _run("gpu_slurm.sh", ["--dry-run", CONFIG, WORKDIR_LOCAL, "--config.rl.num_envs=16"],
              _clean_env(PATH=fakes["path"], SLURM_SUBMIT_DIR="/home/u/rlsel", **SLURM_ENV))
  assert proc.returncode == 0, proc.stderr
  cd, export, srun = _lines(proc.stdout)
  assert cd == ["cd", "/home/u/rlsel"]
  assert export == ["export", f"JAX_COORDINATOR_ADDRESS={COORDINATOR}", "JAX_NUM_PROCESSES=2"]
  assert srun[:5] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
  assert "SLURM_PROCID" in srun[7] and "JAX_PROCESS_ID" in srun[7]
  assert srun[-6:] == ["python", "-m", "rlsel.main", CONFIG, WORKDIR_LOCAL, "--config.rl.num_envs=16"]


def test_slurm_port_override(fakes):
  proc = _run("gpu_slurm.sh", ["--port", "23456", "--dry-run", CONFIG, WORKDIR_LOCAL],
              _clean_env(PATH=fakes["path"], **SLURM_ENV))
  assert proc.returncode == 0, proc.stderr
  assert "JAX_COORDINATOR_ADDRESS=gpu-node-07:23456" in proc.stdout


@pytest.mark.parametrize("missing", sorted(SLURM_ENV))
def test_slurm_missing_variable_fails_fast_with_one_line(fakes, missing):
  env = {k: v for k, v in SLURM_ENV.items() if k != missing}
  proc = _run("gpu_slurm.sh", ["--dry-run", CONFIG, WORKDIR_LOCAL], _clean_env(PATH=fakes["path"], **env))
  assert proc.returncode != 0 and proc.stdout == ""
  assert proc.stderr.strip().splitlines() == [
      f"gpu_slurm.sh: {missing} is not set; run this script under sbatch or salloc (see launch/README.md)"]


def test_slurm_run_gives_each_task_its_process_id(fakes):
  proc = _run("gpu_slurm.sh", [CONFIG, WORKDIR_LOCAL],
              _clean_env(PATH=fakes["path"], PYTHON=fakes["python"], RLSEL_DIR=str(fakes["tmp"]), **SLURM_ENV))
  assert proc.returncode == 0, proc.stderr
  tasks = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [t["env"]["JAX_PROCESS_ID"] for t in tasks] == ["0", "1"]
  for t in tasks:
    assert t["env"]["JAX_COORDINATOR_ADDRESS"] == COORDINATOR and t["env"]["JAX_NUM_PROCESSES"] == "2"
    assert t["argv"] == ["-m", "rlsel.main", CONFIG, WORKDIR_LOCAL]
    assert t["cwd"] == str(fakes["tmp"])


# Local GPUs --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,env,visible", [(["--gpus", "0,2"], {}, "0,2"), ([], {"CUDA_VISIBLE_DEVICES": "3"}, "3"),
                                              ([], {}, None)])
def test_local_dry_run(args, env, visible):
  proc = _run("gpu_local.sh", [*args, "--dry-run", CONFIG, WORKDIR_LOCAL], _clean_env(**env))
  assert proc.returncode == 0, proc.stderr
  lines = _lines(proc.stdout)
  if visible is not None:
    assert lines.pop(0) == ["export", f"CUDA_VISIBLE_DEVICES={visible}"]
  assert lines == [["python", "-m", "rlsel.main", CONFIG, WORKDIR_LOCAL, "--config.distributed.enabled=False"]]


def test_local_run_exports_visible_gpus(fakes):
  proc = _run("gpu_local.sh", ["--gpus=1,0", CONFIG, WORKDIR_LOCAL], _clean_env(PYTHON=fakes["python"]))
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["env"]["CUDA_VISIBLE_DEVICES"] == "1,0" and out["env"]["JAX_PROCESS_ID"] is None
  assert out["argv"] == ["-m", "rlsel.main", CONFIG, WORKDIR_LOCAL, "--config.distributed.enabled=False"]


def test_local_bad_gpu_list():
  proc = _run("gpu_local.sh", ["--gpus=a,b", "--dry-run", CONFIG, WORKDIR_LOCAL], _clean_env())
  assert proc.returncode != 0 and proc.stdout == ""
  assert "--gpus=a,b is not a comma-separated list" in proc.stderr


# rlsel.distributed -------------------------------------------------------------------------------------------------

def _config(**fields):
  c = configlib.base_config()
  for k, v in fields.items():
    setattr(c.distributed, k, v)
  return configlib.lock(c)


SLURM_TASK = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_STEP_NODELIST": "n[1-4]",
              "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("fields,environ,expected", [
    ({}, {}, None),                                                          # one host: nothing
    ({"enabled": False}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, None),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     ("explicit", "h:1", 2, 1)),
    ({"coordinator_address": "c:9", "num_processes": 3, "process_id": 2}, {}, ("explicit", "c:9", 3, 2)),
    ({"process_id": 0}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     ("explicit", "h:1", 2, 0)),                                            # config beats the environment
    ({}, {"JAX_NUM_PROCESSES": "1"}, None),                                 # explicitly one process
    ({}, SLURM_TASK, ("slurm", None, 4, 2)),
    ({}, {**SLURM_TASK, "SLURM_NTASKS": "1"}, None),                        # one Slurm task: one host
    ({}, {"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, ("tpu", None, None, None)),
    ({}, {"TPU_WORKER_HOSTNAMES": "t0"}, None),
    ({"enabled": True}, {}, ("auto", None, None, None)),                   # e.g. a Cloud TPU VM slice
])
def test_resolve(fields, environ, expected):
  plan = distributed.resolve(_config(**fields), environ)
  assert (None if plan is None else tuple(plan)) == expected


@pytest.mark.parametrize("fields,environ,needle", [
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "process_id not set"),
    ({}, {"JAX_NUM_PROCESSES": "2"}, "coordinator_address, process_id not set"),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "out of range"),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "is not host:port"),
    ({}, {"JAX_NUM_PROCESSES": "two"}, "is not an integer"),
    ({"num_processes": 0}, {}, "must be -1 (auto) or >= 1"),
    ({}, {**SLURM_TASK, "SLURM_PROCID": "4"}, "out of range"),
    ({}, {k: v for k, v in SLURM_TASK.items() if k != "SLURM_STEP_NODELIST"}, "start it with srun"),
])
def test_resolve_inconsistent_settings_raise_one_line(fields, environ, needle):
  with pytest.raises(UserError) as e:
    distributed.resolve(_config(**fields), environ)
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_maybe_initialize_is_a_no_op_on_one_host():
  import jax
  assert distributed.maybe_initialize(_config(), environ={}) is None
  assert not jax.distributed.is_initialized()
  assert distributed.is_main_process()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_initialize_and_agree_with_one_device():
  """Two real processes on this host (2 CPU devices each) through maybe_initialize, shard_batch, data_parallel_grad."""
  env = _clean_env(JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES="2")
  procs = [subprocess.Popen([sys.executable, "-m", "tests.multidevice", "multihost", "2"], cwd=ROOT,
                            env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  assert [o["process_index"] for o in outs] == [0, 1]
  assert [o["is_main_process"] for o in outs] == [True, False]
  for i, o in enumerate(outs):
    assert o["plan"]["source"] == "explicit" and o["plan"]["process_id"] == i
    assert (o["process_count"], o["device_count"], o["local_device_count"]) == (2, 4, 2)
    assert o["mesh"] == {"data": 4, "fsdp": 1}
    assert o["grad_max_abs_diff"] < 1e-6
