"""Upgrade a results folder written in an older format to results.FORMAT_VERSION, in place.

    .venv/bin/python dev/migrate_results.py results/h100 [more folders]

Format 1 -> 2 (tinygpt_bench/results.py's history): every file takes format_version 2;
measurements.csv gains hardware and native_peer (what the backend is built for and its
native peer, engines.info) and
relaxed_simd (true/false where the row's runtime_settings say relaxed_simd=on/off, the
arithmetic a wasm engine ran; empty elsewhere); peaks.csv gains relaxed_simd (its wasm rows:
the relaxed-FMA measurements true, the mul+add ones false); each diagnose-*.json gains
format_version and kernel_timing (engines.info). Every other value is rewritten as it was
(the records' own formatting), and each file is replaced atomically. A folder already at
the current version is left as it is.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygpt_bench import engines, results  # noqa: E402

OLD = 1

# the wasm peak measurements of format 1 (peak.py's names) and the arithmetic each ran
PEAK_RELAXED = {"simd128_relaxed_fma": True, "matmul relaxed-fma": True,
                "simd128_mul_add": False, "matmul simd128": False}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_old(path: Path, rows: list[dict]) -> bool:
    """True where the file is at the old version, False where it is current already."""
    versions = {r["format_version"] for r in rows}
    if versions <= {str(results.FORMAT_VERSION)}:
        return False
    if versions != {str(OLD)}:
        sys.exit(f"{path}: format versions {sorted(versions)}; this script upgrades {OLD} to {results.FORMAT_VERSION}")
    return True


def _rewrite(path: Path, cls: type, rows: list[dict]) -> None:
    records = [cls.from_cells({**r, "format_version": str(results.FORMAT_VERSION)}, f"{path}, row {i + 2}",
                              "fix the row by hand") for i, r in enumerate(rows)]
    results.atomic_write(path, results.csv_bytes(cls, records, header=True))


def relaxed_simd_of(runtime_settings: str) -> str:
    m = re.search(r"\brelaxed_simd=(on|off)\b", runtime_settings or "")
    return "" if m is None else "true" if m.group(1) == "on" else "false"


def _measurement_columns(r: dict) -> None:
    r["hardware"] = engines.info(r["backend"]).hardware
    r["native_peer"] = engines.info(r["backend"]).native_peer or ""
    r["relaxed_simd"] = relaxed_simd_of(r.get("runtime_settings", ""))


def _peak_columns(r: dict) -> None:
    known = PEAK_RELAXED.get(r["what"]) if r["engine"] in ("wasm", "wasm-v8") else None
    r["relaxed_simd"] = "" if known is None else "true" if known else "false"


def migrate(folder: Path) -> list[str]:
    done = []
    # each CSV: its record type and what fills its new columns in a row (None: nothing new)
    for name, cls, fill in ((results.MEASUREMENTS, results.Measurement, _measurement_columns),
                            (results.STEPS, results.Step, None), (results.PEAKS, results.Peak, _peak_columns)):
        path = folder / name
        if not path.is_file():
            continue
        rows = _rows(path)
        if _check_old(path, rows):
            for r in rows if fill else ():
                fill(r)
            _rewrite(path, cls, rows)
            done.append(path.name)
    e_path = folder / results.ENVIRONMENT
    if e_path.is_file():
        env = json.loads(e_path.read_text(encoding="utf-8"))
        if env.get("format_version") == OLD:
            env["format_version"] = results.FORMAT_VERSION
            results.atomic_write(e_path, (json.dumps(env, indent=2, default=str) + "\n").encode("utf-8"))
            done.append(e_path.name)
    for d_path in sorted(folder.glob(results.DIAGNOSE_GLOB)):
        d = json.loads(d_path.read_text(encoding="utf-8"))
        if "format_version" not in d:
            d = {**d, "format_version": results.FORMAT_VERSION,
                 "kernel_timing": engines.info(d["backend"]).kernel_timing}
            rec = results.Diagnosis.from_json(d, str(d_path))
            results.atomic_write(d_path, (json.dumps(rec.to_json(), indent=2, default=str) + "\n").encode("utf-8"))
            done.append(d_path.name)
    return done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            sys.exit(f"{folder} is not a folder; give a results folder (one holding measurements.csv)")
        done = migrate(folder)
        print(f"{folder}: " + (", ".join(done) + f" -> format {results.FORMAT_VERSION}" if done else "already current"))


if __name__ == "__main__":
    main()
