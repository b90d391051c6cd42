"""The readers of result files: each file's records, checked row by row (a bad one: a
UserError naming the file, the line and the fix), and pandas views of them for reporting.
A later row for the same (preset, backend) supersedes an earlier one (a resumed run); a step
counts only with its measurement's row (same run_id, preset and backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tinygpt_bench.errors import UserError
from tinygpt_bench.results.codec import frame, parse_csv, read_text
from tinygpt_bench.results.machine import machine_difference
from tinygpt_bench.results.schema import (DIAGNOSE_GLOB, ENVIRONMENT, MEASUREMENTS, PEAKS, READABLE_VERSIONS, STEP_COLUMNS,
                                          STEPS, Diagnosis, Measurement, Peak, Step, version_error)


def done_keys(out_dir: Path) -> set[tuple[str, str]]:
    """(preset, backend) pairs already measured in out_dir (any final status)."""
    path = Path(out_dir) / MEASUREMENTS
    if not path.exists():
        return set()
    df = read_measurements([path], require_rows=False, environment=False)
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


def measurements(paths: list[Path], require_rows: bool = True, environment: bool = True) -> list[Measurement]:
    """The measurements of measurements.csv files (or the folders holding them), checked row
    by row (a bad one: a UserError naming the file and line). require_rows: a file with only
    its header is an error; environment: the environment.json beside each file must be there
    and readable. A later row for the same (preset, backend) supersedes an earlier one (a
    resumed run), in the later one's place (as a resumed run wrote them)."""
    out: dict[tuple[str, str], Measurement] = {}
    for p in _resolve(paths, MEASUREMENTS):
        text = read_text(p, "measurements CSV")
        rows = parse_csv(p, text, Measurement, ("format_version", "preset", "backend", "status", "median_ms", "params",
                                                "flops_per_step"),
                         ("preset", "backend", "status", "params", "flops_per_step"), "measurements.csv")
        if not rows and require_rows:
            raise UserError(f"{p} holds no measurements, only its header (a run stopped in its first "
                            f"measurement); complete it with `tinygpt-bench curve --resume --out {p.parent}`")
        if environment:
            load_environment(p.with_name(ENVIRONMENT))
        for m in rows:
            out.pop((m.preset, m.backend), None)
            out[(m.preset, m.backend)] = m
    return list(out.values())


def read_measurements(paths: list[Path], require_rows: bool = True, environment: bool = True) -> pd.DataFrame:
    """measurements() as a frame (one row a measurement, the CSV's columns)."""
    return frame(measurements(paths, require_rows, environment), Measurement)


def step_file(f: Path) -> list[Step]:
    """Every row of one steps.csv, checked (measured or not: the readers' steps() keeps those
    of committed measurements)."""
    return parse_csv(f, read_text(f, "steps CSV"), Step, tuple(STEP_COLUMNS), ("run_id", "preset", "backend", "step", "ms"),
                     "steps.csv", key=("run_id", "preset", "backend", "repeat", "step"))


def steps(paths: list[Path]) -> list[Step] | None:
    """The steps of the measurements in `paths` (None: no steps.csv beside them): only a step
    whose (run_id, preset, backend) has its row in measurements.csv counts (a measurement is
    committed by its row)."""
    found = []
    for p in paths:
        p = Path(p)
        cand = p / STEPS if p.is_dir() else p.with_name(STEPS)
        if cand.is_file():
            found.append(cand)
    if not found:
        return None
    out = [s for f in found for s in step_file(f)]
    keys = {(m.run_id, m.preset, m.backend) for m in measurements(paths, require_rows=False, environment=False)}
    return [s for s in out if (s.run_id, s.preset, s.backend) in keys]


def read_steps(paths: list[Path]) -> pd.DataFrame | None:
    """steps() as a frame (one row a step)."""
    found = steps(paths)
    return None if found is None else frame(found, Step)


