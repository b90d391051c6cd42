"""The schema of the result files: their names, their columns and each column's type, and the
format versions this tinygpt-bench reads. Nothing here touches a file.

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
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

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
NAME_MAX = 64  # a preset's or backend's name becomes part of a file name (diagnose-PRESET-BACKEND.json)


def check_name(name: str, what: str) -> str:
    """`name` where it is safe as part of a file name in a results folder: letters, digits,
    '.', '_' and '-', not starting with '.' or '-', at most NAME_MAX characters (no '/', no
    '..': a name never writes outside --out). Else a UserError naming it and the fix."""
    ok = (isinstance(name, str) and 0 < len(name) <= NAME_MAX and name[0] not in ".-"
          and all(c.isascii() and (c.isalnum() or c in "._-") for c in name))
    if not ok:
        shown = name if not isinstance(name, str) or len(name) <= 40 else name[:40] + "..."
        raise UserError(f"{what} name {shown!r} cannot be part of a file name; use at most {NAME_MAX} letters, "
                        "digits, '.', '_' or '-', not starting with '.' or '-' (e.g. 'tiny-wide')")
    return name


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

    # each number column's range (a rule of RULES); not named: a float finite, an int 0 or more
    _ranges: typing.ClassVar[dict] = {}

    @classmethod
    def problem(cls, name: str, v) -> str:
        """'' where `v` is a value column `name` may hold; else what is wrong with it. The one
        check of a value's range, for the readers (from_cells) and the writers (cells)."""
        if v is None or isinstance(v, (str, bool)):
            return ""
        rule = cls._ranges.get(name, "finite" if cls.types()[name] is float else "nonnegative")
        if math.isnan(v) or (math.isinf(v) and rule != "nonnegative_or_inf"):
            return "not a finite number"
        if rule == "positive" and not v > 0:
            return "not above 0 (a time, a size or a count of at least one)"
        if rule in ("nonnegative", "nonnegative_or_inf") and v < 0:
            return "negative"
        return ""

    def cells(self) -> dict[str, str]:
        """The row as CSV text, column by column; a value out of its column's range is refused
        (ValueError): no writer puts into a file what every reader refuses."""
        for c in self.columns():
            why = self.problem(c, getattr(self, c))
            if why:
                raise ValueError(f"{type(self).__name__}.{c} = {getattr(self, c)!r}: {why}")
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
                why = cls.problem(name, v)
                if why:
                    raise UserError(f"{where}: {name} is {x!r}, {why}; {fix}")
                values[name] = v
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Measurement(_Record):
    """One (preset, backend) of a curve run: measurements.csv's row, its columns in this order."""

    _ranges: typing.ClassVar[dict] = {
        **dict.fromkeys(("cold_ms", "median_ms", "mean_ms", "min_ms", "q1_ms", "q3_ms", "max_ms", "tokens_per_s",
                         "gflop_per_s", "layers", "d_model", "heads", "ctx", "batch", "params", "flops_per_step",
                         "steps", "repeats", "n_samples", "lr", "threads"), "positive"),
        **dict.fromkeys(("mad_ms", "loss_rel_diff_backends", "loss_rel_diff_reference"), "nonnegative"),
    }

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

    _ranges: typing.ClassVar[dict] = dict.fromkeys(("repeat", "step", "ms"), "positive")

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
    _ranges: typing.ClassVar[dict] = {**dict.fromkeys(("seconds", "gflop_per_s", "flops", "threads", "repeats"),
                                                      "positive"), "max_rel_err": "nonnegative_or_inf"}

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
            raise version_error(where, v)
        missing = [k for k in ("preset", "backend", "ok", "stages") if k not in d]
        if missing:
            raise UserError(f"{where}: not a diagnose report (no '{missing[0]}'); rewrite it with "
                            "`tinygpt-bench diagnose`")
        shapes = {"preset": str, "backend": str, "ok": bool, "stages": list, "options": dict, "environment": dict}
        wrong = [k for k, tp in shapes.items() if k in d and not isinstance(d[k], tp)]
        wrong += [] if wrong or all(isinstance(st, dict) for st in d["stages"]) else ["stages"]
        if wrong:
            raise UserError(f"{where}: '{wrong[0]}' is a JSON {type(d[wrong[0]]).__name__} of the wrong kind for a "
                            "diagnose report; rewrite it with `tinygpt-bench diagnose`")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


MEASUREMENT_COLUMNS = Measurement.columns()
STEP_COLUMNS = Step.columns()
PEAK_COLUMNS = Peak.columns()



MIGRATE = "python dev/migrate_results.py"  # upgrades a folder of an older format, in a tinygpt-bench checkout


def version_error(where: str, v) -> UserError:
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
