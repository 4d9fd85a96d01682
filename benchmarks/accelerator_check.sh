#!/usr/bin/env bash
# The device check for the day a GPU is at hand: installs the `cuda` extra, runs the main job in bf16 and the
# throughput benchmark on one GPU, within 10 minutes, and prints the figures in one block at the end.
#
#   benchmarks/accelerator_check.sh [--dry-run] [--no-install] [--workdir DIR]
#
# --dry-run prints the commands (and checks the options) without running anything: this is what the CPU test runs.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
}
die() { echo "accelerator_check.sh: $*" >&2; exit 2; }

dry_run=0 install=1 W=/tmp/rlsel_accelerator_check
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --no-install) install=0; shift ;;
    --workdir) W="${2:?--workdir needs a directory}"; shift 2 ;;
    --workdir=*) W="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
PY=${PYTHON:-python}

# Time limits (seconds) per step; they add up to under 10 minutes with the final summary.
INSTALL_S=90 MAIN_S=240 THROUGHPUT_S=240
# The throughput benchmark on a GPU: the default pool, episodes batched far wider than on a CPU.
THROUGHPUT_ARGS=(--envs 16,256,4096 --profile_envs 1024 --matmul 8192 --memory_mb 2048)

names=() commands=()
add() { names+=("$1"); commands+=("$2"); }
# A machine with no package index keeps its installed jax: a failed install is reported, not fatal.
((install)) && add install "timeout $INSTALL_S $PY -m pip install -q -e .[cuda]"
add device "$PY -c 'import jax; d = jax.devices()[0]; assert d.platform == \"gpu\", d; print(\"device:\", d.device_kind)'"
add main_job "timeout $MAIN_S $PY -m rlsel.main --config=configs/glue.py --workdir=$W/main --config.target.dtype=bfloat16"
add throughput "timeout $THROUGHPUT_S $PY -m rlsel.bench.throughput ${THROUGHPUT_ARGS[*]}"

if ((dry_run)); then
  printf '%s\n' "${commands[@]}"
  echo "accelerator_check: dry run, nothing executed (workdir $W)"
  exit 0
fi

mkdir -p "$W"
rm -f "$W/timings.txt"
status=0
for i in "${!commands[@]}"; do
  name=${names[$i]} c=${commands[$i]}
  t0=$SECONDS
  if bash -c "$c" >"$W/$name.log" 2>&1; then
    echo "ok    $name ($((SECONDS - t0)) s): $c"
  else
    [ "$name" = install ] || status=1
    echo "FAIL  $name ($((SECONDS - t0)) s): $c; see $W/$name.log"
    tail -3 "$W/$name.log" | sed 's/^/      /'
  fi
  echo "${name}_seconds=$((SECONDS - t0))" >>"$W/timings.txt"
done

echo "===== accelerator_check figures ====="
grep -h "^device:" "$W/device.log" 2>/dev/null
[ -f "$W/main/results.md" ] && sed -n '1,40p' "$W/main/results.md"
grep -hE "^pool|^\[|^same-run|^peak memory|^on paper|^vs_restart_proxy=|^ppo_env_steps_per_s=" "$W/throughput.log" 2>/dev/null
cat "$W/timings.txt"
echo "accelerator_check_ok=$((1 - status))"
exit $status
