#!/usr/bin/env bash
# Runs rlsel on a Cloud TPU VM (one host or a multi-host slice): creates the VM unless it exists, copies this
# checkout to every worker, installs it, and starts the same `python3 -m rlsel.main ...` on all workers at once.
# Every worker calls jax.distributed.initialize (auto-detected from the TPU metadata); process 0 writes the results.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh --name NAME --zone ZONE [options] [--dry-run] [--] --config=configs/X.py --workdir=DIR [--config.field=value ...]

Creates (or reuses) the TPU VM NAME, copies the code to every worker with scp, installs it with pip and runs
`python3 -m rlsel.main` with the remaining arguments on all workers (--worker=all).

Options:
  --name NAME          TPU VM name (created when it does not exist)
  --zone ZONE          its zone, e.g. us-central2-b
  --project PROJECT    Google Cloud project (default: gcloud's configured project)
  --accelerator TYPE   accelerator type when creating (default: v4-8)
  --version VERSION    TPU software version when creating (default: tpu-ubuntu2204-base)
  --spot               create a Spot VM
  --python PYTHON      interpreter on the workers (default: python3)
  --no-install         skip the copy and pip install (code already there)
  --dry-run            print the commands instead of running them
  -h, --help           this message
Use a workdir all workers can reach (e.g. gs://bucket/run1) or accept that only worker 0 holds the results.
EOF
}

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

name="" zone="" project="" accelerator="v4-8" version="tpu-ubuntu2204-base" spot=0 python="python3"
install=1 dry_run=0 args=()
while (($#)); do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --zone=*) zone="${1#*=}"; shift ;;
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --project=*) project="${1#*=}"; shift ;;
    --accelerator) accelerator="${2:?--accelerator needs a value}"; shift 2 ;;
    --accelerator=*) accelerator="${1#*=}"; shift ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --python) python="${2:?--python needs a value}"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    --spot) spot=1; shift ;;
    --no-install) install=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done

[[ -n "$name" ]] || { usage >&2; die "--name is required (the TPU VM to create or reuse)"; }
[[ -n "$zone" ]] || die "--zone is required (e.g. --zone=us-central2-b)"
require_main_args "DIR (the arguments after the options go to rlsel.main)"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gcloud="${GCLOUD:-gcloud}"
remote_dir="rlsel"            # relative to the home directory on each worker
tarball="${TMPDIR:-/tmp}/rlsel-${name}.tar.gz"
where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")

run() { if ((dry_run)); then show "$@"; else "$@"; fi; }

# 1. Reuse the VM if it exists, else create it.
create=("$gcloud" compute tpus tpu-vm create "$name" "${where[@]}" --accelerator-type="$accelerator"
        --version="$version")
((spot)) && create+=(--spot)
describe=("$gcloud" compute tpus tpu-vm describe "$name" "${where[@]}")
if ((dry_run)); then
  echo "$(show "${describe[@]}") >/dev/null 2>&1 || $(show "${create[@]}")"
elif "${describe[@]}" >/dev/null 2>&1; then
  echo "tpu_vm.sh: reusing TPU VM $name in $zone" >&2
else
  echo "tpu_vm.sh: creating TPU VM $name ($accelerator) in $zone" >&2
  "${create[@]}"
fi

# 2. Copy this checkout to every worker and install it.
if ((install)); then
  parts=()
  for p in rlsel configs launch setup.cfg pyproject.toml README.md requirements-assets.txt; do
    [[ -e "$repo/$p" ]] && parts+=("$p")
  done
  run tar -czf "$tarball" -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' "${parts[@]}"
  run "$gcloud" compute tpus tpu-vm scp "$tarball" "$name:rlsel.tar.gz" "${where[@]}" --worker=all
  setup="mkdir -p $remote_dir && tar -xzf rlsel.tar.gz -C $remote_dir && cd $remote_dir"
  setup+=" && $python -m pip install -q -e '.[tpu]'"
  setup+=" && { [ ! -f requirements-assets.txt ] || $python -m pip install -q --no-deps -r requirements-assets.txt; }"
  run "$gcloud" compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$setup"
fi

# 3. The same command on every worker; jax.distributed finds the slice from the TPU metadata.
main="cd $remote_dir && $(show "$python" -m rlsel.main "${args[@]}" --config.distributed.enabled=True)"
run "$gcloud" compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$main"
