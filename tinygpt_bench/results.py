"""Result files as typed records: what `curve`, `peak` and `diagnose` write, and what every
reader (`summary`, `chart`, `report`, `compare`, `--resume`) reads back. The only module that
knows the files' layout: writers hand it records, readers get records (or a pandas view of
them, frame()).

In an output folder:
- measurements.csv  one Measurement a (preset, backend): status, timings, throughput, parity, stamps
- steps.csv         one Step a timed step: repeat, step, ms, loss
- environment.json  the machine, the run's settings and each backend's description
- peaks.csv         one Peak a ceiling measured by `peak`
- diagnose-PRESET-BACKEND.json  one Diagnosis (and its Markdown beside it)
- repeats-in-progress/PRESET__BACKEND.json  while a measurement runs: its finished repeats,
                    taken up by --resume after a kill, removed when its row is committed

Format history (FORMAT_VERSION, written into every row and JSON file):
  1  2026-11  first version (peaks.csv had its own version 1; diagnose reports none)
  2  2026-12  one version for every file; measurements: hardware (GPU or CPU, what the
              backend is built for), native_peer (the backend an engine is compared with on
              that hardware) and relaxed_simd (the arithmetic a wasm
              engine ran), peaks: relaxed_simd, diagnose reports: format_version and
              kernel_timing (how its per-kernel times were measured). A folder of version 1
              is upgraded by dev/migrate_results.py.
     2026-12  measurements: harness_s (the measurement's wall time beyond its timed steps, s);
              a file without it reads it as unknown, and --resume adds the column to it
Each measurement is committed as it finishes (its steps, then its row; every file replaced
atomically), so an interrupted run keeps everything it measured and `--resume` can carry
on, with the finished repeats of the measurement it was in. A step counts only with its measurement's row (same run_id, preset and backend). The
folder is locked while a run writes into it (LOCK, holding the writer's pid).
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tinygpt_bench.errors import UserError

FORMAT_VERSION = 2
READABLE_VERSIONS = {FORMAT_VERSION}  # format versions this tinygpt-bench reads
MEASUREMENTS = "measurements.csv"
STEPS = "steps.csv"
ENVIRONMENT = "environment.json"
IN_PROGRESS = "repeats-in-progress"  # finished repeats of measurements not yet committed (ResultWriter)
PEAKS = "peaks.csv"
DIAGNOSE_GLOB = "diagnose-*.json"
STATUSES = ("ok", "failed", "timeout", "skipped")


def _fmt(v):
    """A measurement's or a step's value as CSV text: floats to 6 decimals (or 6 significant
    digits in exponent form below 1e-3), booleans true/false, None empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 6)) if abs(v) >= 1e-3 or v == 0 else f"{v:.6e}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _fmt_peak(v):
    """A peak's value as CSV text: floats to 6 significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else repr(float(f"{v:.6g}"))
    return v


class _Record:
    """A row of a result CSV: the dataclass's fields are the columns, in order; each field's
    type (str, int, float or bool, None where empty) says how its text is read and written."""

    _format = staticmethod(_fmt)

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def types(cls) -> dict[str, type]:
        cached = cls.__dict__.get("_types")
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = {}
            for name in cls.columns():
                args = [a for a in typing.get_args(hints[name]) if a is not type(None)] or [hints[name]]
                cached[name] = args[0]
            cls._types = cached
        return cached

    def cells(self) -> dict[str, str]:
        """The row as CSV text, column by column."""
        return {c: self._format(getattr(self, c)) for c in self.columns()}

    @classmethod
    def from_cells(cls, cells: dict[str, str], where: str, fix: str):
        """The record of a CSV row (column -> text); a column the file lacks is None. A value
        of the wrong type raises a UserError naming `where` (file and line) and the fix."""
        values = {}
        for name, tp in cls.types().items():
            x = cells.get(name)
            if x is None or not x.strip():
                values[name] = None
            elif tp is str:
                values[name] = x
            elif tp is bool:
                low = x.strip().lower()
                if low not in ("true", "false"):
                    raise UserError(f"{where}: {name} is {x!r}, not true or false; {fix}")
                values[name] = low == "true"
            else:
                try:
                    v = float(x)
                except ValueError:
                    raise UserError(f"{where}: {name} is {x!r}, not a number; {fix}") from None
                if tp is int:
                    if not v.is_integer():
                        raise UserError(f"{where}: {name} is {x!r}, not a whole number; {fix}")
                    v = int(x) if x.strip().lstrip("-").isdigit() else int(v)
                values[name] = v
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Measurement(_Record):
    """One (preset, backend) of a curve run: measurements.csv's row, its columns in this order."""

    format_version: int = FORMAT_VERSION
    run_id: str
    timestamp: str | None = None
    preset: str
    backend: str
    status: str
    stage: str | None = None
    error: str | None = None
    # the preset and the protocol
    layers: int | None = None
    d_model: int | None = None
    heads: int | None = None
    ctx: int | None = None
    batch: int | None = None
    params: int | None = None
    flops_per_step: int | None = None
    steps: int | None = None
    repeats: int | None = None
    seed: int | None = None
    lr: float | None = None
    corpus: str | None = None
    corpus_sha256: str | None = None
    # step times (ms): the cold first step, then steps 2..N over all repeats
    cold_ms: float | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    max_ms: float | None = None
    mad_ms: float | None = None
    n_samples: int | None = None
    n_outliers: int | None = None
    tokens_per_s: float | None = None
    gflop_per_s: float | None = None
    peak_rss_bytes: int | None = None
    engine_memory_bytes: int | None = None
    # losses and parity
    first_loss: float | None = None
    final_loss: float | None = None
    loss_rel_diff_backends: float | None = None
    loss_rel_diff_reference: float | None = None
    reference: str | None = None
    parity_ok: bool | None = None
    # what ran it
    device: str | None = None
    device_type: str | None = None  # GPU or CPU
    software_adapter: bool | None = None
    adapter_vendor: str | None = None
    adapter_driver: str | None = None
    adapter_api: str | None = None
    cpu_model: str | None = None
    threads: int | None = None
    runtime: str | None = None
    runtime_settings: str | None = None
    module_sha256: str | None = None
    kernels_sha256: str | None = None
    git_commit: str | None = None
    settings_id: str | None = None
    hardware: str | None = None  # GPU or CPU: what the backend is built for (device_type: what it ran on) (format 2)
    native_peer: str | None = None  # the backend this engine is compared with on its hardware (format 2)
    relaxed_simd: bool | None = None  # a wasm engine's arithmetic: relaxed-SIMD FMA or mul+add (format 2)
    harness_s: float | None = None  # seconds of a measurement beyond its timed steps, median over repeats


