#!/usr/bin/env bash
# wgpu-native against Dawn on a GPU machine, in one device call (issue 13): the engine's losses
# bit for bit against an earlier checkout and across the two implementations, step times of
# both interleaved in one process with torch-cuda beside them, Dawn's own switches (robustness,
# validation) as an A/B, and the 4096^3 matmul on both. Run from the repository root there,
# after `. .gl/prelude.sh` (../shared/gpu/fetch-deps.sh); OLD names a folder holding the earlier
# checkout's tinygpt_bench/, kernels/, presets/ and wasm/ (git archive REV ... | tar -x -C OLD).
# Everything lands in $OUT; each part has a time budget, so a slow part costs only itself.
set -uo pipefail
out=${OUT:-/tmp/implementations-ab}
mkdir -p "$out"
presets=${AB_PRESETS:-tiny,small,medium,large,xl,huge,massive,mega}
bench=${AB_BENCH:-xl,mega,behemoth}
part() { local budget=$1; shift; echo "== $* (budget ${budget}s)"; timeout "$budget" "$@"; echo "== exit $?"; }
{
  part 60 python3 -m tinygpt_bench env
  if [ -n "${OLD:-}" ]; then
    part 150 env PYTHONPATH="$OLD:$PYTHONPATH" python3 dev/bitcheck.py run webgpu "$presets" "$out/bits-old-webgpu.json"
  fi
  part 150 python3 dev/bitcheck.py run webgpu "$presets" "$out/bits-webgpu.json"
  part 150 python3 dev/bitcheck.py run webgpu-dawn "$presets" "$out/bits-webgpu-dawn.json"
  [ -n "${OLD:-}" ] && python3 dev/bitcheck.py compare "$out/bits-old-webgpu.json" "$out/bits-webgpu.json"
  python3 dev/bitcheck.py compare "$out/bits-webgpu.json" "$out/bits-webgpu-dawn.json"
  part "${AB_BUDGET:-200}" python3 dev/wgpu_bench.py --presets "$bench" --backends webgpu,webgpu-dawn \
    --rounds 2 --peer torch-cuda --parity-upto xl --matmul 4096 > "$out/ab-implementations.jsonl"
  part "${TOGGLE_BUDGET:-120}" python3 dev/wgpu_bench.py --presets "${TOGGLE_PRESETS:-xl,behemoth}" \
    --backends webgpu-dawn --dawn-toggles "|+disable_robustness|+skip_validation" --rounds 2 --parity-upto none \
    > "$out/ab-dawn-toggles.jsonl"
} 2>&1 | tee "$out/log.txt"
echo "== summaries"
for f in "$out"/ab-*.jsonl; do tail -n 30 "$f" | grep -v '^{'; done
