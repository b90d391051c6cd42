"""What a run may do with its output folder, decided before anything is measured or written:
a pure function of the folder's files and the new run's environment record. It keeps what the
folder measured under the same settings, on the same machine and with the same preset shapes,
and names what is left to measure; or it refuses, with the reason and a fix that loses nothing.
It writes nothing and changes none of its caller's data (the record it returns is a copy)."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

from tinygpt_bench.errors import UserError
from tinygpt_bench.results.machine import DERIVED_SETTINGS, settings_id
from tinygpt_bench.results.readers import load_environment, measurements, step_file
from tinygpt_bench.results.codec import header_of
from tinygpt_bench.results.schema import ENVIRONMENT, MEASUREMENTS, STEPS, Measurement, Step

SHAPE = ("layers", "d_model", "heads", "ctx", "batch")  # what a preset is, whatever its name


@dataclass(frozen=True)
class Decision:
    """environment: the record the run writes (the caller's, merged with the folder's on a
    resume); keep: the (preset, backend) pairs already measured, not measured again; refusal:
    where not empty, nothing may be measured or written, and it says why and the fix."""

    environment: dict
    keep: frozenset = frozenset()
    refusal: str = ""

    def measure(self, pairs) -> list:
        """The pairs of `pairs` left to measure (those not kept), in order."""
        return [p for p in pairs if tuple(p) not in self.keep]


def shape_id(layers, d_model, heads, ctx, batch) -> str:
    """A short digest of a model's shape: the identity of a preset in a resume key (two files
    of one name and another shape are two models)."""
    blob = ",".join(str(int(x)) for x in (layers, d_model, heads, ctx, batch)).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def row_shape(m: Measurement) -> str | None:
    """The shape digest of a row, or None where it does not record its whole shape."""
    values = [getattr(m, k) for k in SHAPE]
    return None if None in values else shape_id(*values)


def decide(folder: Path, environment: dict, resume: bool, may_differ: frozenset = frozenset(),
           shapes: dict | None = None) -> Decision:
    """The decision for a run writing `environment` into `folder`. may_differ: settings keys a
    resumed run may find changed (the artifact digests of engines it does not run); shapes:
    each preset name of the run -> its shape_id, checked against the folder's rows."""
    record = copy.deepcopy(environment)
    try:
        keep = _check(Path(folder), record, resume, frozenset(may_differ), shapes or {})
    except UserError as e:
        return Decision(copy.deepcopy(environment), frozenset(), str(e))
    return Decision(record, keep)


def _check(folder: Path, record: dict, resume: bool, may_differ: frozenset, shapes: dict) -> frozenset:
    """The pairs to keep; raises UserError for a refusal; merges the folder's record into `record`."""
    m_path, e_path = folder / MEASUREMENTS, folder / ENVIRONMENT
    if m_path.exists() and not resume:
        raise UserError(f"{m_path} already holds results; pass --resume to continue that run, "
                        "or --out with a new folder")
    if not resume:
        return frozenset()
    if m_path.exists() and not e_path.exists():
        raise UserError(f"--resume refused: {folder} holds {MEASUREMENTS} but no {ENVIRONMENT}, so its "
                        "settings and machine are unknown; use a new --out folder")
    if e_path.exists():
        _merge(folder, load_environment(e_path), record, may_differ)
    rows = _checked_rows(folder)
    _check_shapes(folder, rows, shapes)
    return frozenset((r.preset, r.backend) for r in rows)


def _checked_rows(folder: Path) -> list:
    """The folder's measurements, after every file a run appends to is checked as the readers
    check it (measurements.csv, steps.csv: a damaged one refused, naming its line and the fix).
    A file of zero bytes holds nothing to keep (the writer gives it its header)."""
    m_path, s_path = folder / MEASUREMENTS, folder / STEPS
    if s_path.is_file() and s_path.stat().st_size:
        step_file(s_path)
    rows = []
    if m_path.is_file() and m_path.stat().st_size:
        rows = measurements([folder], require_rows=False, environment=False)
    for path, cls in ((m_path, Measurement), (s_path, Step)):
        _check_columns(path, cls)  # after the readers' checks: the file is text, its rows whole
    return rows


def _check_columns(path: Path, cls: type) -> None:
    """A header with a column this version does not know (a later tinygpt-bench's, or a damaged
    name): rows appended under it would leave that column empty. Refused before anything is written."""
    if not path.is_file() or not path.stat().st_size:
        return
    unknown = [c for c in header_of(path) if c not in cls.columns()]
    if unknown:
        raise UserError(f"{path}, line 1: columns {', '.join(unknown)} are unknown to this tinygpt-bench (a later one "
                        "wrote the file, or the header is damaged); fix: resume it with that version, restore the "
                        "header, or write to a new --out folder")


def _check_shapes(folder: Path, rows: list, shapes: dict) -> None:
    """A preset of this run whose name the folder measured with another shape: refused (its rows
    and the new ones would read as one model)."""
    for r in rows:
        new, old = shapes.get(r.preset), row_shape(r)
        if new and old and new != old:
            then = "x".join(str(getattr(r, k)) for k in SHAPE)
            raise UserError(f"--resume refused: {folder} measured a preset '{r.preset}' of another shape "
                            f"(layers x d_model x heads x ctx x batch {then}); give this preset its own "
                            "name, or use a new --out folder")


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:3]) or "settings digest differs"


def _merge(folder: Path, old: dict, record: dict, may_differ: frozenset) -> None:
    """The folder's record and this run's as one: the same settings (else refused), the presets,
    backends and descriptions of both, and the earlier run ids."""
    old_settings = old.get("settings", {})
    kept = {k: old_settings[k] for k in may_differ if k in old_settings}
    # a folder written before a key joined the settings: the key's value then, where its
    # environment recorded it (the GPUs it saw); the folder's own settings stay as written
    then = {**old_settings, **{k: f(old.get("environment", {})) for k, f in DERIVED_SETTINGS.items()
                               if k not in old_settings and k in record["settings"]}}
    # equal but for what this call does not run (kept) or what the folder derives (then):
    # the folder's settings go on as written
    if (kept or then != old_settings) and {**record["settings"], **kept} == then:
        record["settings"] = old_settings
        record["settings_id"] = settings_id(old_settings)
    if old.get("settings_id") != record["settings_id"]:
        raise UserError(f"--resume refused: {folder} was measured with other settings or on another machine "
                        f"({_diff(then, record['settings'])}); use a new --out folder")
    for key in ("presets", "backends"):  # a resumed run covers what the folder held and what it adds
        record[key] = list(dict.fromkeys([*old.get(key, []), *record[key]]))
    record["backend_descriptions"] = {**old.get("backend_descriptions", {}),
                                      **record.get("backend_descriptions", {})}
    record["earlier_run_ids"] = [*old.get("earlier_run_ids", []), old.get("run_id")]