@dataclass(frozen=True, kw_only=True)
class Step(_Record):
    """One timed step: steps.csv's row."""

    format_version: int = FORMAT_VERSION
    run_id: str
    preset: str
    backend: str
    repeat: int
    step: int
    ms: float
    loss: float


@dataclass(frozen=True, kw_only=True)
class Peak(_Record):
    """One ceiling measured by `peak`: peaks.csv's row."""

    _format = staticmethod(_fmt_peak)

    format_version: int = FORMAT_VERSION
    run_id: str
    timestamp: str | None = None
    engine: str
    kind: str  # peak (independent multiply-add chains) or matmul
    what: str
    threads: int | None = None
    device: str | None = None
    size: str | None = None
    flops: int | None = None
    repeats: int | None = None
    seconds: float | None = None
    gflop_per_s: float | None = None
    max_rel_err: float | None = None
    status: str
    note: str | None = None
    # the machine
    cpu_model: str | None = None
    cpu_usable_cores: int | None = None
    host_memory_bytes: int | None = None
    hostname: str | None = None
    os: str | None = None
    adapter: str | None = None
    adapter_type: str | None = None
    adapter_driver: str | None = None
    adapter_api: str | None = None
    software_adapter: bool | None = None
    numpy: str | None = None
    wgpu: str | None = None
    wasmtime: str | None = None
    torch: str | None = None
    git_commit: str | None = None
    relaxed_simd: bool | None = None  # wasm rows: relaxed-SIMD FMA (true) or mul+add (false) (format 2)


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    """One diagnose report (diagnose-PRESET-BACKEND.json): its stages as written by diagnose
    (name, ok, figure, error, meaning, detail), the machine it ran on, and how the engine's
    per-kernel times were measured."""

    format_version: int = FORMAT_VERSION
    preset: str
    backend: str
    kernel_timing: str | None = None
    options: dict = field(default_factory=dict)
    ok: bool
    stages: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d: dict, where: str) -> "Diagnosis":
        if not isinstance(d, dict):
            raise UserError(f"{where}: not a diagnose report (not a JSON object); rewrite it with "
                            "`tinygpt-bench diagnose`")
        v = d.get("format_version")
        if not (isinstance(v, int) and not isinstance(v, bool) and v in READABLE_VERSIONS):
            raise _version_error(where, v)
        missing = [k for k in ("preset", "backend", "ok", "stages") if k not in d]
        if missing:
            raise UserError(f"{where}: not a diagnose report (no '{missing[0]}'); rewrite it with "
                            "`tinygpt-bench diagnose`")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


