#!/usr/bin/env bash
# Take a publish part's tarball ($OUT/NAME.tgz of dev/publish.sh, fetched here) as the folder
# the next part resumes, replacing what was there, and say what it holds:
#
#   dev/publish-take.sh /work/.device/3/h200-cpu3.tgz pubstate/h200
#
# The folder is replaced only once the tarball has unpacked whole and holds a run
# (measurements.csv and environment.json); otherwise it is left as it was (exit 2).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: dev/publish-take.sh TARBALL FOLDER" >&2; exit 2; }
tgz=$1 dir=${2%/}
[ -f "$tgz" ] || { echo "publish-take: no tarball $tgz; give the path files_at shows" >&2; exit 2; }
mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "$(dirname "$dir")/.take.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar xzf "$tgz" -C "$tmp" || { echo "publish-take: $tgz does not unpack; $dir left as it was" >&2; exit 2; }
for f in measurements.csv environment.json; do
  [ -f "$tmp/$f" ] || { echo "publish-take: $tgz holds no $f (no run); $dir left as it was" >&2; exit 2; }
done
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
rows=$(($(wc -l < "$dir/measurements.csv") - 1))
echo "publish-take: $dir now holds $tgz: $rows measurement rows"
for kept in "$dir"/repeats-in-progress/*.json; do
  [ -f "$kept" ] || continue
  echo "  kept for --resume: $(basename "$kept" .json): $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["repeats"])' "$kept") repeat(s)"
done
