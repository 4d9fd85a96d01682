#!/usr/bin/env bash
# Does every figure-producing command of benchmarks/RESULTS.md still run? Each program is started with its real
# config (glue.py, benchmark.py and its :more / :legacy variants, rlvr.py) shrunk by overrides to minutes in all
# (a 600-example sample, a few fine-tune steps, a tiny RL budget), in a fresh workdir; it must exit 0 and write
# its output files. It checks that the commands run, not their figures.
#
#   benchmarks/commands_check.sh [WORKDIR]      # default /tmp/rlsel_commands_check; one line per command, then
#                                                # commands_ok=<passed>/<total>
set -uo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/rlsel_commands_check}
rm -rf "$W" && mkdir -p "$W"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAX_PLATFORMS=cpu
# The selection track's grid, shrunk: a 600-example sample, 16 tokens, a handful of steps, a tiny RL budget.
SMALL=(--config.data.max_examples=600 --config.features.max_length=16 --config.finetune.min_steps=4
       --config.finetune.max_steps=4 --config.finetune.eval_every=2 --config.seeds=0
       --config.kmeans.num_clusters=8 --config.kmeans.iters=3 --config.proxy.steps=4 --config.proxy.init_steps=4
       --config.rl.num_envs=4 --config.rl.num_updates=2 --config.rl.episode_steps=4 --config.rl.fast_compile=True
       --config.climb.iterations=1 --config.climb.samples=8 --config.climb.warm_iterations=1
       --config.selection.warmup_epochs=1 --config.selection.probe_steps=10)
passed=0
total=0
check() {  # check NAME FILE-THAT-MUST-EXIST COMMAND...
  local name=$1 must=$2
  shift 2
  total=$((total + 1))
  local t0=$SECONDS
  if "$@" >"$W/$name.log" 2>&1 && [ -e "$must" ]; then
    passed=$((passed + 1))
    echo "ok    $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $name ($((SECONDS - t0)) s): see $W/$name.log"
    tail -3 "$W/$name.log" | sed 's/^/      /'
  fi
}
check main_job "$W/main/results.json" \
  python -m rlsel.main --config=configs/glue.py --workdir="$W/main" "${SMALL[@]}"
check benchmark "$W/bench/summary.json" \
  python -m rlsel.main --config=configs/benchmark.py --config.tasks=rt --workdir="$W/bench" "${SMALL[@]}"
check benchmark_more "$W/bench_more/results.json" \
  python -m rlsel.main --config=configs/benchmark.py:more --config.tasks=bbc --config.selectors=full,random \
  --workdir="$W/bench_more" "${SMALL[@]}"
check benchmark_legacy "$W/bench_legacy/plots" \
  python -m rlsel.main --config=configs/benchmark.py:legacy --config.tasks=rt \
  --config.selectors=random,less,learnalign,cropi,dots,entropy,cluster_balanced --config.sweep.selectors=random \
  --config.sweep.budgets=0.1 --workdir="$W/bench_legacy" "${SMALL[@]}"
check merge "$W/merged/results.json" \
  python -m rlsel.results merge "$W/merged" "$W/bench"
check selection_profile "$W/bench/profile/rt.json" \
  python -m rlsel.bench.selection_profile --config=configs/benchmark.py --workdir="$W/bench" --task=rt \
  --config.data.max_examples=600 --config.features.max_length=16
check proxy_fidelity "$W/main/fidelity" \
  python -m rlsel.bench.proxy_fidelity --config=configs/glue.py --workdir="$W/main" --subsets=3 --retest_keys=2 \
  "${SMALL[@]}"
check steps_curve "$W/steps_curve.log" \
  python -m rlsel.bench.steps_curve --workdir=benchmarks/steps_curve --run=False
check throughput "$W/throughput.log" \
  python -m rlsel.bench.throughput --pool 2000 --envs 1,16 --ppo_updates 2 --python_episodes 1 --repeats 1 \
    --profile_envs 16 --matmul 512 --memory_mb 64
check memory "$W/memory.log" \
  python -m rlsel.bench.memory --pool 20000 --updates 1 --envs 4
check rlvr "$W/rlvr/results.md" \
  python -m rlsel.main --config=configs/rlvr.py:smoke --workdir="$W/rlvr"
echo "commands_ok=$passed/$total"
[ "$passed" -eq "$total" ]
