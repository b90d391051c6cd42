#!/usr/bin/env bash
# A published curve on a lent machine (any: the GPU machine, a CPU box), in parts that each fit
# one device call of a few minutes. Each part resumes the same results folder, so the parts
# together are one curve run (one settings record, --resume checks they match). Run from the
# repository root there (on the GPU machine after `. .gl/prelude.sh`, see
# ../shared/gpu/fetch-deps.sh):
#
#   PRESETS=tiny,small,medium BACKENDS=webgpu,webgpu-dawn,torch-cuda dev/publish.sh
#
# Settings (environment):
#   PRESETS, BACKENDS   what this part measures (curve --presets, --backends)
#   REPEATS             repeats per measurement (default 3, the protocol's)
#   PUB_DIR             the results folder (default /tmp/tinygpt-bench-publish). Between leases
#                       (a machine is given back after a short idle), take the last part's
#                       tarball into a folder that travels with the tree (dev/publish-take.sh
#                       TARBALL pubstate/NAME) and point PUB_DIR at it, with RESUME=1
#   DIAGNOSE            after the curve: PRESET:BACKEND,... to diagnose (reports in the folder)
#   PEAK                1: also `tinygpt-bench peak` into the folder
#   BUDGET              seconds for the whole part (default 540); the curve starts no repeat that
#                       its backend's longest repeat (+25%) says would end past the budget less DIAG_BUDGET
#                       (curve --stop-after: exit 3, the finished repeats kept for the next part),
#                       and is killed at it
#   NAME                the tarball's name in $OUT (default publish)
#   RESUME              1: this part continues a run, so PUB_DIR must hold one (measurements.csv);
#                       without it the part stops at once (exit 2) instead of starting a new run
#                       in place of the one it was meant to continue (session 8 lost a call so)
# What finished is in the CSVs whatever happens, and the finished repeats of a measurement the
# budget stopped are in the folder's repeats-in-progress/ for the next part's --resume (a
# measurement whose repeats together pass one call's limit: behemoth on a CPU engine); the
# folder is left as $OUT/$NAME.tgz. The step
# count stays the protocol's 15: a slow preset gets a time budget (--timeout), never fewer steps.
set -uo pipefail
DIAGNOSE=${DIAGNOSE:-}
dir=${PUB_DIR:-/tmp/tinygpt-bench-publish}
out=${OUT:-$dir.out}
if [ "${RESUME:-0}" = 1 ] && [ ! -f "$dir/measurements.csv" ]; then
  echo "publish: RESUME=1 but $dir holds no run (no measurements.csv); untar the last part's tarball there" >&2
  exit 2
fi
mkdir -p "$dir" "$out"
deadline=$((SECONDS + ${BUDGET:-540}))
left() { local s=$((deadline - SECONDS - ${1:-0})); echo $((s > 1 ? s : 1)); }
tb() { python3 -m tinygpt_bench "$@"; }
rc=0  # the first failure's status, whatever runs after it
note() { [ "$1" -eq 0 ] || [ $rc -ne 0 ] || rc=$1; }
[ -f "$dir/machine.txt" ] || { lscpu; nvidia-smi 2>/dev/null; uptime; } > "$dir/machine.txt" 2>&1
if [ -n "${PRESETS:-}" ]; then
  resume=(); [ -f "$dir/measurements.csv" ] && resume=(--resume)
  # --stop-after: no repeat is started that would end past the part's budget (exit 3, its repeats
  # kept); timeout: the hard stop behind it
  timeout "$(left "${DIAG_BUDGET:-0}")" python3 -m tinygpt_bench curve --presets "$PRESETS" \
    --backends "${BACKENDS:-webgpu,webgpu-dawn,wasm}" --repeats "${REPEATS:-3}" --timeout 420 --out "$dir" \
    --stop-after "$(left $((${DIAG_BUDGET:-0} + 10)))" --plain --no-chart "${resume[@]}"
  note $?
fi
[ "${PEAK:-0}" = 1 ] && { timeout "$(left)" python3 -m tinygpt_bench peak --out "$dir"; note $?; }
for job in ${DIAGNOSE//,/ }; do  # (empty: none)
  timeout "$(left)" python3 -m tinygpt_bench diagnose "${job%%:*}" --backend "${job#*:}" --out "$dir"; note $?
done
tar czf "$out/${NAME:-publish}.tgz" -C "$dir" .
tb summary "$dir"
exit $rc
