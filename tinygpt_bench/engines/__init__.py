"""The engine registry: every folder under tinygpt_bench/engines/ that exports an `ENGINE`
description (engines/description.py), and every such folder under the directories named in
$TINYGPT_BENCH_ENGINES (os.pathsep-separated), is an engine; adding an engine is adding one
folder. An engine's __init__ is cheap to import; its backends' modules are imported only when
a backend is created, so a missing optional part (a GPU driver, torch) only matters to the
backend that needs it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tinygpt_bench.engines.description import BackendSpec, Engine, OptionSpec, declared
from tinygpt_bench.errors import UserError, unknown

ENV = "TINYGPT_BENCH_ENGINES"


def _load_folder(folder: Path) -> Engine | None:
    """The ENGINE of an engine folder outside the package, imported as tinygpt_bench_engine_<name>."""
    init = folder / "__init__.py"
    if not init.is_file():
        return None
    modname = f"tinygpt_bench_engine_{folder.name.replace('-', '_')}"
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(modname, init, submodule_search_locations=[str(folder)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:  # a plug-in's own bug: named, with the fix, not a traceback
            del sys.modules[modname]
            what = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            raise UserError(f"{ENV}: the engine folder {folder} fails to import ({what}); fix its __init__.py "
                            f"or take its folder out of {ENV}") from None
    return _engine_of(sys.modules[modname])


def _engine_of(mod) -> Engine | None:
    eng = getattr(mod, "ENGINE", None)  # a folder without a description is not an engine (e.g. __pycache__)
    return dataclasses.replace(eng, package=mod.__name__) if isinstance(eng, Engine) else None


@lru_cache(maxsize=None)
def _discover(extra: str) -> tuple[Engine, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            eng = _engine_of(importlib.import_module(f"{__name__}.{info.name}"))
            if eng:
                found.append(eng)
    for d in (p for p in extra.split(os.pathsep) if p):
        root = Path(d)
        if not root.is_dir():
            raise UserError(f"{ENV}: {d} is not a folder; give folders that hold engine folders")
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            eng = _load_folder(sub)
            if eng:
                found.append(eng)
    names = [b.name for e in found for b in e.backends]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{ENV}: backend name '{dup[0]}' is declared by two engines; rename one")
    return tuple(found)


def all_engines() -> tuple[Engine, ...]:
    """Every engine, the package's first (in folder order), then those of $TINYGPT_BENCH_ENGINES."""
    return _discover(os.environ.get(ENV, ""))


def _specs() -> dict[str, tuple[Engine, BackendSpec]]:
    order = ("reference", "torch", "webgpu", "wasm")  # the package's own, in the order users know them
    engs = sorted(all_engines(), key=lambda e: order.index(e.name) if e.name in order else len(order))
    return {b.name: (e, b) for e in engs for b in e.backends}


def names() -> list[str]:
    return list(_specs())


def spec(name: str) -> tuple[Engine, BackendSpec]:
    """(engine, backend spec) of a backend name; an unknown name is a UserError naming the choices."""
    specs = _specs()
    if name not in specs:
        raise unknown("backend", name, specs)
    return specs[name]


def in_order() -> list[Engine]:
    """The engines in their declared order (peaks.csv rows, the environment record)."""
    return sorted(all_engines(), key=lambda e: e.order)


def oracle() -> str:
    """The float64 reference backend every other backend's losses are checked against."""
    (name,) = [n for n, (_, b) in _specs().items() if b.oracle]
    return name


def oracle_loss_and_grad(preset, params, batch) -> tuple:
    """The oracle's float64 loss and gradient (a flat vector in `params`' dtype) of one batch
    (B, T+1) from `params` (diagnose's parity stage): its engine's `loss_and_grad` hook, whose
    module is imported only now."""
    name = oracle()
    eng, _ = spec(name)
    if not eng.loss_and_grad:
        raise UserError(f"the oracle backend '{name}' has no float64 loss and gradient: its engine '{eng.name}' "
                        "declares no loss_and_grad hook; declare one in its ENGINE")
    return eng.resolve(eng.loss_and_grad)(preset, params, batch)


def curve_defaults() -> list[str]:
    """The backends `curve` measures unless told (those declared curve_default), in registry order."""
    return [n for n, (_, b) in _specs().items() if b.curve_default]


def engine(name: str) -> Engine:
    """An engine by its folder name."""
    for e in all_engines():
        if e.name == name:
            return e
    raise unknown("engine", name, [e.name for e in all_engines()])


@dataclass(frozen=True)
class BackendInfo:
    """What reporting needs to know of a backend name, without importing its engine's code."""

    name: str
    engine: str  # the engine folder's name
    hardware: str  # 'GPU' or 'CPU': what it is built for, whatever adapter it ran on
    native_peer: str | None  # the backend a user would otherwise pick on that hardware; None for a peer
    kernel_timing: str | None  # how its per-kernel times (profile) are measured; None: it has none
    label: str


