#!/usr/bin/env bash
# Packs the system's Chromium headless shell for the GPU machine, which has no package registry
# (issue 29): the binary, its resources and every shared library it links but glibc's, as one
# xz-compressed tarball split into parts of PART_MB (default 37: two parts) that each fit one device
# call's carry (the first beside .gl, the second beside .whl; the tree itself is 5 MiB of the 64): .chrome/chrome.tar.xz.part-aa, -ab (git-ignored).
# A warm machine keeps ignored files between calls: carry one part a call, then unpack there:
#   cat .chrome/chrome.tar.xz.part-* | xz -dc | tar x -C /tmp
#   export TINYGPT_BENCH_BROWSER=/tmp/chrome/chromium
# (a wrapper that gives the browser alone its libraries: nothing else sees them).
# Needs Debian's chromium-headless-shell here (apt-get install chromium-headless-shell).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
src=/usr/lib/chromium
[ -x "$src/chromium-headless-shell" ] || { echo "carry-chrome: apt-get install chromium-headless-shell first" >&2; exit 2; }
grep -qxF /.chrome/ .git/info/exclude 2>/dev/null || echo /.chrome/ >> .git/info/exclude
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/chrome/lib"
cp -a "$src"/chromium-headless-shell "$src"/headless_*.pak "$src"/icudtl.dat "$src"/v8_context_snapshot.bin \
      "$src"/snapshot_blob.bin "$src"/libvulkan.so.1 "$src"/libvk_swiftshader.so "$src"/vk_swiftshader_icd.json \
      "$stage/chrome/"
# every library the shell links, but glibc's own (the machine's glibc, 2.36 or newer, serves)
ldd "$src/chromium-headless-shell" | awk '$3 ~ /^\// {print $3}' \
  | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64)\.so' \
  | while read -r lib; do cp -L "$lib" "$stage/chrome/lib/"; done
# NSS loads its crypto modules at run time
cp -L /usr/lib/x86_64-linux-gnu/nss/*.so "$stage/chrome/lib/" 2>/dev/null || true
cat > "$stage/chrome/chromium" <<'WRAP'
#!/bin/sh
# the browser with its own libraries (carried by dev/carry-chrome.sh); nothing else sees them
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/chromium-headless-shell" "$@"
WRAP
chmod +x "$stage/chrome/chromium"
rm -rf .chrome && mkdir -p .chrome
tar c -C "$stage" chrome | xz -T0 -9 | split -b "${PART_MB:-37}M" - .chrome/chrome.tar.xz.part-
ls -l .chrome
