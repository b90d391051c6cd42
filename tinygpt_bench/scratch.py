"""Host scratch files that carry bulk data between this program's processes: the work's weights
from curve to its workers (protocol.handed_over), wasm-v8's transfers to and from Node. They live
in /dev/shm where there is one (memory, never a disk), else in the temporary folder, and their
names carry the owner's pid, so the files of a process killed half-way are removed by the next
one that starts (remove_orphans)."""

from __future__ import annotations

import glob
import os
import tempfile


def folder() -> str:
    """/dev/shm where this machine has a writable one, else the temporary folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def create(prefix: str, suffix: str = ".bin", where: str | None = None) -> str:
    """A new empty file `<prefix><pid>-<random><suffix>`; the caller removes it (remove)."""
    fd, path = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=where or folder())
    os.close(fd)
    return path


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_orphans(prefix: str, where: str | None = None) -> list[str]:
    """Remove the files `prefix`<pid>-* in `where` whose process is no longer alive; returns
    what was removed. Files of live processes (or of another user's), and other names, stay."""
    removed = []
    for path in glob.glob(os.path.join(where or folder(), f"{glob.escape(prefix)}*-*")):
        pid = os.path.basename(path)[len(prefix):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's: PermissionError below)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