MEASUREMENT_COLUMNS = Measurement.columns()
STEP_COLUMNS = Step.columns()
PEAK_COLUMNS = Peak.columns()


def frame(records: list, cls: type) -> pd.DataFrame:
    """A pandas view of records (one row each, the CSV's columns; numbers as numbers, an empty
    value as NaN), for the reporting code that computes over columns."""
    cols = cls.columns()
    df = pd.DataFrame.from_records([dataclasses.astuple(r) for r in records], columns=cols)
    for c, tp in cls.types().items():
        if tp in (int, float):
            df[c] = pd.to_numeric(df[c])
    return df


def settings_id(settings: dict) -> str:
    """A short digest of what must match for results to be comparable (and resumable)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---- which machine a recorded environment describes --------------------------------------

def gpu_names(env: dict) -> list[str]:
    """The hardware adapters an environment saw (every implementation's, software renderers
    left out), sorted: what tells two lent machines apart whose CPUs report the same model name,
    core count and host name (the H200 and H100 machines: "Intel(R) Xeon(R) Processor", 16, "vm")."""
    return sorted({a["name"] for a in env.get("adapters") or [] if isinstance(a, dict) and a.get("name")
                   and not a.get("software")})


def machine_difference(a: dict, b: dict) -> str:
    """'' where two recorded environments can be one machine (kind); else what differs, as
    'CPU X, host h, GPUs [..]' of `a`. The GPUs are compared only where both recorded adapters
    (a CPU engine's diagnosis does not look for any), and one's GPUs among the other's are the
    same machine (a peak run names the one adapter it used, a curve every adapter it saw); a GPU
    on one side and none on the other is not."""
    differs = [k for k in ("cpu_model", "hostname") if a.get(k) != b.get(k)]
    ga, gb = set(gpu_names(a)), set(gpu_names(b))
    same_gpus = (ga <= gb or gb <= ga) if ga and gb else ga == gb
    if a.get("adapters") and b.get("adapters") and not same_gpus:
        differs.append("gpus")
    if not differs:
        return ""
    return f"CPU {a.get('cpu_model')}, host {a.get('hostname')}" + (
        f", GPUs {', '.join(sorted(ga)) or 'none'}" if a.get("adapters") else "")


# settings keys added after folders were written without them, each with how to read its value
# from such a folder's recorded environment, so that --resume of that folder on the same machine
# goes on and on another machine is refused (session 9: a resume on a lent H100 machine took up
# repeats kept on the H200 machine, whose CPU reports the same name, cores and host name)
DERIVED_SETTINGS = {"gpus": gpu_names}

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


def csv_bytes(cls: type, records: list, header: bool) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cls.columns(), extrasaction="raise", lineterminator="\n")
    if header:
        w.writeheader()
    for r in records:
        if not isinstance(r, cls):
            raise TypeError(f"{cls.__name__} expected, got {type(r).__name__}")
        w.writerow(r.cells())
    return buf.getvalue().encode("utf-8")


class ResultWriter:
    """Writes the result files of one run into a locked folder. Every write replaces the whole
    file atomically (atomic_write). A measurement is a transaction: commit() writes its steps,
    then its row; readers take a step only with the row of its run (read_steps), so a run
    killed between the two leaves no steps that count, and --resume removes them."""

    def __init__(self, out_dir: Path, environment: dict, resume: bool, may_differ: frozenset = frozenset()):
        """may_differ: settings keys a resumed run may find changed since the folder's runs (the
        artifact digests of engines this call does not measure): the folder keeps their old
        values, which its earlier rows were measured with."""
        self.may_differ = frozenset(may_differ)
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
            old_settings = old.get("settings", {})
            kept = {k: old_settings[k] for k in self.may_differ if k in old_settings}
            # a folder written before a key joined the settings: the key's value then, where its
            # environment recorded it (the GPUs it saw); the folder's own settings stay as written
            then = {**old_settings, **{k: f(old.get("environment", {})) for k, f in DERIVED_SETTINGS.items()
                                       if k not in old_settings and k in environment["settings"]}}
            # equal but for what this call does not run (kept) or what the folder derives (then):
            # the folder's settings go on as written
            if (kept or then != old_settings) and {**environment["settings"], **kept} == then:
                environment["settings"] = old_settings
                environment["settings_id"] = settings_id(old_settings)
            if old.get("settings_id") != environment["settings_id"]:
                diff = _diff(then, environment["settings"])
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
        for path, cls in ((self.m_path, Measurement), (self.s_path, Step)):
            if not path.exists() or path.stat().st_size == 0:
                self._replace(path, csv_bytes(cls, [], header=True))
            else:
                self._add_new_columns(path, cls)
        if resume:
            self._drop_orphan_steps()
        else:  # a new run: repeats kept by an earlier run in this folder cannot be mixed into it
            shutil.rmtree(self.dir / IN_PROGRESS, ignore_errors=True)

    def _replace(self, path: Path, data: bytes) -> None:
        try:
            atomic_write(path, data)
        except OSError as e:
            raise UserError(f"cannot write {path} ({e.strerror}); what was measured before is kept in {self.dir}: "
                            "free space or fix permissions, then rerun with --resume") from None

    def _add_new_columns(self, path: Path, cls: type) -> None:
        """A file resumed from before a column was added within this format version (harness_s):
        rewritten with today's columns, its rows' new fields empty (unknown), so the rows appended
        now line up with the header. A header with columns this version does not know (a later
        tinygpt-bench wrote it) is refused: rows appended under it would not line up."""
        columns = cls.columns()
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            unknown = [c for c in header if c not in columns]
            if unknown:
                raise UserError(f"{path}: columns {', '.join(unknown)} are unknown to this tinygpt-bench (a later one "
                                f"wrote the file); fix: resume it with that version, or write to a new --out folder")
            if header == columns or not set(header) < set(columns):
                return
            rows = list(reader)
        if any(None in r for r in rows):  # a malformed row: left for the readers to name
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        self._replace(path, buf.getvalue().encode("utf-8"))

    def _append(self, path: Path, cls: type, records: list) -> None:
        self._replace(path, path.read_bytes() + csv_bytes(cls, records, header=False))

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

    def measurement(self, m: Measurement) -> None:
        self._append(self.m_path, Measurement, [m])

    def steps(self, steps: list[Step]) -> None:
        if steps:
            self._append(self.s_path, Step, steps)

    def commit(self, m: Measurement, steps: list[Step]) -> None:
        """One measurement: its steps, then its row (the row is what makes the steps count)."""
        self.steps(steps)
        self.measurement(m)

    # repeats in progress ------------------------------------------------------------------------
    # A measurement's row is written when all its repeats are done; a long one (behemoth on a CPU
    # engine: minutes a repeat) killed at a time budget would lose the repeats it finished. Each
    # finished repeat is kept in IN_PROGRESS/<preset>__<backend>.json (replaced atomically) until
    # its row is committed; --resume takes them up when the settings and the work are the same.

    def _in_progress(self, preset: str, backend: str) -> Path:
        return self.dir / IN_PROGRESS / f"{preset}__{backend}.json"

    def save_repeats(self, preset: str, backend: str, state: dict) -> None:
        path = self._in_progress(preset, backend)
        try:
            path.parent.mkdir(exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write {path.parent} ({e.strerror}); what was measured before is kept in "
                            f"{self.dir}: free space or fix permissions, then rerun with --resume") from None
        self._replace(path, (json.dumps({"format_version": FORMAT_VERSION, **state}, default=str) + "\n").encode())

    def load_repeats(self, preset: str, backend: str, settings_id_: str, work_digest: str) -> dict | None:
        """The finished repeats kept for (preset, backend), or None: none kept, or kept under other
        settings or another work (then they are dropped: they cannot be mixed with this run's)."""
        path = self._in_progress(preset, backend)
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
        if (not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION
                or state.get("settings_id") != settings_id_ or state.get("work_digest") != work_digest):
            self.drop_repeats(preset, backend)
            return None
        return state

    def drop_repeats(self, preset: str, backend: str) -> None:
        path = self._in_progress(preset, backend)
        try:
            path.unlink()
            path.parent.rmdir()  # the folder goes with its last file
        except OSError:
            pass

    def close(self) -> None:
        self._lock.release()


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


MIGRATE = "python dev/migrate_results.py"  # upgrades a folder of an older format, in a tinygpt-bench checkout


def _version_error(where: str, v) -> UserError:
    readable = ", ".join(map(str, sorted(READABLE_VERSIONS)))
    n = v if isinstance(v, int) and not isinstance(v, bool) else (
        int(v) if isinstance(v, str) and v.strip().isdigit() else None)
    if n is not None and n > FORMAT_VERSION:
        fix = "upgrade tinygpt-bench to read it"
    elif n is not None and 1 <= n < FORMAT_VERSION:
        fix = f"upgrade the folder to format {FORMAT_VERSION} with `{MIGRATE} FOLDER`"
    else:
        fix = f"a file written by tinygpt-bench has {FORMAT_VERSION} there"
    return UserError(f"{where}: format version {v!r}, this tinygpt-bench reads {readable}; {fix}")


def _read_csv(p: Path, text: str, cls: type, required: tuple, nonempty: tuple, what: str) -> list:
    """The records of a result CSV, every row checked: a bad one raises a UserError naming the
    file, the line and the fix."""
    writer = "peak" if cls is Peak else "curve"
    fix = (f"delete that line and rerun `tinygpt-bench curve --resume --out {p.parent}` to measure it again"
           if writer == "curve" else f"measure it again with `tinygpt-bench peak --out {p.parent}`")
    reader = csv.reader(io.StringIO(text))
    out = []
    try:
        header = next(reader, None)
        if not header:
            raise UserError(f"{p} is empty, not even a header; pass a {what} written by `{writer}`")
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(f"{p}: missing column '{missing[0]}'; pass a {what} written by `{writer}`")
        idx = {c: header.index(c) for c in header}
        for row in reader:
            if not row:
                continue
            where = f"{p}, line {reader.line_num}"
            if len(row) != len(header):
                raise UserError(f"{where}: {len(row)} fields where the header has {len(header)} "
                                f"(a truncated or malformed row); {fix}")
            v = row[idx["format_version"]].strip()
            if not (v.isdigit() and int(v) in READABLE_VERSIONS):
                raise _version_error(where, v)
            for c in nonempty:
                if not row[idx[c]].strip():
                    raise UserError(f"{where}: empty {c}; {fix}")
            if "status" in idx and row[idx["status"]] not in STATUSES:
                raise UserError(f"{where}: status {row[idx['status']]!r} is not one of {', '.join(STATUSES)}; {fix}")
            out.append(cls.from_cells({c: row[i] for c, i in idx.items()}, where, fix))
    except csv.Error as e:
        raise UserError(f"{p}, line {reader.line_num}: malformed CSV ({e}); {fix}") from None
    return out


def _read_text(p: Path, what: str) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; pass a {what} written by `tinygpt-bench`") from None
    except OSError as e:
        raise UserError(f"cannot read {p} ({e.strerror}); check the path and its permissions") from None


def measurements(paths: list[Path], require_rows: bool = True, environment: bool = True) -> list[Measurement]:
    """The measurements of measurements.csv files (or the folders holding them), checked row
    by row (a bad one: a UserError naming the file and line). require_rows: a file with only
    its header is an error; environment: the environment.json beside each file must be there
    and readable. A later row for the same (preset, backend) supersedes an earlier one (a
    resumed run), in the later one's place (as a resumed run wrote them)."""
    out: dict[tuple[str, str], Measurement] = {}
    for p in _resolve(paths, MEASUREMENTS):
        text = _read_text(p, "measurements CSV")
        rows = _read_csv(p, text, Measurement, ("format_version", "preset", "backend", "status", "median_ms"),
                         ("preset", "backend", "status"), "measurements.csv")
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
    out = []
    for f in found:
        out += _read_csv(f, _read_text(f, "steps CSV"), Step, tuple(STEP_COLUMNS),
                         ("run_id", "preset", "backend", "step", "ms"), "steps.csv")
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
    return _read_csv(path, _read_text(path, "peaks CSV"), Peak,
                     ("format_version", "engine", "kind", "what", "gflop_per_s", "status"),
                     ("engine", "kind", "what", "status"), "peaks.csv")


def read_peaks(path: Path) -> pd.DataFrame:
    """peaks() as a frame (one row a peak)."""
    return frame(peaks(path), Peak)


def write_peaks(path: Path, records: list[Peak]) -> None:
    """peaks.csv, whole: its header and `records`, replacing the file atomically."""
    try:
        atomic_write(Path(path), csv_bytes(Peak, records, header=True))
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); free space or fix permissions") from None


