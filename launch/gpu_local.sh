#!/usr/bin/env bash
# Runs rlsel on one machine with all (or the chosen) GPUs in a single process: JAX sees every visible GPU as a
# device and rlsel.sharding splits batches over them. jax.distributed is switched off (one host).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gpu_local.sh [--gpus 0,1,...] [--dry-run] [--] --config=configs/X.py --workdir=DIR [--config.field=value ...]

Starts one `python -m rlsel.main` process with the remaining arguments, using every GPU of this machine.
Options:
  --gpus LIST   GPU indices to use, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES; default: keep CUDA_VISIBLE_DEVICES
                if set, else all GPUs)
  --dry-run     print the commands instead of running them
  -h, --help    this message
Environment: PYTHON (default python). Needs jax with CUDA: pip install -e '.[cuda]'.
EOF
}

die() { echo "gpu_local.sh: $*" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

gpus="" dry_run=0 args=()
while (($#)); do
  case "$1" in
    --gpus) gpus="${2:?--gpus needs a value}"; shift 2 ;;
    --gpus=*) gpus="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done
require_main_args "DIR (the arguments after the options go to rlsel.main)"
[[ -z "$gpus" || "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus=$gpus is not a comma-separated list of GPU indices like 0,1,2"


if [[ -n "$gpus" ]]; then
  visible="$gpus"
elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  visible="$CUDA_VISIBLE_DEVICES"
else
  visible=""  # all GPUs
fi
if [[ -z "$visible" ]] && command -v nvidia-smi >/dev/null; then
  count="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
  echo "gpu_local.sh: using all ${count:-?} GPUs" >&2
elif [[ -n "$visible" ]]; then
  echo "gpu_local.sh: using GPUs $visible" >&2
else
  echo "gpu_local.sh: nvidia-smi not found; JAX will use whatever devices it finds" >&2
fi

cmd=("${PYTHON:-python}" -m rlsel.main "${args[@]}" --config.distributed.enabled=False)
if ((dry_run)); then
  [[ -n "$visible" ]] && show export CUDA_VISIBLE_DEVICES="$visible"
  show "${cmd[@]}"
  exit 0
fi
[[ -n "$visible" ]] && export CUDA_VISIBLE_DEVICES="$visible"
exec "${cmd[@]}"
