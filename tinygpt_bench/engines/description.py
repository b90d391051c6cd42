"""What an engine says about itself: one `Engine` object per engine folder (engines/<name>/__init__.py).

An engine folder exports `ENGINE = Engine(...)`, and importing it is cheap: the backends'
classes are named as "module:Class" (relative to the engine's package) and imported only
when a backend is created, so a missing GPU driver or torch only matters to its backend.

Options: each engine declares its options once, as fields of a frozen dataclass made with
`option(...)` (type, default, help, CLI flag, the commands that offer it, whether it is
part of the --resume fingerprint). The CLI builds its flags from these declarations, the
protocol builds the constructor's keyword arguments from them, and an option a backend does
not declare is refused (never silently dropped). An option several engines take (--threads,
--browser) is declared here, once, and each of them makes its field with that function.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

# which commands offer an engine option as a flag
RUN, CURVE, DIAGNOSE, PEAK = "run", "curve", "diagnose", "peak"
MEASURING = (RUN, CURVE, DIAGNOSE)


def option(default: Any, help: str, flag: str | None = None, commands: tuple[str, ...] = MEASURING,
           fingerprint: str = "no", parse: Callable[[str], Any] | None = None,
           check: Callable[[Any], None] | None = None, metavar: str | None = None):
    """A field of an engine's options dataclass, declared once.

    flag: the CLI flag ('--threads'; a boolean may give '--wasm-fma/--no-wasm-fma'); None: no
    flag (an argument for tests and dev/ tools only). commands: the commands whose CLI offers it.
    fingerprint: 'always' (part of the --resume fingerprint, even unset), 'given' (part of it
    only when set to other than its default: options added later, so that earlier result
    folders keep their fingerprint) or 'no'. parse: the CLI text to the value (sizes such as
    '4GiB'); the flag then takes text. check: raises a UserError for a bad value."""
    meta = {"help": help, "flag": flag, "commands": tuple(commands) if flag else (), "fingerprint": fingerprint,
            "parse": parse, "check": check, "metavar": metavar}
    assert fingerprint in ("always", "given", "no"), fingerprint
    return field(default=default, metadata=meta)


# The options several engines take, declared here once each (one flag, one meaning, one help);
# each engine that takes one makes its field with the function: `threads: int | None = threads_option()`.
def threads_option():
    """--threads: how many threads an engine that runs on CPU cores uses (the wasm backends,
    torch-cpu), and the N of peak's N-thread rows. Part of the --resume fingerprint, even unset."""
    return option(None, "worker threads (wasm backends, torch-cpu; peak: its N-thread rows; default: all cores)",
                  "--threads", MEASURING + (PEAK,), fingerprint="always")


def browser_option():
    """--browser: the Chromium a browser backend runs (wasm-chrome, webgpu-chrome)."""
    return option(None, "the Chromium to run (browser backends; default: the system's, or $TINYGPT_BENCH_BROWSER)",
                  "--browser", metavar="PATH")


@dataclass(frozen=True)
class OptionSpec:
    """One declared option, read from its dataclass field."""

    name: str  # the backend constructor's keyword argument
    type: Any  # the value's type (int, bool, str, int | None ...)
    default: Any
    help: str
    flag: str | None
    commands: tuple[str, ...]
    fingerprint: str
    parse: Callable[[str], Any] | None = None
    check: Callable[[Any], None] | None = None
    metavar: str | None = None

    @property
    def key(self) -> str:
        """The option's name in the CLI and the --resume fingerprint: the flag without dashes
        ('--wasm-fma/--no-wasm-fma' -> 'wasm_fma'), else the argument's name."""
        return self.flag.split("/")[0].removeprefix("--").replace("-", "_") if self.flag else self.name


def declared(options_cls: type) -> tuple[OptionSpec, ...]:
    """The OptionSpecs of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(options_cls)
    return tuple(OptionSpec(f.name, hints[f.name], f.default, f.metadata.get("help", ""), f.metadata.get("flag"),
                            f.metadata.get("commands", ()), f.metadata.get("fingerprint", "no"),
                            f.metadata.get("parse"), f.metadata.get("check"), f.metadata.get("metavar"))
                 for f in dataclasses.fields(options_cls))


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that takes none."""


