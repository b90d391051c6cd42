"""Locating the data that ships with the package (presets, WGSL kernels, the .wasm module).

In a built wheel they sit inside the package (`tinygpt_bench/presets`, ...); in a source
checkout or editable install they are the repository's top-level folders. `sha256_of` digests
such files (the engines' artifacts: kernels, the .wasm module) for the --resume fingerprint and
the backends' describe(). A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` (presets, kernels, wasm) shipped with this installation."""
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"package data folder '{name}' not found beside {_PKG}; reinstall tinygpt-bench")


def repo_root() -> Path | None:
    """The source checkout this package runs from, if any (for the git commit in results)."""
    root = _PKG.parent
    return root if (root / "pyproject.toml").is_file() else None


def sha256_of(paths: list[Path]) -> str | None:
    """One digest over the files' names and contents (sorted), or None when there are none."""
    files = sorted(p for p in paths if p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
