"""Result files: what a curve run writes, and reads back (`chart`, `compare`, `--resume`).

In the output folder:
- measurements.csv  one row per (preset, backend): status, timings, throughput, parity, stamps
- steps.csv         one row per timed step: repeat, step, ms, loss
- environment.json  the machine, the run's settings and each backend's description

Format history (FORMAT_VERSION, written into every row and the JSON):
  1  2026-11  first version
Rows are appended and flushed as each measurement finishes, so an interrupted run keeps
everything it measured and `--resume` can carry on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from tinygpt_bench.errors import UserError

FORMAT_VERSION = 1
MEASUREMENTS = "measurements.csv"
STEPS = "steps.csv"
ENVIRONMENT = "environment.json"

MEASUREMENT_COLUMNS = [
    "format_version", "run_id", "timestamp", "preset", "backend", "status", "stage", "error",
    "layers", "d_model", "heads", "ctx", "batch", "params", "flops_per_step",
    "steps", "repeats", "seed", "lr", "corpus", "corpus_sha256",
    "cold_ms", "median_ms", "mean_ms", "min_ms", "q1_ms", "q3_ms", "max_ms", "mad_ms",
    "n_samples", "n_outliers", "tokens_per_s", "gflop_per_s", "peak_rss_bytes", "engine_memory_bytes",
    "first_loss", "final_loss", "loss_rel_diff_backends", "loss_rel_diff_reference", "reference", "parity_ok",
    "device", "device_type", "software_adapter", "adapter_vendor", "adapter_driver", "adapter_api",
    "cpu_model", "threads", "runtime", "runtime_settings", "module_sha256", "kernels_sha256",
    "git_commit", "settings_id",
]
STEP_COLUMNS = ["format_version", "run_id", "preset", "backend", "repeat", "step", "ms", "loss"]
STATUSES = ("ok", "failed", "timeout", "skipped")


def settings_id(settings: dict) -> str:
    """A short digest of what must match for results to be comparable (and resumable)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class ResultWriter:
    """Appends rows to the two CSVs, flushing and fsyncing each write."""

    def __init__(self, out_dir: Path, environment: dict, resume: bool):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env_path = self.dir / ENVIRONMENT
        existing = self.dir / MEASUREMENTS
        if existing.exists() and not resume:
            raise UserError(
                f"{existing} already holds results; pass --resume to continue that run, "
                "or --out with a new folder"
            )
        if resume and self.env_path.exists():
            old = json.loads(self.env_path.read_text())
            if old.get("settings_id") != environment["settings_id"]:
                diff = _diff(old.get("settings", {}), environment["settings"])
                raise UserError(
                    f"--resume refused: {self.dir} was measured with other settings or on another machine "
                    f"({diff}); use a new --out folder"
                )
            # a resumed run covers what the folder held before and what this call adds
            for key in ("presets", "backends"):
                environment[key] = list(dict.fromkeys([*old.get(key, []), *environment[key]]))
            environment["backend_descriptions"] = {**old.get("backend_descriptions", {}),
                                                   **environment.get("backend_descriptions", {})}
            environment["earlier_run_ids"] = [*old.get("earlier_run_ids", []), old.get("run_id")]
        self.env_path.write_text(json.dumps(environment, indent=2, default=str) + "\n")
        self._m = self._open(existing, MEASUREMENT_COLUMNS)
        self._s = self._open(self.dir / STEPS, STEP_COLUMNS)

    @staticmethod
    def _open(path: Path, columns: list[str]):
        new = not path.exists() or path.stat().st_size == 0
        f = open(path, "a", newline="", encoding="utf-8")
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="raise", lineterminator="\n")
        if new:
            w.writeheader()
            f.flush()
        return f, w

    def _write(self, pair, rows: list[dict]) -> None:
        f, w = pair
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in w.fieldnames})
        f.flush()
        os.fsync(f.fileno())

    def measurement(self, row: dict) -> None:
        self._write(self._m, [{"format_version": FORMAT_VERSION, **row}])

    def steps(self, rows: list[dict]) -> None:
        self._write(self._s, [{"format_version": FORMAT_VERSION, **r} for r in rows])

    def close(self) -> None:
        for f, _ in (self._m, self._s):
            f.close()


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 6)) if abs(v) >= 1e-3 or v == 0 else f"{v:.6e}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:3]) or "settings digest differs"


def done_keys(out_dir: Path) -> set[tuple[str, str]]:
    """(preset, backend) pairs already measured in out_dir (any final status)."""
    path = Path(out_dir) / MEASUREMENTS
    if not path.exists():
        return set()
    df = read_measurements([path])
    return set(zip(df["preset"], df["backend"]))


def _resolve(paths: list[Path], name: str) -> list[Path]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise UserError(f"result file {p} does not exist; give a curve output folder or its {name}")
        out.append(p)
    return out


def read_measurements(paths: list[Path]) -> pd.DataFrame:
    frames = []
    for p in _resolve(paths, MEASUREMENTS):
        try:
            df = pd.read_csv(p, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not a readable measurements CSV ({e}); pass a file written by `curve`") from None
        missing = [c for c in ("format_version", "preset", "backend", "status", "median_ms") if c not in df.columns]
        if missing:
            raise UserError(f"{p}: missing column '{missing[0]}'; pass a measurements.csv written by `curve`")
        bad = sorted(set(df["format_version"].astype(int)) - {FORMAT_VERSION})
        if bad:
            raise UserError(f"{p}: format version {bad[0]}, this tinygpt-bench reads {FORMAT_VERSION}; upgrade it")
        df["source"] = str(p)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    # a later row for the same (preset, backend) supersedes an earlier one (resumed runs)
    return df.drop_duplicates(subset=["preset", "backend"], keep="last").reset_index(drop=True)


def read_steps(paths: list[Path]) -> pd.DataFrame | None:
    found = []
    for p in paths:
        p = Path(p)
        cand = p / STEPS if p.is_dir() else p.with_name(STEPS)
        if cand.is_file():
            found.append(cand)
    if not found:
        return None
    return pd.concat([pd.read_csv(f) for f in found], ignore_index=True)


def read_environment(paths: list[Path]) -> dict:
    for p in paths:
        p = Path(p)
        cand = p / ENVIRONMENT if p.is_dir() else p.with_name(ENVIRONMENT)
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}
