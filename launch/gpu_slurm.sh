#!/usr/bin/env bash
# Runs rlsel on several GPU nodes under Slurm: one process per node (each driving all GPUs of its node), started by
# srun. Process 0 runs on the first host of the allocation and is the jax.distributed coordinator; every task gets
# JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES from here and JAX_PROCESS_ID from its SLURM_PROCID.
#SBATCH --job-name=rlsel
#SBATCH --ntasks-per-node=1
set -euo pipefail

usage() {
  cat <<'EOF'
Usage (from the repository root, inside a Slurm allocation):
  sbatch --nodes=2 --gpus-per-node=8 launch/gpu_slurm.sh [--port N] [--dry-run] [--] --config=configs/X.py --workdir=DIR [...]
  salloc --nodes=2 --gpus-per-node=8   then   launch/gpu_slurm.sh --config=configs/X.py --workdir=DIR [...]

Starts `python -m rlsel.main` with the remaining arguments once per node (srun --ntasks-per-node=1).
Options:
  --port N     coordinator port on the first node (default: 61440 + SLURM_JOB_ID % 4096, as JAX does)
  --dry-run    print the commands instead of running them
  -h, --help   this message
Environment: PYTHON (default python), RLSEL_DIR (code directory; default SLURM_SUBMIT_DIR, else the current one).
The workdir must be on a file system every node sees; only process 0 writes results.
EOF
}

die() { echo "gpu_slurm.sh: $*" >&2; exit 2; }
# sbatch runs a copy of this script from its spool folder: then the helpers come from the code directory
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" 2>/dev/null \
  || source "${RLSEL_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}/launch/common.sh" \
  || die "launch/common.sh not found; set RLSEL_DIR to the rlsel checkout"

port="" dry_run=0 args=()
while (($#)); do
  case "$1" in
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done
require_main_args "DIR on a shared file system (the arguments go to rlsel.main)"

for var in SLURM_JOB_ID SLURM_JOB_NODELIST SLURM_NNODES; do
  [[ -n "${!var:-}" ]] || die "$var is not set; run this script under sbatch or salloc (see launch/README.md)"
done
[[ "$SLURM_NNODES" =~ ^[1-9][0-9]*$ ]] || die "SLURM_NNODES=$SLURM_NNODES is not a positive integer"
command -v scontrol >/dev/null || die "scontrol is not on PATH; run this script on a Slurm node"
[[ -z "$port" ]] && port=$((61440 + SLURM_JOB_ID % 4096))
[[ "$port" =~ ^[0-9]+$ ]] || die "--port=$port is not a number"

hosts="$(scontrol show hostnames "$SLURM_JOB_NODELIST")" || die "scontrol could not expand SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
coordinator="${hosts%%$'\n'*}"
[[ -n "$coordinator" ]] || die "SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST names no host"
python="${PYTHON:-python}"
code_dir="${RLSEL_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}"


# Each task reads its own SLURM_PROCID (set by srun) as the JAX process id.
task='export JAX_PROCESS_ID="${SLURM_PROCID:?SLURM_PROCID unset: not an srun task}"; exec "$@"'
cmd=(srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1
     bash -c "$task" rlsel-task "$python" -m rlsel.main "${args[@]}")

if ((dry_run)); then
  show cd "$code_dir"
  show export JAX_COORDINATOR_ADDRESS="$coordinator:$port" JAX_NUM_PROCESSES="$SLURM_NNODES"
  show "${cmd[@]}"
  exit 0
fi
cd "$code_dir"
export JAX_COORDINATOR_ADDRESS="$coordinator:$port" JAX_NUM_PROCESSES="$SLURM_NNODES"
echo "gpu_slurm.sh: $SLURM_NNODES processes, coordinator $JAX_COORDINATOR_ADDRESS" >&2
exec "${cmd[@]}"
