#!/bin/bash
# Installs every Debian package kiln's build, tests and tools need (idempotent, non-interactive),
# then configures and builds kiln in build/ (Release).
#   scripts/setup.sh            packages + build
#   KILN_SKIP_APT=1 scripts/setup.sh   build only
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build g++ clang libclang-rt-14-dev libomp-dev
  libdnnl-dev libprotobuf-dev protobuf-compiler libonnx-dev
  nlohmann-json3-dev libcli11-dev libpng-dev python3-scipy python3-skimage python3-nibabel libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev
  python3-numpy python3-torch python3-torchvision python3-onnx python3-sklearn libopenblas0-openmp
  nodejs
)

if [ -z "${KILN_SKIP_APT:-}" ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
ninja -C build
