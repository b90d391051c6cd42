"""Result files: what a curve run writes, and reads back (`chart`, `compare`, `--resume`).

In the output folder:
- measurements.csv  one row per (preset, backend): status, timings, throughput, parity, stamps
- steps.csv         one row per timed step: repeat, step, ms, loss
- environment.json  the machine, the run's settings and each backend's description

Format history (FORMAT_VERSION, written into every row and the JSON):
  1  2026-11  first version
     2026-12  measurements.csv gains harness_s (a file without it reads as unknown; --resume adds it)
Each measurement is committed as it finishes (its steps, then its row; every file replaced
atomically), so an interrupted run keeps everything it measured and `--resume` can carry
on. A step counts only with its measurement's row (same run_id, preset and backend). The
folder is locked while a run writes into it (LOCK, holding the writer's pid).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import tempfile
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
    "n_samples", "n_outliers", "tokens_per_s", "gflop_per_s", "peak_rss_bytes", "engine_memory_bytes", "harness_s",
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


LOCK = ".tinygpt-bench.lock"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, flushed and
    fsynced, then os.replace over the old one (and the folder fsynced)."""
    path = Path(path)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FolderLock:
    """One run at a time in a results folder: an flock on LOCK, which holds the holder's pid.
    The kernel drops the lock when its process dies, so a dead run's lock is simply taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UserError(f"{folder} is in use by another tinygpt-bench run (pid {holder}); "
                                "wait for it to end, or give another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder unlinked between our open and our lock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


def _csv_text(columns: list[str], rows: list[dict], header: bool) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    return buf.getvalue().encode("utf-8")


class ResultWriter:
    """Writes the result files of one run into a locked folder. Every write replaces the whole
    file atomically (atomic_write). A measurement is a transaction: commit() writes its steps,
    then its row; readers take a step only with the row of its run (read_steps), so a run
    killed between the two leaves no steps that count, and --resume removes them."""

    def __init__(self, out_dir: Path, environment: dict, resume: bool):
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} is a file, not a folder; give a folder path for the results")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = FolderLock(self.dir)
        except OSError as e:
            raise UserError(f"cannot write into {self.dir} ({e.strerror}); give a writable --out folder") from None
        try:
            self._start(environment, resume)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, environment: dict, resume: bool) -> None:
        self.env_path = self.dir / ENVIRONMENT
        self.m_path, self.s_path = self.dir / MEASUREMENTS, self.dir / STEPS
        if self.m_path.exists() and not resume:
            raise UserError(
                f"{self.m_path} already holds results; pass --resume to continue that run, "
                "or --out with a new folder"
            )
        if resume and self.m_path.exists() and not self.env_path.exists():
            raise UserError(f"--resume refused: {self.dir} holds {MEASUREMENTS} but no {ENVIRONMENT}, so its "
                            "settings and machine are unknown; use a new --out folder")
        if resume and self.env_path.exists():
            old = load_environment(self.env_path)
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
        self.environment(environment)
        for path, columns in ((self.m_path, MEASUREMENT_COLUMNS), (self.s_path, STEP_COLUMNS)):
            if not path.exists() or path.stat().st_size == 0:
                self._replace(path, _csv_text(columns, [], header=True))
            else:
                self._add_new_columns(path, columns)
        if resume:
            self._drop_orphan_steps()

    def _replace(self, path: Path, data: bytes) -> None:
        try:
            atomic_write(path, data)
        except OSError as e:
            raise UserError(f"cannot write {path} ({e.strerror}); what was measured before is kept in {self.dir}: "
                            "free space or fix permissions, then rerun with --resume") from None

    def _add_new_columns(self, path: Path, columns: list[str]) -> None:
        """A file resumed from an earlier version of this format (no harness_s, added 2026-12):
        rewritten with today's columns, its rows' new fields empty (unknown), so the rows appended
        now line up with the header. A header with columns this version does not know is kept."""
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if header == columns or not set(header) < set(columns):
                return
            rows = list(reader)
        if any(None in r for r in rows):  # a malformed row: left for the readers to name
            return
        self._replace(path, _csv_text(columns, rows, header=True))

    def _append(self, path: Path, columns: list[str], rows: list[dict]) -> None:
        self._replace(path, path.read_bytes() + _csv_text(columns, rows, header=False))

    def _drop_orphan_steps(self) -> None:
        """Steps of a measurement whose row never reached measurements.csv (a killed run)."""
        with open(self.m_path, newline="", encoding="utf-8") as f:
            keys = {(r.get("run_id"), r.get("preset"), r.get("backend")) for r in csv.DictReader(f)}
        lines = self.s_path.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            return
        header = next(csv.reader([lines[0]]))
        if header != STEP_COLUMNS:
            return
        i_run, i_preset, i_backend = (header.index(c) for c in ("run_id", "preset", "backend"))
        kept = [lines[0]]
        for line in lines[1:]:
            f = next(csv.reader([line]), [])
            if len(f) != len(header) or (f[i_run], f[i_preset], f[i_backend]) in keys:
                kept.append(line)
        if len(kept) != len(lines):
            self._replace(self.s_path, "".join(kept).encode("utf-8"))

    def environment(self, environment: dict) -> None:
        self._replace(self.env_path, (json.dumps(environment, indent=2, default=str) + "\n").encode("utf-8"))

    def measurement(self, row: dict) -> None:
        self._append(self.m_path, MEASUREMENT_COLUMNS, [{"format_version": FORMAT_VERSION, **row}])

    def steps(self, rows: list[dict]) -> None:
        if rows:
            self._append(self.s_path, STEP_COLUMNS, [{"format_version": FORMAT_VERSION, **r} for r in rows])

    def commit(self, row: dict, steps: list[dict]) -> None:
        """One measurement: its steps, then its row (the row is what makes the steps count)."""
        self.steps(steps)
        self.measurement(row)

    def close(self) -> None:
        self._lock.release()


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


READABLE_VERSIONS = {1}  # format versions this tinygpt-bench reads
MEASUREMENT_NUMERIC = (
    "format_version", "layers", "d_model", "heads", "ctx", "batch", "params", "flops_per_step", "steps", "repeats",
    "seed", "lr", "cold_ms", "median_ms", "mean_ms", "min_ms", "q1_ms", "q3_ms", "max_ms", "mad_ms", "n_samples",
    "n_outliers", "tokens_per_s", "gflop_per_s", "peak_rss_bytes", "engine_memory_bytes", "harness_s", "first_loss",
    "final_loss", "loss_rel_diff_backends", "loss_rel_diff_reference",
)
STEP_NUMERIC = ("format_version", "repeat", "step", "ms", "loss")


def _version_error(where: str, v) -> UserError:
    readable = ", ".join(map(str, sorted(READABLE_VERSIONS)))
    newer = isinstance(v, int) and not isinstance(v, bool) and v > FORMAT_VERSION or (
        isinstance(v, str) and v.strip().isdigit() and int(v) > FORMAT_VERSION)
    fix = "upgrade tinygpt-bench to read it" if newer else f"a file written by `curve` has {FORMAT_VERSION} there"
    return UserError(f"{where}: format version {v!r}, this tinygpt-bench reads {readable}; {fix}")


def _check_csv(p: Path, text: str, required: tuple, numeric: tuple, nonempty: tuple, what: str) -> int:
    """Check every row of a result CSV; returns the number of rows. A bad row raises a
    UserError naming the file and the line."""
    fix = (f"delete that line and rerun `tinygpt-bench curve --resume --out {p.parent}` to measure it again")
    reader = csv.reader(io.StringIO(text))
    n = 0
    try:
        header = next(reader, None)
        if not header:
            raise UserError(f"{p} is empty, not even a header; pass a {what} written by `curve`")
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(f"{p}: missing column '{missing[0]}'; pass a {what} written by `curve`")
        idx = {c: header.index(c) for c in header}
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            n += 1
            if len(row) != len(header):
                raise UserError(f"{p}, line {line}: {len(row)} fields where the header has {len(header)} "
                                f"(a truncated or malformed row); {fix}")
            v = row[idx["format_version"]].strip()
            if not (v.isdigit() and int(v) in READABLE_VERSIONS):
                raise _version_error(f"{p}, line {line}", v)
            for c in nonempty:
                if not row[idx[c]].strip():
                    raise UserError(f"{p}, line {line}: empty {c}; {fix}")
            for c in numeric:
                x = row[idx[c]] if c in idx else ""
                if x.strip():
                    try:
                        float(x)
                    except ValueError:
                        raise UserError(f"{p}, line {line}: {c} is {x!r}, not a number; {fix}") from None
            if "status" in required and row[idx["status"]] not in STATUSES:
                raise UserError(f"{p}, line {line}: status {row[idx['status']]!r} is not one of "
                                f"{', '.join(STATUSES)}; {fix}")
    except csv.Error as e:
        raise UserError(f"{p}, line {reader.line_num}: malformed CSV ({e}); {fix}") from None
    return n


def _read_text(p: Path, what: str) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; pass a {what} written by `curve`") from None
    except OSError as e:
        raise UserError(f"cannot read {p} ({e.strerror}); check the path and its permissions") from None


def read_measurements(paths: list[Path], require_rows: bool = True, environment: bool = True) -> pd.DataFrame:
    """The rows of measurements.csv files, checked row by row (a bad one: a UserError naming the
    file and line). require_rows: a file with only its header is an error; environment: the
    environment.json beside each file must be there and readable."""
    frames = []
    for p in _resolve(paths, MEASUREMENTS):
        text = _read_text(p, "measurements CSV")
        n = _check_csv(p, text, ("format_version", "preset", "backend", "status", "median_ms"),
                       MEASUREMENT_NUMERIC, ("preset", "backend", "status"), "measurements.csv")
        if n == 0 and require_rows:
            raise UserError(f"{p} holds no measurements, only its header (a run stopped in its first "
                            f"measurement); complete it with `tinygpt-bench curve --resume --out {p.parent}`")
        if environment:
            load_environment(p.with_name(ENVIRONMENT))
        try:
            df = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise UserError(f"{p}: not a readable measurements CSV ({e}); pass a file written by `curve`") from None
        df["source"] = str(p)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    # a later row for the same (preset, backend) supersedes an earlier one (resumed runs)
    return df.drop_duplicates(subset=["preset", "backend"], keep="last").reset_index(drop=True)


def read_steps(paths: list[Path]) -> pd.DataFrame | None:
    """The steps of the measurements in `paths`: only a step whose (run_id, preset, backend) has
    its row in measurements.csv counts (a measurement is committed by its row)."""
    found = []
    for p in paths:
        p = Path(p)
        cand = p / STEPS if p.is_dir() else p.with_name(STEPS)
        if cand.is_file():
            found.append(cand)
    if not found:
        return None
    frames = []
    for f in found:
        text = _read_text(f, "steps CSV")
        _check_csv(f, text, tuple(STEP_COLUMNS), STEP_NUMERIC, ("run_id", "preset", "backend", "step", "ms"),
                   "steps.csv")
        frames.append(pd.read_csv(io.StringIO(text)))
    steps = pd.concat(frames, ignore_index=True)
    m = read_measurements(paths, require_rows=False, environment=False)
    keys = set(zip(m["run_id"].astype(str), m["preset"].astype(str), m["backend"].astype(str)))
    mine = [k in keys for k in zip(steps["run_id"].astype(str), steps["preset"].astype(str),
                                   steps["backend"].astype(str))]
    return steps[mine].reset_index(drop=True)


def load_environment(path: Path) -> dict:
    """One environment.json, checked: there, JSON, an object of a format version this reads."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; `curve` writes it beside {MEASUREMENTS}: restore it "
                        f"(e.g. `git checkout -- {path}`) or measure again into a new --out folder")
    text = _read_text(path, ENVIRONMENT)
    try:
        env = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); restore it (e.g. `git checkout -- {path}`) "
                        "or measure again into a new --out folder") from None
    if not isinstance(env, dict):
        raise UserError(f"{path}: not a JSON object; restore it or measure again into a new --out folder")
    v = env.get("format_version")
    if not (isinstance(v, int) and not isinstance(v, bool) and v in READABLE_VERSIONS):
        raise _version_error(str(path), v)
    return env


def read_environment(paths: list[Path]) -> dict:
    """The environment.json beside each of `paths` (each checked); the first one's content."""
    envs = []
    for p in paths:
        p = Path(p)
        envs.append(load_environment(p / ENVIRONMENT if p.is_dir() else p.with_name(ENVIRONMENT)))
    return envs[0] if envs else {}
