#!/usr/bin/env bash
# The published curve of issue 7 on the GPU machine (H100 + 16 CPU cores), in three device
# calls of one lease (each call may run 10 minutes; the machine keeps /tmp between calls of a
# lease, so parts 2 and 3 resume the same folder). Run from the repository root there, after
# `. .gl/prelude.sh` (see ../shared/gpu/fetch-deps.sh):
#
#   scripts/publish-h100.sh 1   # tiny..huge, four backends, 2 repeats each
#   scripts/publish-h100.sh 2   # massive, mega; peaks; per-kernel breakdowns (diagnose)
#   scripts/publish-h100.sh 3   # behemoth
#
# Each part leaves a tarball of the whole folder so far in $OUT (the device tool brings back
# at most 8 files), and prints the summary table last. Back here: untar into results/h100,
# then `tinygpt-bench chart results/h100` and `tinygpt-bench report results/h100`.
# (P1, P2, P3, D2, D3 override the presets of each part, for a smoke test elsewhere.)
# 2 repeats, not the default 3: a third repeat of behemoth's WASM measurement (16 steps of
# about 10 s each) does not fit the lease; the step count stays 15 (the protocol's).
set -uo pipefail
part=${1:?part 1, 2 or 3}
dir=${PUB_DIR:-/tmp/tinygpt-bench-h100}
out=${OUT:-$dir.out}
mkdir -p "$dir" "$out"
tb() { python3 -m tinygpt_bench "$@"; }
curve() { tb curve --backends webgpu,wasm,torch-cuda,torch-cpu --repeats 2 --timeout 420 --out "$dir" \
            --plain --no-chart "$@"; }
resume=()
[ -f "$dir/measurements.csv" ] && resume=(--resume)
case $part in
  1) { lscpu; nvidia-smi; uptime; } > "$dir/machine.txt" 2>&1
     curve --presets "${P1:-tiny,small,medium,large,xl,huge}" "${resume[@]}" ;;
  2) curve --presets "${P2:-massive,mega}" "${resume[@]}"
     tb peak --out "$dir"
     for be in webgpu wasm; do tb diagnose "${D2:-xl}" --backend "$be" --out "$dir"; done ;;
  3) curve --presets "${P3:-behemoth}" "${resume[@]}"
     tb diagnose "${D3:-behemoth}" --backend webgpu --out "$dir"
     uptime >> "$dir/machine.txt" ;;
  *) echo "part must be 1, 2 or 3" >&2; exit 2 ;;
esac
rc=$?
tar czf "$out/h100-part$part.tgz" -C "$dir" .
tb summary "$dir"
exit $rc
