"""The writers of result files. A run's files (ResultWriter) are written into a locked folder,
each write replacing its file whole (store.atomic_write); a measurement is a transaction:
its steps, then its row. Rows appended to a file go under that file's own header (by column
name). `peak` and `diagnose` write their files whole (write_peaks, write_diagnosis)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from tinygpt_bench.errors import UserError
from tinygpt_bench.results import resume as resume_mod
from tinygpt_bench.results import store
from tinygpt_bench.results.codec import csv_bytes, header_of
from tinygpt_bench.results.schema import (ENVIRONMENT, FORMAT_VERSION, IN_PROGRESS, MEASUREMENTS, STEP_COLUMNS, STEPS,
                                          Diagnosis, Measurement, Peak, Step, check_name)
from tinygpt_bench.results.store import atomic_write


class ResultWriter:
    """Writes the result files of one run into a locked folder. Every write replaces the whole
    file atomically (atomic_write). A measurement is a transaction: commit() writes its steps,
    then its row; readers take a step only with the row of its run (read_steps), so a run
    killed between the two leaves no steps that count, and --resume removes them."""

    def __init__(self, out_dir: Path, environment: dict, resume: bool, may_differ: frozenset = frozenset(),
                 shapes: dict | None = None):
        """may_differ: settings keys a resumed run may find changed since the folder's runs (the
        artifact digests of engines this call does not measure): the folder keeps their old
        values, which its earlier rows were measured with. shapes: each preset name of the run ->
        its shape_id (resume.decide). The run's environment record is `self.record` (a copy of
        `environment`, merged with the folder's on a resume); `environment` is left as it was."""
        self.may_differ = frozenset(may_differ)
        self.dir = Path(out_dir)
        self.env_path = self.dir / ENVIRONMENT
        self.m_path, self.s_path = self.dir / MEASUREMENTS, self.dir / STEPS
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} is a file, not a folder; give a folder path for the results")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = store.FolderLock(self.dir)
        except OSError as e:
            raise UserError(f"cannot write into {self.dir} ({e.strerror}); give a writable --out folder") from None
        try:
            self._start(environment, resume, shapes)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, environment: dict, resume: bool, shapes: dict | None) -> None:
        decision = resume_mod.decide(self.dir, environment, resume, self.may_differ, shapes)
        if decision.refusal:
            raise UserError(decision.refusal)
        self.decision = decision
        self.record = decision.environment  # the run's environment record: the writer's own copy
        store.remove_temps(self.dir)  # killed writers' (the lock is ours: no writer is running)
        self.environment(self.record)
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
            store.atomic_write(path, data)
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
        """`records` after the file's rows, each cell under its column in the file's own header
        (a file whose columns are in another order gets them where its header says). A file
        without its final line end gets one first: a new row is never glued to the last one."""
        old = path.read_bytes()
        if old and not old.endswith(b"\n"):
            old += b"\n"
        self._replace(path, old + csv_bytes(cls, records, header=False, columns=header_of(path)))

    def _drop_orphan_steps(self) -> None:
        """Steps of a measurement whose row never reached measurements.csv (a killed run)."""
        with open(self.m_path, newline="", encoding="utf-8") as f:
            keys = {(r.get("run_id"), r.get("preset"), r.get("backend")) for r in csv.DictReader(f)}
        lines = self.s_path.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            return
        header = next(csv.reader([lines[0]]))
        if set(header) != set(STEP_COLUMNS):
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
        check_name(preset, "preset")
        check_name(backend, "backend")
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


def write_peaks(path: Path, records: list[Peak]) -> None:
    """peaks.csv, whole: its header and `records`, replacing the file atomically."""
    try:
        atomic_write(Path(path), csv_bytes(Peak, records, header=True))
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); free space or fix permissions") from None


def diagnosis_path(folder: Path, preset: str, backend: str) -> Path:
    """Where diagnose writes a report's JSON (its Markdown beside it, .md)."""
    check_name(preset, "preset")
    check_name(backend, "backend")
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
