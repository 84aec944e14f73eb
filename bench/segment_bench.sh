#!/usr/bin/env bash
# End-to-end benchmark of `kiln segment` on the nnU-Net reference cases, against nnU-Net's recorded times.
#
#   bench/segment_bench.sh [--cases DIR] [--kiln PATH] [--rounds R] [--threads N] [--folds "0 1"]
#                          [--bench-runs N] [--timeout S] [--out FILE]
#
# DIR (default $KILN_SHARED_DIR/nnunet-case0, else ../shared/nnunet-case0; relative paths are taken from the
# repository root) is the reference case folder: model/, input/, expected/ and README.md (which records
# nnU-Net's own predictor times on a 2-core machine and the tiles per fold of each case).
# Each round runs, in a fresh process each:
#   * `kiln segment` on case_B, then on case_C (folds 0 1, step 0.5, mirroring on, N threads), under
#     /usr/bin/time -v (wall clock, peak RSS); the segmentation is compared voxel for voxel with nnU-Net's;
#   * `kiln bench fold_0/model.onnx --shape input=8x2x32x64x64` (one tile and its 7 mirrored views as one
#     batch, the same evaluation segment does per tile), the bare-network baseline: network time of a case =
#     median batch time x tiles per fold x folds (tiles: case_B 8, case_C 4, from the README).
# Rounds interleave the three so that machine noise hits all of them alike. Raw logs go to
# build/segment_bench/<timestamp>/, the summary (medians over the rounds) to bench/SEGMENT_RESULTS.md.
# Run on an otherwise idle machine; the load average is recorded.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
cases_dir=${KILN_SHARED_DIR:-../shared}/nnunet-case0 kiln=build/kiln rounds=3 threads=2 folds="0 1" bench_runs=3 timeout_s=900
out=bench/SEGMENT_RESULTS.md
command_line="bench/segment_bench.sh $*"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cases) cases_dir=$2; shift 2 ;;
    --kiln) kiln=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --folds) folds=$2; shift 2 ;;
    --bench-runs) bench_runs=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
# paths given relative to the repository root (or absolute)
cases_dir=$(realpath -m "$cases_dir"); kiln=$(realpath -m "$kiln"); out=$(realpath -m "$out")

model=$cases_dir/model/Dataset901_SynthEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres
for f in "$model/plans.json" "$cases_dir/README.md" "$cases_dir/input/case_B_0000.nii.gz"; do
  [[ -f "$f" ]] || { echo "reference case folder incomplete: $f not found (use --cases DIR)" >&2; exit 2; }
done
[[ -x "$kiln" ]] || { echo "kiln binary not found at $kiln (build it, or use --kiln PATH)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is required (apt-get install time)" >&2; exit 2; }
read -r -a fold_args <<< "$folds"
n_folds=${#fold_args[@]}
cases=(case_B case_C)

date=$(date -u "+%Y-%m-%d %H:%M:%S UTC")
raw=$ROOT/build/segment_bench/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v n="$(nproc)" '{ exit !($1 > n / 2) }' /proc/loadavg; then
  echo "warning: load average $load_start on $(nproc) CPUs; timings will be noisy" >&2
fi

# One input folder per case holding links to that case's channel files only.
for c in "${cases[@]}"; do
  mkdir -p "$raw/input/$c"
  for f in "$cases_dir"/input/"${c}"_[0-9][0-9][0-9][0-9].nii.gz; do ln -sf "$f" "$raw/input/$c/"; done
done

for (( r = 0; r < rounds; r++ )); do
  for c in "${cases[@]}"; do
    dest=$raw/$c.$r
    echo "round $(( r + 1 ))/$rounds: kiln segment $c"
    rm -rf "$dest.out"
    timeout "$timeout_s" /usr/bin/time -v -o "$dest.time" \
      "$kiln" segment -m "$model" -i "$raw/input/$c" -o "$dest.out" -f "${fold_args[@]}" --step 0.5 \
      --threads "$threads" > "$dest.log" 2>&1
    echo $? > "$dest.rc"
  done
  echo "round $(( r + 1 ))/$rounds: kiln bench (bare network, batch of 8 views)"
  timeout "$timeout_s" "$kiln" bench "$model/fold_0/model.onnx" --shape input=8x2x32x64x64 \
    --threads "$threads" --runs "$bench_runs" --warmup 1 --json > "$raw/net.$r.json" 2> "$raw/net.$r.stderr"
  echo $? > "$raw/net.$r.rc"
done

kiln_version=$("$kiln" --version 2>/dev/null | head -n 1)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)
$PY bench/segment_report.py "$raw" --cases-dir "$cases_dir" --out "$out" --rounds "$rounds" \
  --threads "$threads" --folds "$folds" --command "$command_line" --date "$date" --load-start "$load_start" \
  --kiln "$kiln ${kiln_version:-(version unknown)} (commit ${commit:-unknown})"
