#!/usr/bin/env bash
# Install the benchmark's Node.js dependency (onnxruntime-node 1.30.0, CPU only)
# into bench/node_modules. Idempotent: does nothing if it is already installed.
set -euo pipefail
cd "$(dirname "$0")"

want=1.30.0
have=$(node -p "require('./node_modules/onnxruntime-node/package.json').version" 2>/dev/null || true)
if [[ "$have" == "$want" ]] && node -e "require('onnxruntime-node')" 2>/dev/null; then
  echo "onnxruntime-node $want already installed"
  exit 0
fi

# The package's install script would otherwise try to download CUDA binaries.
ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --save-exact --no-audit --no-fund "onnxruntime-node@$want"
node -e "require('onnxruntime-node')"
echo "onnxruntime-node $want installed"