def diagnosis_path(folder: Path, preset: str, backend: str) -> Path:
    """Where diagnose writes a report's JSON (its Markdown beside it, .md)."""
    return Path(folder) / f"diagnose-{preset}-{backend}.json"


def write_diagnosis(folder: Path, d: Diagnosis, markdown: str) -> tuple[Path, Path]:
    """A diagnose report into `folder`: its Markdown and its JSON, each replaced atomically."""
    js = diagnosis_path(folder, d.preset, d.backend)
    md = js.with_suffix(".md")
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write(md, markdown.encode("utf-8"))
        atomic_write(js, (json.dumps(d.to_json(), indent=2, default=str) + "\n").encode("utf-8"))
    except OSError as e:
        raise UserError(f"cannot write the diagnose report into {folder} ({e.strerror}); give a writable --out") from None
    return md, js


def diagnoses(folder: Path) -> list[Diagnosis]:
    """Every diagnose report in `folder`, in file name order, each checked."""
    out = []
    for p in sorted(Path(folder).glob(DIAGNOSE_GLOB)):
        try:
            d = json.loads(_read_text(p, "diagnose report"))
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not a diagnose report ({e}); rewrite it with `tinygpt-bench diagnose`") from None
        out.append(Diagnosis.from_json(d, str(p)))
    return out


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
