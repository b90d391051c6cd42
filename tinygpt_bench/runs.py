"""Where a run writes when it is given no --out: a new folder per run under ./runs/, named by its
UTC start time, with runs/latest pointing at the newest. A run from a checkout so never mixes
with the committed reference runs in results/, and two runs never mix with each other;
`curve --resume` without --out takes up runs/latest."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from tinygpt_bench.errors import UserError

BASE = Path("runs")
LATEST = "latest"


def new_folder(kind: str = "") -> Path:
    """runs/<UTC time>[-kind], created; a curve's (no kind) becomes runs/latest, which --resume
    takes up (a diagnose in between must not become what a resume continues). A name taken in
    the same second gets a suffix."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S") + (f"-{kind}" if kind else "")
    n = 1
    while True:
        folder = BASE / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            BASE.mkdir(parents=True, exist_ok=True)
            folder.mkdir()
            break
        except FileExistsError:
            n += 1
        except OSError as e:
            raise UserError(f"cannot create the run folder {folder} ({e.strerror}); give a writable folder with "
                            "--out") from None
    if not kind:
        _point_latest(folder)
    return folder


def _point_latest(folder: Path) -> None:
    link = BASE / LATEST
    tmp = BASE / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(folder.name)
        os.replace(tmp, link)  # atomic: a reader sees the old or the new folder
    except OSError:  # a file system without symlinks: the folders are still there, newest by name
        tmp.unlink(missing_ok=True)


def latest() -> Path:
    """The newest run folder (runs/latest), for --resume without --out."""
    link = BASE / LATEST
    if link.is_dir():
        return BASE / os.readlink(link) if link.is_symlink() else link
    found = sorted(p for p in BASE.glob("[0-9]*") if p.is_dir() and not p.name.endswith("-diagnose")) \
        if BASE.is_dir() else []
    if not found:
        raise UserError(f"--resume without --out takes up the newest run in {BASE}/, and there is none; give the "
                        "folder to resume with --out")
    return found[-1]
