#!/bin/sh
# Toolchain smoke test (docs/wasm-engine.md): build smoke.c twice (SIMD128, relaxed SIMD), host it.
set -e
cd "$(dirname "$0")"
out=${TMPDIR:-/tmp}/tinygpt-smoke; mkdir -p "$out"
for v in plain relaxed; do
  extra=""; [ $v = relaxed ] && extra="-mrelaxed-simd -DRELAXED"
  python -m ziglang cc -target wasm64-freestanding -O3 -msimd128 $extra -matomics -mbulk-memory -c smoke.c -o "$out/smoke_$v.o"
  python -m ziglang wasm-ld -mwasm64 --no-entry --import-memory --shared-memory --max-memory=17179869184 \
    --initial-memory=1048576 --export=__stack_pointer -z stack-size=65536 "$out/smoke_$v.o" -o "$out/smoke_$v.wasm"
  (cd "$out" && RES=17179869184 python "$OLDPWD/host.py" $v)
done
