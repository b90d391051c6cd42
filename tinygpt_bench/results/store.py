"""Files on disk: each written whole or not at all (atomic_write), one run at a time in a
folder (FolderLock). A temporary file never outlives its write: a failed write (a full disk)
removes its own, and one left by a killed process (its pid in the name, that pid gone) is
removed by the next write of the same file. A file gets the mode the umask gives a new file,
or keeps its own mode when it is replaced."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from tinygpt_bench.errors import UserError

LOCK = ".tinygpt-bench.lock"
TMP_SUFFIX = ".tmp"
OURS = (".csv", ".json", ".png", ".svg", ".md")  # what tinygpt-bench writes: its temporary files


def _umask() -> int:
    """The process's umask (read by setting it, then setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The replaced file's own mode, or what the umask gives a new file (0666 & ~umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _write_all(fd: int, data: bytes) -> None:
    """Every byte of `data` into fd (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def temp_name(path: Path) -> Path:
    """The temporary file of one write of `path`: hidden, in the same folder, named with the
    writer's pid so that one left by a killed writer can be told from a live one's."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{TMP_SUFFIX}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(path: Path) -> list[Path]:
    """Temporary files of `path` whose writer is gone (its pid not running): a write killed
    before its rename."""
    path = Path(path)
    out = []
    for p in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        pid = p.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            out.append(p)
    return out


def remove_temps(folder: Path) -> None:
    """Every temporary file of a write in `folder` (killed writers', of any tinygpt-bench
    version): called under the folder's lock, where no other writer can be running."""
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if any(f"{ext}." in p.name for ext in OURS):
            p.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, fsynced, then
    os.replace over the old one (and the folder fsynced). On any failure (a full disk, a
    signal) the temporary file is removed and the old file is untouched."""
    path = Path(path)
    for p in stale_temps(path):
        p.unlink(missing_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, _mode_for(path))
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot fsync a folder; the rename is done
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
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
