#!/usr/bin/env bash
# The published curve of issue 7 on the GPU machine (H100 + 16 CPU cores), in four device
# calls of one lease (each call may run 10 minutes; the machine keeps /tmp between calls of a
# lease, so later parts resume the same folder). Run from the repository root there, after
# `. .gl/prelude.sh` (see ../shared/gpu/fetch-deps.sh):
#
#   dev/publish-h100.sh 1   # tiny..huge, four backends, 2 repeats each
#   dev/publish-h100.sh 2   # massive, mega; peaks; per-kernel breakdowns (diagnose)
#   dev/publish-h100.sh 3   # behemoth on wasm (its row is written when its repeats end)
#   dev/publish-h100.sh 4   # behemoth on webgpu, torch-cuda, torch-cpu; its diagnose
#
# Each part stops its own work at PART_BUDGET seconds (default 530) so that there is time to
# leave a tarball of the whole folder so far in $OUT (the device tool brings back at most 8
# files); finished measurements are in the CSVs whatever happens, and a part run again
# resumes. If a lease ends between parts (a lease is 30 minutes), untar the parts so far into
# a folder of the working tree that git does not ignore (e.g. pubstate/; it travels with the
# tree) and run the next part with PUB_DIR=$PWD/pubstate: it resumes on the new machine (session 4
# did this for part 3; say so in NOTES.md). Back here: untar into results/h100, then `tinygpt-bench chart results/h100` and
# `tinygpt-bench report results/h100 --update docs/performance.md`. (P1..P4, D2, D4 override the presets of each part, for
# a smoke test elsewhere.)
# 2 repeats, not the default 3: a third repeat of behemoth's WASM measurement (16 steps of
# several seconds each) does not fit the lease; the step count stays 15 (the protocol's).
set -uo pipefail
part=${1:?part 1, 2, 3 or 4}
dir=${PUB_DIR:-/tmp/tinygpt-bench-h100}
out=${OUT:-$dir.out}
mkdir -p "$dir" "$out"
deadline=$((SECONDS + ${PART_BUDGET:-530}))
left() { echo $((deadline - SECONDS > 1 ? deadline - SECONDS : 1)); }
tb() { timeout "$(left)" python3 -m tinygpt_bench "$@"; }
curve() { local resume=(); [ -f "$dir/measurements.csv" ] && resume=(--resume)
          tb curve --repeats 2 --timeout 420 --out "$dir" --plain --no-chart "${resume[@]}" "$@"; }
all=webgpu,wasm,torch-cuda,torch-cpu
rc=0  # the first failure's status, whatever runs after it
run() { "$@" || { r=$?; [ $rc -ne 0 ] || rc=$r; }; }
case $part in
  1) { lscpu; nvidia-smi; uptime; } > "$dir/machine.txt" 2>&1
     run curve --presets "${P1:-tiny,small,medium,large,xl,huge}" --backends $all ;;
  2) run curve --presets "${P2:-massive,mega}" --backends $all
     run tb peak --out "$dir"
     for be in webgpu wasm; do run tb diagnose "${D2:-xl}" --backend "$be" --out "$dir"; done ;;
  3) run curve --presets "${P3:-behemoth}" --backends wasm ;;
  4) run curve --presets "${P4:-behemoth}" --backends webgpu,torch-cuda,torch-cpu
     run tb diagnose "${D4:-behemoth}" --backend webgpu --out "$dir"
     uptime >> "$dir/machine.txt" ;;
  *) echo "part must be 1, 2, 3 or 4" >&2; exit 2 ;;
esac
tar czf "$out/h100-part$part.tgz" -C "$dir" .
python3 -m tinygpt_bench summary "$dir"
exit $rc
