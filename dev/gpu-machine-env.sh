# Sourced on the GPU machine after `. .gl/prelude.sh` (issue 29): unpacks the carried Chromium
# (dev/carry-chrome.sh's parts, carried over calls of one lease) and Node (dev/carry-node.sh)
# once per lease into /tmp, and points the browser and wasm-v8 backends at them.
if [ ! -x /tmp/chrome/chromium ] && ls .chrome/chrome.tar.xz.part-* >/dev/null 2>&1; then
  cat .chrome/chrome.tar.xz.part-* | xz -dc | tar x -C /tmp || echo "gpu-machine-env: the Chromium parts do not unpack (all carried?)" >&2
fi
[ -x /tmp/chrome/chromium ] && export TINYGPT_BENCH_BROWSER=/tmp/chrome/chromium
if [ ! -x /tmp/nd/node ] && [ -f .node/node.xz ]; then
  mkdir -p /tmp/nd && xz -dc .node/node.xz > /tmp/nd/node && chmod +x /tmp/nd/node
fi
[ -x /tmp/nd/node ] && export TINYGPT_BENCH_NODE=/tmp/nd/node
echo "gpu-machine-env: browser ${TINYGPT_BENCH_BROWSER:-none}, node ${TINYGPT_BENCH_NODE:-none}"
