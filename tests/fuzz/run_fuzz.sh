#!/bin/bash
# Runs the loader fuzzer for a bounded time, seeded with small conformance models.
# usage: run_fuzz.sh FUZZ_BINARY NODE_TESTS_DIR SECONDS
set -euo pipefail
bin=$(readlink -f "$1"); cases=$2; secs=${3:-60}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
i=0
for m in "$cases"/test_{conv,relu,add,reshape,gemm,maxpool,concat,slice,gather,resize}*/model.onnx; do
  [ -f "$m" ] || continue
  cp "$m" "$work/corpus/seed$i.onnx"; i=$((i+1))
  [ $i -ge 64 ] && break
done
echo "fuzzing the loader for ${secs}s with $i seed models"
cd "$work"
"$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 corpus
