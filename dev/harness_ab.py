"""Harness time per measurement, two commits interleaved (issue 28's acceptance: no worse than
before the runner).

Each round runs the README's curve (`curve` on its default set, the same flags) once on each
commit, the order alternating by round, from a git worktree of each commit (this checkout's
interpreter and packages, the commit's own code: `python -m tinygpt_bench` with its tree first
on sys.path), and reads the line the run ends with:
  harness time: M s per measurement beyond its steps (median of N, max X s); the whole run T s,
  steps S s: W s per measurement with the per-preset work and the float64 reference
Prints, per commit, each round's M and W and their medians; --json FILE keeps them.

    python dev/harness_ab.py --before 9247f4e --after HEAD --rounds 2 [--json FILE] [-- curve args]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"harness\s+time:\s+([0-9.]+)\s+s\s+per\s+measurement\s+beyond\s+its\s+steps\s+\(median\s+of\s+(\d+),"
                  r"\s+max\s+([0-9.]+)\s+s\);\s+the\s+whole\s+run\s+([0-9.]+)\s+s,\s+steps\s+([0-9.]+)\s+s:\s+"
                  r"([0-9.]+)\s+s\s+per\s+measurement")  # whitespace: the terminal may wrap it


def worktree(commit: str, where: Path) -> Path:
    path = where / commit.replace("/", "_")
    r = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"harness_ab: no worktree of {commit}: {r.stderr.strip()}")
    return path


def curve(tree: Path, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), COLUMNS="400")
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", "curve", "--out", str(out), "--plain", *extra],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    m = LINE.search(r.stdout)
    if r.returncode or not m:
        raise SystemExit(f"curve in {tree} failed (exit {r.returncode}): {(r.stderr or r.stdout)[-600:]}")
    keys = ("harness_s", "n", "max_s", "run_s", "steps_s", "whole_s")
    return {k: float(v) for k, v in zip(keys, m.groups())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("curve_args", nargs="*", help="after --: curve's own flags (default: none, the README's curve)")
    a = ap.parse_args()
    if a.before == a.after:
        raise SystemExit(f"harness_ab: --before and --after are both {a.before}; give two commits")
    found: dict[str, list[dict]] = {a.before: [], a.after: []}
    with tempfile.TemporaryDirectory(prefix="harness-ab-") as tmp:
        trees: dict[str, Path] = {}
        try:
            for c in found:
                trees[c] = worktree(c, Path(tmp))
            for i in range(a.rounds):
                order = [a.before, a.after] if i % 2 == 0 else [a.after, a.before]
                for c in order:
                    got = curve(trees[c], Path(tmp) / f"out-{i}-{len(found[c])}-{c[:7]}", a.curve_args)
                    found[c].append(got)
                    print(f"round {i + 1} {c}: harness {got['harness_s']:.2f} s/measurement (n {got['n']:.0f}, "
                          f"max {got['max_s']:.2f}), whole run {got['whole_s']:.2f} s/measurement, "
                          f"run {got['run_s']:.1f} s, steps {got['steps_s']:.1f} s", flush=True)
        finally:
            for t in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(t)], capture_output=True)
    for c, rows in found.items():
        print(f"{c}: harness median {statistics.median(r['harness_s'] for r in rows):.2f} s/measurement, "
              f"whole-run {statistics.median(r['whole_s'] for r in rows):.2f} s/measurement over {len(rows)} runs")
    if a.json:
        Path(a.json).write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