@dataclass(frozen=True)
class BackendSpec:
    """One backend of an engine: how to make it and what it takes."""

    name: str  # the --backend name, e.g. 'wasm-v8'
    cls: str  # 'module:Class', the module relative to the engine's package ('.v8:WasmV8Backend')
    hardware: str  # 'GPU' or 'CPU': what the engine is built for, whatever adapter it ran on
    options: type = NoOptions  # a frozen dataclass of option() fields
    fixed: dict = field(default_factory=dict)  # constructor arguments fixed by the name (dtype, device)
    faults: tuple[str, ...] = ()  # fault kinds it takes (faults.py); 'limit=' stands for limit=BYTES
    native_peer: str | None = None  # the backend a user would otherwise pick on that hardware (webgpu -> torch-cuda)
    label: str = ""  # a few words for tables ('WebGPU on wgpu-native')
    kernel_timing: str | None = None  # how profile() times its kernels (None: it has no profile)
    oracle: bool = False  # the float64 reference every other backend's losses are checked against (one)
    curve_default: bool = False  # measured by `curve` (and walked by `diagnose`) unless --backends says
    # modules curve's fork server imports before it forks this backend's workers (their imports,
    # done once a run): library names, or '.module' relative to the engine's package
    preload: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeakContext:
    """What an engine's peak measurements get from `tinygpt-bench peak`."""

    threads: int  # the N of the N-thread rows (all usable cores unless told)
    adapter: str | None  # the WebGPU adapter choice
    quick: bool  # small sizes and few iterations (tests, software adapters)
    repeats: int  # timings of each measurement (the best is kept)
    machine: dict  # machine columns of every row (CPU model, library versions...; an adapter's)
    emit: Callable[..., None]  # emit(engine, kind, what, fn, threads, device, repeats): one measurement


def _no_explanation(error: str) -> str | None:
    return None


@dataclass(frozen=True)
class Engine:
    """An engine's description: its backends, peak measurements, artifact digests and error texts."""

    name: str  # the folder's name
    summary: str  # one line: what runs and on what
    backends: tuple[BackendSpec, ...]
    # Hooks are "module:function" references, the module relative to the engine's package,
    # imported only when called (resolve()).
    # `tinygpt-bench peak`: peak(ctx: PeakContext) is a generator that sets up (e.g. opens the
    # adapter), yields the machine columns it adds to every row of the run ({} if none), then
    # emits its rows through ctx.emit (each engine's peak.py: ".peak:measure")
    peak: str | None = None
    order: int = 100  # the engine's place in peaks.csv and in the environment record (lower first)
    # its part of the environment record: environment(adapters: bool) -> dict, the runtime it
    # needs and what it can see (wasmtime's features, Node; WebGPU adapters when asked)
    environment: str | None = None
    # the engine of the oracle backend (BackendSpec.oracle): its float64 loss and gradient of one
    # batch, loss_and_grad(preset, params64, batch) -> (loss, grad64), for diagnose's parity stage
    # (the backend contract's gradients() are fp32); engines.oracle_loss_and_grad calls it
    loss_and_grad: str | None = None
    # what the engine runs that is not Python, digested into the --resume fingerprint:
    # {key: (package resource folder, file pattern)}, e.g. {"module_sha256": ("wasm", "*.wasm")}
    artifacts: dict = field(default_factory=dict)
    # a plain sentence on what one of this engine's error texts means and what would fix it, or None
    explain: Callable[[str], str | None] = _no_explanation
    # the fix diagnose's preflight names when a buffer or memory cannot fit under a limit of this engine
    too_big_fix: str = "pick a smaller preset"
    package: str = ""  # the Python package the engine was imported as (set by the registry)

    def resolve(self, ref: str):
        """What a "module:name" reference of this engine names (a backend class, a hook)."""
        module, name = ref.split(":")
        return getattr(importlib.import_module(module, self.package), name)
