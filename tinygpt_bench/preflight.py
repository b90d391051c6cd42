"""The preflight: what a preset needs (weights, gradients, Adam moments, activations; each of an
engine's buffers or memory regions where it can say) against what the machine and the engine
allow (host RAM, the wasm memory maximum, an adapter's buffer and binding limits), before
anything is allocated. `diagnose` walks it as its first stage; `curve` asks it of every
measurement before it starts one (a preset that cannot fit is a failed row naming why). It
sits below both, so the measuring commands do not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinygpt_bench import engines, faults, model
from tinygpt_bench.errors import UserError
from tinygpt_bench.presets import Preset
from tinygpt_bench.units import fmt_bytes


@dataclass
class Stage:
    """One stage of a diagnosis: passed or not, its figure, the error verbatim and what it means."""

    name: str
    ok: bool
    figure: str = ""
    error: str = ""
    meaning: str = ""
    detail: dict = field(default_factory=dict)


def meaning_of(stage: str, error: str, backend: str | None = None) -> str:
    """A plain sentence on what an error means and what would fix it: the engine's own
    explanation of its error texts (engines/<name>/__init__.py, explain) first, then the
    harness's (non-finite numbers, the time budget)."""
    if backend is not None:
        meaning = engines.spec(backend)[0].explain(error)
    else:
        meaning = engines.explain(error)
    if meaning:
        return meaning
    e = error.lower()
    if "not finite" in e or "nan" in e or "inf" in e:
        return ("The numbers went non-finite: compare the parity stage on the shrunk preset; a kernel that "
                "passes parity but overflows at full size points at an accumulation or a softmax without max.")
    if "time budget" in e or "timeout" in e:
        return "The step took longer than the budget: raise --timeout or measure a smaller preset."
    return "The engine raised this error at the stage named; the message above is its own."


def host_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def preflight(preset: Preset, backend: str, options: dict) -> Stage:
    need = model.step_bytes(preset)
    rows = [{"name": "weights+grads+adam+activations (host copy of the model state)", "bytes": need["total"],
             "limit": host_available(), "limit_name": "host RAM available"}]
    figure = (f"needs {fmt_bytes(need['total'])} (weights {fmt_bytes(need['weights'])}, grads {fmt_bytes(need['grads'])}, "
              f"Adam {fmt_bytes(need['adam'])}, activations {fmt_bytes(need['activations'])})")
    try:
        rows += engines.plan(backend, preset, options, faults.for_backend(backend, preset.name))
    except Exception as e:  # the engine's own refusal (no adapter, unsupported shape) is a preflight failure
        err = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        return Stage("preflight", False, figure, err, meaning_of("preflight", err, backend), {"buffers": rows})
    over = sorted((r for r in rows if r.get("limit") is not None and r["bytes"] > r["limit"]),
                  key=lambda r: -r["bytes"] / r["limit"])
    detail = {"buffers": rows, "step_bytes": need}
    if over:
        worst = over[0]
        err = "; ".join(f"{r['name']}: {fmt_bytes(r['bytes'])} ({r['bytes']:,} bytes) > {r['limit_name']} "
                        f"{fmt_bytes(r['limit'])} ({r['limit']:,} bytes), short by {fmt_bytes(r['bytes'] - r['limit'])}"
                        for r in over[:3])
        if len(over) > 3:
            err += f"; and {len(over) - 3} more over their limits: {', '.join(r['name'] for r in over[3:])}"
        parts = sorted((r for r in rows if r.get("limit") is None), key=lambda r: -r["bytes"])[:3]
        if parts:
            err += "; largest parts: " + ", ".join(f"{r['name']} {fmt_bytes(r['bytes'])}" for r in parts)
        fix = engines.spec(backend)[0].too_big_fix
        injected = " The limit was capped by an injected fault (TINYGPT_BENCH_FAULT)." if "fault" in worst["limit_name"] else ""
        return Stage("preflight", False, figure, err,
                     f"{worst['name']} cannot fit under {worst['limit_name']}; nothing was allocated. "
                     f"To fix: {fix}.{injected}", detail)
    return Stage("preflight", True, figure, detail=detail)
