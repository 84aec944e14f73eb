#!/bin/bash
# The whole default test suite (what CI runs):
#   1. Release build: unit tests, ONNX conformance (manifest of passing cases), fast real-model parity
#   2. clang AddressSanitizer + UBSan build: unit tests and conformance again, and the loader fuzzer for a
#      bounded time (libFuzzer)
# KILN_TEST_QUICK=1 runs only step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
J=${KILN_JOBS:-$(nproc)}
# Tests run side by side on few cores: OpenMP threads should sleep, not spin, while they wait.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

scripts/setup.sh
(cd build && ctest --output-on-failure -j"$J" -LE "fuzz|zoo_full")

if [ -z "${KILN_TEST_QUICK:-}" ]; then
  # One clang build serves both: AddressSanitizer + UBSan for the tests, libFuzzer coverage for the fuzzer.
  cmake -S . -B build-san -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
        -DKILN_SANITIZE=ON -DKILN_FUZZ=ON -DKILN_FUZZ_SECONDS="${KILN_FUZZ_SECONDS:-60}" > /dev/null
  ninja -C build-san kiln_unit_tests kiln_conformance kiln_cli fuzz_loader
  # Network-heavy end-to-end cases run in the release build only.
  (cd build-san && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j"$J" -L "unit|asan|fuzz" -E "E2E")
fi