def peaks(path: Path) -> list[Peak]:
    """peaks.csv (a file or the folder holding it), checked row by row."""
    path = Path(path)
    if path.is_dir():
        path = path / PEAKS
    if not path.is_file():
        raise UserError(f"{path} does not exist; measure it with `tinygpt-bench peak --out {path.parent}`")
    return parse_csv(path, read_text(path, "peaks CSV"), Peak,
                     ("format_version", "engine", "kind", "what", "gflop_per_s", "status"),
                     ("engine", "kind", "what", "status"), "peaks.csv")


def read_peaks(path: Path) -> pd.DataFrame:
    """peaks() as a frame (one row a peak)."""
    return frame(peaks(path), Peak)


def diagnoses(folder: Path) -> list[Diagnosis]:
    """Every diagnose report in `folder`, in file name order, each checked."""
    out = []
    for p in sorted(Path(folder).glob(DIAGNOSE_GLOB)):
        try:
            d = json.loads(read_text(p, "diagnose report"))
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not a diagnose report ({e}); rewrite it with `tinygpt-bench diagnose`") from None
        out.append(Diagnosis.from_json(d, str(p)))
    return out


# the keys of environment.json that readers and --resume take apart, and what each must be
ENVIRONMENT_KEYS = {"settings": dict, "environment": dict, "backend_descriptions": dict, "presets": list,
                    "backends": list, "earlier_run_ids": list, "settings_id": str, "run_id": str}
ENVIRONMENT_KEYS_SAID = {dict: "an object", list: "a list", str: "a string"}


def load_environment(path: Path) -> dict:
    """One environment.json, checked: there, JSON, an object of a format version this reads."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; `curve` writes it beside {MEASUREMENTS}: restore it "
                        f"(e.g. `git checkout -- {path}`) or measure again into a new --out folder")
    text = read_text(path, ENVIRONMENT)
    try:
        env = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); restore it (e.g. `git checkout -- {path}`) "
                        "or measure again into a new --out folder") from None
    if not isinstance(env, dict):
        raise UserError(f"{path}: not a JSON object; restore it or measure again into a new --out folder")
    v = env.get("format_version")
    if not (isinstance(v, int) and not isinstance(v, bool) and v in READABLE_VERSIONS):
        raise version_error(str(path), v)
    for key, tp in ENVIRONMENT_KEYS.items():
        if key in env and not isinstance(env[key], tp):
            raise UserError(f"{path}: '{key}' is a JSON {type(env[key]).__name__}, not {ENVIRONMENT_KEYS_SAID[tp]}; "
                            f"restore it (e.g. `git checkout -- {path}`) or measure again into a new --out folder")
    return env


def mixture(paths: list[Path]) -> list[str]:
    """What differs between the runs of `paths` that must be equal for their numbers to be read
    as one table or one chart: the settings keys (machine, engine digests, protocol) of their
    environment.json files, and 'settings_id of rows' where the rows of one file were measured
    under several settings. [] for one run, or runs that can be read together."""
    rows = measurements(paths, require_rows=False, environment=False)  # a missing file named first
    envs = [load_environment(_beside(p, ENVIRONMENT)) for p in paths]
    sets = [e.get("settings") or {} for e in envs]
    differ = {k for s in sets[1:] for k in set(sets[0]) | set(s) if sets[0].get(k) != s.get(k)}
    machines = [e.get("environment") or {} for e in envs]
    if any(machine_difference(machines[0], m) for m in machines[1:]):
        differ.add("machine")
    ids = {m.settings_id for m in rows if m.settings_id}
    return sorted(differ) + (["settings_id of rows"] if len(ids) > 1 else [])


def _beside(p: Path, name: str) -> Path:
    p = Path(p)
    return p / name if p.is_dir() else p.with_name(name)


def read_environment(paths: list[Path]) -> dict:
    """The environment.json beside each of `paths` (each checked); the first one's content."""
    envs = []
    for p in paths:
        p = Path(p)
        envs.append(load_environment(p / ENVIRONMENT if p.is_dir() else p.with_name(ENVIRONMENT)))
    return envs[0] if envs else {}
