#!/usr/bin/env bash
# Side-by-side CPU benchmark: kiln vs ONNX Runtime (onnxruntime-node) vs PyTorch.
#
#   bench/run.sh [--models fast|all|a,b] [--batches 1,8] [--threads N] [--rounds R]
#                [--runs N] [--warmup N] [--startup-samples N] [--kiln PATH]
#                [--timeout S] [--out FILE]
#
# Installs ORT (bench/setup.sh), exports the models into build/zoo (skipping ones
# already there), measures the machine's FMA peak (bench/peak/fma_peak.cpp, built
# with g++ -fopenmp), then for every model and batch size runs the three engines
# round-robin, each run in a fresh process, with the same thread count and input
# shape. Batch sizes other than 1 apply to the 2D image models (input rank 4 with a
# dynamic batch axis); the others run at their batch-1 shape only. Every process
# gets KILN_BENCH_SPAWN_NS (wall clock just before the spawn) and reports its
# start-up (spawn -> first output). Raw JSON goes to build/bench/<timestamp>/, the
# summary (medians across rounds) to bench/RESULTS.md. Start-up varies more from process
# to process than latency does (thread start-up and page faults on a 2-vCPU VM: a small
# model's first output moves by +-30%), so after its rounds each model also gets
# --startup-samples (default 6) start-up-only processes per engine for kiln and ORT
# (1 run, no warm-up, alternating, the first engine rotating); their start-up medians
# are over the rounds' batch-1 processes and these together.
# A missing or failing engine is recorded as "error" and the run goes on.
# Run it on an otherwise idle machine: the load average is recorded in the report.
# On a busy machine, OMP_WAIT_POLICY=PASSIVE (passed to every engine) avoids
# libgomp's busy-waiting collapse; its value is recorded too.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3

