"""Multi-host start-up: one call to `jax.distributed.initialize` when the run spans several processes, else nothing.

`maybe_initialize(config)` must run before anything touches a JAX device (first thing in `main`). Where the settings
come from, first match wins:
  1. `config.distributed.enabled=False`: never initialise.
  2. Explicit settings: `config.distributed.{coordinator_address,num_processes,process_id}`, each falling back to
     `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` (what launch/gpu_slurm.sh exports).
  3. A Slurm step with several tasks (`srun`): SLURM_NTASKS / SLURM_PROCID, coordinator found by JAX.
  4. A multi-host TPU slice (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES list several hosts): found by JAX.
  5. `config.distributed.enabled=True` with none of the above: JAX's own cluster auto-detection (Cloud TPU VM
     metadata, Kubernetes, MPI); launch/tpu_vm.sh uses this.
Otherwise the run is single-process and nothing happens. `is_main_process()` gates file writes to process 0.
"""

import os
from typing import Mapping, NamedTuple

from absl import logging

from rlsel.errors import UserError, require

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
TPU_HOST_LISTS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


class Plan(NamedTuple):
  """What `jax.distributed.initialize` gets; None fields are left to JAX's cluster auto-detection."""
  source: str                      # "explicit", "slurm", "tpu" or "auto"
  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"environment variable {name}={value!r} is not an integer; set it to a whole number or unset it")


def _explicit(dc, environ: Mapping[str, str]) -> Plan | None:
  """Plan from config fields / JAX_* variables, or None when neither names anything."""
  address = str(dc.coordinator_address or environ.get(ENV_ADDRESS, "")).strip() or None
  num = int(dc.num_processes) if int(dc.num_processes) != -1 else _int_env(environ, ENV_NUM_PROCESSES)
  pid = int(dc.process_id) if int(dc.process_id) != -1 else _int_env(environ, ENV_PROCESS_ID)
  if address is None and num is None and pid is None:
    return None
  require(num is None or num >= 1,
          f"distributed num_processes={num} must be >= 1; set --config.distributed.num_processes or {ENV_NUM_PROCESSES}")
  if num == 1:
    require(pid in (None, 0), f"distributed process_id={pid} is out of range for num_processes=1; use process_id=0")
    return Plan("explicit", address, 1, 0)
  missing = [name for name, value in (("coordinator_address", address), ("num_processes", num),
                                      ("process_id", pid)) if value is None]
  require(not missing,
          f"multi-host settings are incomplete: {', '.join(missing)} not set; set --config.distributed.<field> or "
          f"the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID variables together (or none of them)")
  require(0 <= pid < num,
          f"distributed process_id={pid} is out of range for num_processes={num}; use an id in [0, {num - 1}]")
  host, _, port = address.rpartition(":")
  require(bool(host) and port.isdigit(),
          f"coordinator_address={address!r} is not host:port; use e.g. node001:12345 (the host of process 0)")
  return Plan("explicit", address, num, pid)


def _slurm(environ: Mapping[str, str]) -> Plan | None:
  """Plan for a Slurm step with several tasks (one process per task), else None."""
  if "SLURM_JOB_ID" not in environ or "SLURM_PROCID" not in environ:
    return None
  num = _int_env(environ, "SLURM_STEP_NUM_TASKS") or _int_env(environ, "SLURM_NTASKS") or 1
  if num <= 1:
    return None
  pid = _int_env(environ, "SLURM_PROCID")
  require(0 <= pid < num, f"SLURM_PROCID={pid} is out of range for {num} Slurm tasks; start the tasks with srun")
  require("SLURM_STEP_NODELIST" in environ and "SLURM_LOCALID" in environ,
          f"Slurm reports {num} tasks but this process is not an srun task (SLURM_STEP_NODELIST/SLURM_LOCALID unset); "
          f"start it with srun, e.g. through launch/gpu_slurm.sh, or pass --config.distributed.enabled=False")
  return Plan("slurm", None, num, pid)


def _tpu(environ: Mapping[str, str]) -> Plan | None:
  """Plan for a TPU slice whose environment lists several hosts, else None."""
  for name in TPU_HOST_LISTS:
    hosts = [h for h in environ.get(name, "").split(",") if h.strip()]
    if len(hosts) > 1:
      return Plan("tpu", None, None, None)
  return None


def resolve(config, environ: Mapping[str, str] | None = None) -> Plan | None:
  """The initialisation plan for `config` in `environ` (default os.environ); None = single process, do nothing."""
  environ = os.environ if environ is None else environ
  dc = config.distributed
  if dc.enabled is False:
    return None
  require(int(dc.num_processes) == -1 or int(dc.num_processes) >= 1,
          f"config.distributed.num_processes={dc.num_processes} must be -1 (auto) or >= 1")
  require(int(dc.process_id) >= -1, f"config.distributed.process_id={dc.process_id} must be -1 (auto) or >= 0")
  plan = _explicit(dc, environ)
  if plan is not None:
    return None if plan.num_processes == 1 else plan
  plan = _slurm(environ) or _tpu(environ)
  if plan is None and dc.enabled:
    plan = Plan("auto", None, None, None)
  return plan


def maybe_initialize(config, environ: Mapping[str, str] | None = None) -> Plan | None:
  """Calls `jax.distributed.initialize` as `resolve` decides (once per process), logs the outcome, returns the plan."""
  import jax

  plan = resolve(config, environ)
  if plan is None:
    logging.info("distributed: single process (nothing to initialise)")
    return None
  if jax.distributed.is_initialized():
    logging.info("distributed: already initialised (process %d of %d)", jax.process_index(), jax.process_count())
    return plan
  logging.info("distributed: initialising from %s: coordinator=%s num_processes=%s process_id=%s", plan.source,
               plan.coordinator_address or "auto", plan.num_processes or "auto",
               "auto" if plan.process_id is None else plan.process_id)
  try:
    jax.distributed.initialize(coordinator_address=plan.coordinator_address, num_processes=plan.num_processes,
                               process_id=plan.process_id)
  except ValueError as e:  # JAX's auto-detection found no cluster to fill the missing fields
    raise UserError(f"jax.distributed could not find its settings ({e}); set --config.distributed.coordinator_address, "
                    f"num_processes and process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), "
                    f"or --config.distributed.enabled=False for one host")
  logging.info("distributed: process %d of %d, %d local of %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return plan


def is_main_process() -> bool:
  """True on process 0, the one that writes results, selections, plots and logs."""
  import jax
  return jax.process_index() == 0