def info(name: str) -> BackendInfo:
    """What a result row says of a backend beyond its describe(); a UserError for an unknown name."""
    eng, b = spec(name)
    return BackendInfo(b.name, eng.name, b.hardware, b.native_peer, b.kernel_timing, b.label)


def get_class(name: str):
    """(backend class, the keyword arguments its name fixes), importing the engine's module."""
    eng, b = spec(name)
    return eng.resolve(b.cls), dict(b.fixed)


def options_of(name: str) -> tuple[OptionSpec, ...]:
    """The options a backend declares."""
    return declared(spec(name)[1].options)


def check_options(name: str, options: dict) -> dict:
    """`options` (None values: not given) checked against what backend `name` declares; a
    UserError names one it does not take and the backends that do."""
    decl = {o.name: o for o in options_of(name)}
    given = {k: v for k, v in options.items() if v is not None}
    for k, v in given.items():
        if k not in decl:
            takers = [n for n in names() if any(o.name == k for o in options_of(n))]
            flag = next((o.flag.split("/")[0] for n in takers for o in options_of(n) if o.name == k and o.flag), k)
            raise UserError(f"backend '{name}' takes no {flag}" + (f"; it is an option of {', '.join(takers)}"
                                                                   if takers else "") + "; leave it out")
        if decl[k].check:
            decl[k].check(v)
    return given


def create(name: str, **options):
    """A new, unloaded backend: its declared options (an undeclared one is a UserError) and, where
    it declares fault kinds, `fault` (the backend refuses a kind it does not take, naming its own)."""
    _, b = spec(name)
    fault = options.pop("fault", None)
    given = check_options(name, options)
    if fault is not None:
        if not b.faults:
            raise UserError(f"backend '{name}' takes no injected faults; it has '{fault}' asked of it")
        given["fault"] = fault
    cls, fixed = get_class(name)
    return cls(**{**fixed, **given})


def select(name: str, values: dict) -> dict:
    """Of `values` (option name -> value, None: not given), those backend `name` declares: the
    share of a run's options that one of its backends takes (the CLI has refused any option
    that no chosen backend takes)."""
    decl = {o.name for o in options_of(name)}
    return {k: v for k, v in values.items() if k in decl and v is not None}


def plan(name: str, preset, options: dict, fault: str | None = None) -> list[dict]:
    """The backend's plan() rows for a preset under its declared options (the fault too, where it takes one)."""
    cls, fixed = get_class(name)
    given = check_options(name, options)
    if fault is not None and spec(name)[1].faults:
        given["fault"] = fault
    return cls.plan(preset, **{**fixed, **given})


def fingerprint(values: dict) -> dict:
    """The --resume fingerprint of the engine options: {key: value} of every option a backend
    declares as 'always' (even unset) or 'given' (when set to other than its default). `values`
    is keyed by option name (threads, relaxed_simd...)."""
    out = {}
    for n in names():
        for o in options_of(n):
            v = values.get(o.name)
            if o.fingerprint == "always" or (o.fingerprint == "given" and v is not None and v != o.default):
                out[o.key] = v
    return out


def digests() -> dict:
    """Every engine's artifact digests (module_sha256, kernels_sha256...): None where the files are missing."""
    from tinygpt_bench.resources import resource_dir, sha256_of

    out = {}
    for e in all_engines():
        for key, (folder, pattern) in e.artifacts.items():
            try:
                out[key] = sha256_of(list(resource_dir(folder).glob(pattern)))
            except FileNotFoundError:
                out[key] = None
    return out


def artifacts_not_run_by(backends: list[str]) -> set[str]:
    """The artifact digest keys (kernels_sha256, ...) of engines none of `backends` belongs to:
    what a resumed run that measures only `backends` does not run (curve: those may have changed
    since the folder's earlier runs, whose rows carry their own digests)."""
    used = {spec(b)[0].name for b in backends}
    return {k for e in all_engines() if e.name not in used for k in e.artifacts}


def explain(error: str) -> str | None:
    """The first engine's plain sentence on an error text, or None where none knows it."""
    for e in all_engines():
        meaning = e.explain(error)
        if meaning:
            return meaning
    return None


def cli_options(command: str, backend_names: list[str] | None = None) -> list[OptionSpec]:
    """The flags `command` offers: each declared option once (by flag), over every backend."""
    seen: dict[str, OptionSpec] = {}
    for n in backend_names or names():
        for o in options_of(n):
            if o.flag and command in o.commands and o.key not in seen:
                seen[o.key] = o
    return list(seen.values())