models=fast batches=1,8 threads=2 rounds=3 runs=10 warmup=3 startup_samples=6 kiln=$ROOT/build/kiln timeout_s=900
out=$ROOT/bench/RESULTS.md
command_line="bench/run.sh $*"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --startup-samples) startup_samples=$2; shift 2 ;;
    --kiln) kiln=$(realpath -m "$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --out) out=$(realpath -m "$2"); shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
if [[ ! "$startup_samples" =~ ^[0-9]+$ ]]; then
  echo "--startup-samples: expected a non-negative integer, got '$startup_samples'" >&2; exit 2
fi
if [[ ! "$batches" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]]; then
  echo "--batches: expected a comma-separated list of positive integers, got '$batches'" >&2; exit 2
fi
batch_list=${batches//,/ }
cd "$ROOT"

bench/setup.sh || { echo "bench/setup.sh failed" >&2; exit 1; }
names=$($PY -c 'import sys; sys.path.insert(0, "python"); import export_zoo as z
print(" ".join(z.resolve_models(sys.argv[1])))' "$models") || exit 2
$PY python/export_zoo.py --out build/zoo --models "${names// /,}" \
  || echo "warning: some exports failed; those models are skipped" >&2

date=$(date -u "+%Y-%m-%d %H:%M:%S UTC")
raw=build/bench/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v n="$(nproc)" '{ exit !($1 > n / 2) }' /proc/loadavg; then
  echo "warning: load average $load_start on $(nproc) CPUs; timings will be noisy" >&2
fi

# FMA peak of this machine (the roofline's compute ceiling), measured while it is otherwise idle.
peak_bin=build/bench/fma_peak
mkdir -p build/bench
if [[ ! -x "$peak_bin" || bench/peak/fma_peak.cpp -nt "$peak_bin" ]]; then
  g++ -O2 -fopenmp -o "$peak_bin" bench/peak/fma_peak.cpp 2> "$raw/peak.stderr" \
    || echo "warning: building bench/peak/fma_peak.cpp failed; no roofline peak" >&2
fi
if [[ -x "$peak_bin" ]]; then
  echo "measuring the FMA peak ($threads threads)"
  "$peak_bin" --threads "$threads" > "$raw/peak.json" 2>> "$raw/peak.stderr" \
    || echo "warning: $peak_bin failed; no roofline peak" >&2
fi

# Runs one engine once: stdout to $dest.json, stderr to $dest.stderr, exit status to $dest.rc.
# KILN_BENCH_SPAWN_NS is stamped right before the spawn; every engine reports its first output
# relative to it (start-up), so the measurement is the same for all three.
run_engine() {
  local engine=$1 model=$2 shape=$3 dest=$4 model_runs=$5 model_warmup=$6
  local args=("$model" --shape "$shape" --threads "$threads" --runs "$model_runs"
              --warmup "$model_warmup" --json)
  local cmd
  case "$engine" in
    kiln)
      if [[ ! -x "$kiln" ]]; then
        : > "$dest.json"; echo "kiln binary not found at $kiln" > "$dest.stderr"
        echo 127 > "$dest.rc"; return
      fi
      cmd=("$kiln" bench "${args[@]}") ;;
    ort) cmd=(node bench/ort_bench.js "${args[@]}") ;;
    torch) cmd=("$PY" bench/torch_bench.py "${args[@]}") ;;
  esac
  local spawn_ns  # wall clock in ns; EPOCHREALTIME (bash 5) has 6 decimals and needs no fork
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    spawn_ns=${EPOCHREALTIME//[!0-9]/}000
  else
    spawn_ns=$(date +%s%N)
  fi
  KILN_BENCH_SPAWN_NS=$spawn_ns timeout "$timeout_s" "${cmd[@]}" > "$dest.json" 2> "$dest.stderr"
  echo $? > "$dest.rc"
}

engines=(kiln ort torch)
for name in $names; do
  meta=build/zoo/$name/meta.json
  if [[ ! -f "$meta" ]]; then
    echo "$name: not exported, skipping" >&2; continue
  fi
  # input name, the shape after the batch axis, its batch, FLOPs at that batch, and whether
  # other batch sizes apply (2D image model: rank 4 with a dynamic batch axis)
  read -r input rest native flops batchable < <($PY -c 'import json, sys; m = json.load(open(sys.argv[1]))
s = m["input_shape"]
print(m["input_name"], "x".join(map(str, s[1:])), s[0], m.get("flops_estimate", 0),
      int(len(s) == 4 and bool(m.get("dynamic_batch"))))' "$meta")
  startup_batch=
  for batch in $batch_list; do
    if (( batch != native && ! batchable )); then
      echo "[$name] batch $batch skipped (not a 2D image model with a dynamic batch axis)"
      continue
    fi
    [[ -z "$startup_batch" ]] || (( batch < startup_batch )) && startup_batch=$batch
    shape="$input=${batch}x$rest"
    # Heavy runs get fewer iterations: assume ~20 GFLOP/s and aim at <= 20 s per process.
    est_ms=$(( flops / native * batch / 20000000 + 1 ))
    model_runs=$(( 20000 / est_ms )); model_warmup=$warmup
    (( model_runs > runs )) && model_runs=$runs
    (( model_runs < 3 )) && model_runs=3
    (( est_ms > 1000 )) && model_warmup=1
    for (( r = 0; r < rounds; r++ )); do
      for (( i = 0; i < ${#engines[@]}; i++ )); do
        # rotate the starting engine each round so none always runs first
        engine=${engines[$(( (i + r) % ${#engines[@]} ))]}
        echo "[$name] batch $batch, round $(( r + 1 ))/$rounds: $engine ($shape, $model_runs runs)"
        run_engine "$engine" "build/zoo/$name/model.onnx" "$shape" \
          "$raw/$name.b$batch.$engine.$r" "$model_runs" "$model_warmup"
      done
    done
  done
  # Start-up-only processes (see the header): kiln and ORT, at the batch start-up is reported for.
  [[ -n "$startup_batch" ]] || continue
  for (( j = 0; j < startup_samples; j++ )); do
    for (( i = 0; i < 2; i++ )); do
      engine=${engines[$(( (i + j) % 2 ))]}
      echo "[$name] start-up sample $(( j + 1 ))/$startup_samples: $engine"
      run_engine "$engine" "build/zoo/$name/model.onnx" "$input=${startup_batch}x$rest" \
        "$raw/$name.b$startup_batch.$engine.s$j" 1 0
    done
  done
done

kiln_version=$( [[ -x "$kiln" ]] && "$kiln" --version 2>/dev/null | head -n 1 )
$PY bench/report.py "$raw" --zoo build/zoo --out "$out" --models "$names" \
  --command "$command_line" --date "$date" --load-start "$load_start" \
  --kiln "$kiln ${kiln_version:-(version unknown)}" \
  --threads "$threads" --rounds "$rounds" --runs "$runs" --warmup "$warmup" \
  --startup-samples "$startup_samples" \
  --batches "$batches" --peak "$raw/peak.json"
