"""A run's settings: typed, immutable, and checked once, where they are made (Settings.__post_init__),
so that nothing below the command line checks them again. Each refusal is one line naming the
flag and a value that works (errors.UserError: exit 2)."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tinygpt_bench import engines, faults, protocol
from tinygpt_bench.engines.base import DEFAULT_LR
from tinygpt_bench.errors import UserError, unknown
from tinygpt_bench.presets import Preset

REFERENCE_MAX_GFLOP = 30.0  # numpy float64 reference runs presets up to this many GFLOP a step


@dataclass(frozen=True)
class Settings:
    presets: tuple[Preset, ...]
    backends: tuple[str, ...]
    steps: int = protocol.DEFAULT_STEPS
    repeats: int = 3
    timeout_s: float | None = None  # per measurement: past it, the repeat is killed ('timeout')
    corpus: str = "synthetic"
    seed: int = protocol.DEFAULT_SEED
    lr: float = DEFAULT_LR
    out: Path = Path("results")
    resume: bool = False
    reference_max_gflop: float = REFERENCE_MAX_GFLOP
    # the run's own time budget (s): no repeat is started that its backend's repeats so far say
    # would end past it (Schedule); what finished, repeats included, is kept for --resume
    stop_after_s: float | None = None
    # the engines' options (threads, adapter, relaxed_simd...: engines/<name>/__init__.py), those
    # given only; each backend gets those it declares (option_for)
    options: MappingProxyType = field(default_factory=dict)

    def __post_init__(self):
        # a name given twice is measured once
        object.__setattr__(self, "backends", tuple(dict.fromkeys(self.backends)))
        object.__setattr__(self, "presets", tuple({p.name: p for p in self.presets}.values()))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "out", Path(self.out))
        check(self)

    def at(self, out: Path) -> "Settings":
        """The same settings writing into `out` (a folder the command chose once the settings were
        checked: nothing is created for settings that are refused)."""
        c = copy.copy(self)
        object.__setattr__(c, "out", Path(out))
        return c

    def options_for(self, backend: str) -> dict:
        """The engine options `backend` declares, of those given."""
        return engines.select(backend, dict(self.options))


def check(s: Settings) -> None:
    protocol.check_steps(s.steps)
    if s.repeats < 1:
        raise UserError(f"--repeats {s.repeats} is not a positive number; use --repeats 3")
    check_seed(s.seed)
    check_threads(s.options.get("threads"))
    check_seconds("--timeout", s.timeout_s, 600)
    check_seconds("--stop-after", s.stop_after_s, 540)
    if not (math.isfinite(s.lr) and s.lr > 0):
        raise UserError(f"--lr {s.lr} is not a positive finite learning rate; e.g. --lr 3e-4")
    if not s.backends:
        raise UserError("--backends names no backend; give names such as --backends wasm,reference")
    for b in s.backends:
        engines.spec(b)  # an unknown name raises the error naming the choices
    check_engine_options(list(s.backends), s.options)
    check_faults()


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed} is not a seed; give a whole number from 0 to 2**63-1, e.g. --seed 0")


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} is not a positive number of threads; leave it out for all cores")


def check_seconds(flag: str, value: float | None, example: int) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} {value} is not a positive number of seconds; e.g. {flag} {example}")


def check_faults() -> None:
    """A malformed TINYGPT_BENCH_FAULT is refused before anything is measured."""
    for backend, _, _ in faults.parse(os.environ.get(faults.ENV)):
        if backend not in engines.names():
            raise UserError(f"{faults.ENV}: {unknown('backend', backend, engines.names())}")


def check_engine_options(backend_names: list[str], options) -> None:
    """Every given engine option must be taken by a chosen backend: one line naming it otherwise."""
    for name in options:
        if not any(o.name == name for b in backend_names for o in engines.options_of(b)):
            takers = [b for b in engines.names() if any(o.name == name for o in engines.options_of(b))]
            flag = next(o.flag for o in engines.options_of(takers[0]) if o.name == name).split("/")[0]
            raise UserError(f"{flag} is not an option of {', '.join(backend_names)}; it is one of "
                            f"{', '.join(takers)}: leave it out or choose one of those backends")
