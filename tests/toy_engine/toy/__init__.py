"""A toy engine, registered by this folder alone (issue 14's proof): point $TINYGPT_BENCH_ENGINES
at tests/toy_engine and `tinygpt-bench` finds backend 'toy' with its option --toy-label, and
runs it through run, curve, summary and chart like any engine. It is the numpy float64
model (the reference's public functions) stepped by a backend of its own (backend.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tinygpt_bench.engines.description import CURVE, RUN, BackendSpec, Engine, option


@dataclass(frozen=True)
class ToyOptions:
    label: str | None = option(None, "toy engine: a word it writes into its runtime_settings", "--toy-label",
                               (RUN, CURVE), fingerprint="given")


def explain(error: str) -> str | None:
    return "The toy engine refused its input: see its message." if "toy engine" in error.lower() else None


ENGINE = Engine(
    name="toy",
    summary="numpy float64, one folder: the proof that an engine joins by its folder alone",
    backends=(BackendSpec("toy", ".backend:ToyBackend", "CPU", ToyOptions, faults=("nan-grad",), label="toy numpy"),),
    explain=explain,
)
