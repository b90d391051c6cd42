"""Rows as CSV text and back, always by column name, never by position: a file whose columns
are in another order reads the same, and rows appended to it go under its own header's
columns. Every row read is checked as it is read (a bad one: a UserError naming the file, the
line and the fix)."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import pandas as pd

from tinygpt_bench.errors import UserError
from tinygpt_bench.results.schema import READABLE_VERSIONS, STATUSES, Peak, version_error


def csv_bytes(cls: type, records: list, header: bool, columns: list[str] | None = None) -> bytes:
    """`records` as CSV text: the header (when asked) and one line a record, their cells under
    `columns` (a file's own header; default: the record's columns in schema order)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns or cls.columns(), extrasaction="raise", lineterminator="\n")
    if header:
        w.writeheader()
    for r in records:
        if not isinstance(r, cls):
            raise TypeError(f"{cls.__name__} expected, got {type(r).__name__}")
        w.writerow(r.cells())
    return buf.getvalue().encode("utf-8")


def frame(records: list, cls: type) -> pd.DataFrame:
    """A pandas view of records (one row each, the CSV's columns; numbers as numbers, an empty
    value as NaN), for the reporting code that computes over columns."""
    cols = cls.columns()
    df = pd.DataFrame.from_records([dataclasses.astuple(r) for r in records], columns=cols)
    for c, tp in cls.types().items():
        if tp in (int, float):
            df[c] = pd.to_numeric(df[c])
    return df


def read_text(p: Path, what: str) -> str:
    """A result file's text; not UTF-8 or unreadable: a UserError naming it."""
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; pass a {what} written by `tinygpt-bench`") from None
    except OSError as e:
        raise UserError(f"cannot read {p} ({e.strerror}); check the path and its permissions") from None


def header_of(path: Path) -> list[str]:
    """The column names of a CSV file's first line ([] for an empty file)."""
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def fix_for(p: Path, cls: type) -> str:
    """The fix a bad row of `p` names: what measures it again."""
    if cls is Peak:
        return f"measure it again with `tinygpt-bench peak --out {p.parent}`"
    return f"delete that line and rerun `tinygpt-bench curve --resume --out {p.parent}` to measure it again"


def check_tail(p: Path, text: str, cls: type) -> None:
    """A file every writer ends with a line end: one without it was cut short (a copy or a disk
    that stopped mid-write) or edited, and its last row may be cut inside a field that still
    reads as a number. Refused, naming the line, with the fixes that lose nothing."""
    if text and not text.endswith("\n"):
        line = text.count("\n") + 1
        raise UserError(f"{p}, line {line}: the file ends inside this row, without a line end (a cut-short "
                        f"write or copy); if the row is whole, end the file with a line end (`echo >> {p}`), "
                        f"else {fix_for(p, cls)}")


def _check_once(seen: dict, k: tuple | None, line: int, where: str) -> None:
    """A row whose key an earlier row has: refused, naming both lines."""
    if k is None:
        return
    if k in seen:
        raise UserError(f"{where} repeats line {seen[k]} ({', '.join(k)}): a duplicated row would count twice; "
                        "delete the copy that is not the measured one (an exact copy: either)")
    seen[k] = line


def parse_csv(p: Path, text: str, cls: type, required: tuple, nonempty: tuple, what: str, key: tuple = ()) -> list:
    """The records of a result CSV, every row checked: a bad one raises a UserError naming the
    file, the line and the fix. key: columns no two rows may share (a step measured once: a
    duplicated row would count twice)."""
    writer = "peak" if cls is Peak else "curve"
    fix = fix_for(p, cls)
    reader = csv.reader(io.StringIO(text), strict=True)
    out, seen = [], {}
    try:
        header = next(reader, None)
        if not header:
            raise UserError(f"{p} is empty, not even a header; pass a {what} written by `{writer}`")
        check_tail(p, text, cls)
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
                raise version_error(where, v)
            for c in nonempty:
                if not row[idx[c]].strip():
                    raise UserError(f"{where}: empty {c}; {fix}")
            if "status" in idx and row[idx["status"]] not in STATUSES:
                raise UserError(f"{where}: status {row[idx['status']]!r} is not one of {', '.join(STATUSES)}; {fix}")
            out.append(cls.from_cells({c: row[i] for c, i in idx.items()}, where, fix))
            _check_once(seen, tuple(row[idx[c]] for c in key) if key else None, reader.line_num, where)
    except csv.Error as e:
        raise UserError(f"{p}, line {reader.line_num}: malformed CSV ({e}); {fix}") from None
    return out
