"""Locating the data that ships with the package (presets, WGSL kernels, the .wasm module).

In a built wheel they sit inside the package (`tinygpt_bench/presets`, ...); in a source
checkout or editable install they are the repository's top-level folders.
"""

from __future__ import annotations

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
