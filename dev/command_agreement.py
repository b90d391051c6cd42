"""Do `run`, `curve` and `diagnose` say the same ms/step for one preset on one backend (issue 28)?

Each round runs, per preset and backend, the three commands as a user would (subprocesses of
`python -m tinygpt_bench`), their order rotated each round so that drift hits each alike:
  run PRESET -b B --plain                                   ("steady median X ms/step")
  curve --presets PRESET --backends B --repeats 1 --no-chart (measurements.csv's median_ms)
  diagnose PRESET -b B                                      (its timed stage's median_ms)
and prints, per (preset, backend), each command's median over rounds with its range, and the
ratios to curve's. Agreement "within noise": a ratio's distance from 1 against the spread of
curve's own rounds.

    python dev/command_agreement.py --presets tiny,small --rounds 3 [--backends a,b] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMANDS = ("run", "curve", "diagnose")


def tb(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygpt_bench", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def measure(command: str, preset: str, backend: str, tmp: Path) -> float:
    """One command's median ms/step; an exception where it failed."""
    if command == "run":
        r = tb("run", preset, "-b", backend, "--plain")
        m = re.search(r"steady median ([0-9.]+) ms/step", r.stdout)
        if r.returncode or not m:
            raise RuntimeError(f"run failed ({r.returncode}): {(r.stderr or r.stdout)[-300:]}")
        return float(m.group(1))
    if command == "curve":
        out = Path(tempfile.mkdtemp(dir=tmp))
        r = tb("curve", "--presets", preset, "--backends", backend, "--repeats", "1", "--out", str(out),
               "--plain", "--no-chart")
        import pandas as pd

        if not (out / "measurements.csv").exists():
            raise RuntimeError(f"curve failed ({r.returncode}): {(r.stderr or r.stdout)[-300:]}")
        row = pd.read_csv(out / "measurements.csv").iloc[0]
        if row.status != "ok":
            raise RuntimeError(f"curve: {row.status} at {row.stage}: {row.error}")
        return float(row.median_ms)
    out = Path(tempfile.mkdtemp(dir=tmp))
    r = tb("diagnose", preset, "-b", backend, "--out", str(out))
    found = list(out.glob("diagnose-*.json"))
    if not found:
        raise RuntimeError(f"diagnose failed ({r.returncode}): {(r.stderr or r.stdout)[-300:]}")
    stage = next((s for s in json.loads(found[0].read_text())["stages"] if s["name"] == "timed"), None)
    if not stage or not stage["ok"]:
        raise RuntimeError(f"diagnose's timed stage: {stage and stage['error']}")
    return float(stage["detail"]["median_ms"])


def main() -> int:
    from tinygpt_bench import engines

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--backends", default=",".join(b for b in engines.names() if b not in ("reference", "torch-cuda")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    got: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = COMMANDS[r % 3:] + COMMANDS[:r % 3]
            for p in a.presets.split(","):
                for b in a.backends.split(","):
                    for c in order:
                        try:
                            v = measure(c, p, b, Path(tmp))
                        except Exception as e:  # noqa: BLE001 - a failing backend is a row that says so
                            v = str(e).splitlines()[0][:160]
                        got.setdefault(f"{p}/{b}", {}).setdefault(c, []).append(v)
                        print(f"round {r + 1} {p}/{b} {c}: {v}", file=sys.stderr, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(got, indent=1))
    print(table(got))
    return 0


def table(got: dict) -> str:
    lines = ["| preset/backend | run ms | curve ms | diagnose ms | run/curve | diagnose/curve | curve's rounds |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key, by in got.items():
        nums = {c: [v for v in by.get(c, []) if isinstance(v, float)] for c in COMMANDS}
        errs = [v for c in COMMANDS for v in by.get(c, []) if isinstance(v, str)]
        if errs or not all(nums.values()):
            lines.append(f"| {key} | failed: {errs[0] if errs else 'no numbers'} | | | | | |")
            continue
        med = {c: statistics.median(v) for c, v in nums.items()}
        spread = f"{min(nums['curve']):.2f}-{max(nums['curve']):.2f}"
        lines.append(f"| {key} | {med['run']:.2f} | {med['curve']:.2f} | {med['diagnose']:.2f} | "
                     f"{med['run'] / med['curve']:.3f} | {med['diagnose'] / med['curve']:.3f} | {spread} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
