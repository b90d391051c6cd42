"""The commands that describe: `presets` (the shapes and their cost) and `env` (the machine)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tinygpt_bench import model, presets
from tinygpt_bench.cli.options import Command, Json, Markdown, console
from tinygpt_bench.units import fmt_bytes

app = typer.Typer(add_completion=False)  # this module's commands; cli/__init__.py adds them to the app

PRESET_COLUMNS = ["preset", "layers", "d_model", "heads", "ctx", "batch", "params", "GFLOP/step", "W+G+Adam",
                  "activations", "total"]
PRESET_NOTE = (
    "W+G+Adam: fp32 weights, gradients and both AdamW moments (16 bytes a parameter). "
    "FLOPs: matrix products only, 2 per multiply-add; causal attention counts only allowed "
    "pairs; backward = 2x forward; step = 3x forward. Bytes: fp32; activations are those saved "
    "for backward, flash-attention style (no T x T matrix)."
)


@app.command("presets", cls=Command)
def presets_cmd(markdown: Markdown = False) -> None:
    """List the presets: shape, exact parameter count, FLOPs and bytes per training step."""
    rows = []
    for name in presets.builtin_names():
        p = presets.load(name)
        b = model.step_bytes(p)
        rows.append([
            p.name, str(p.layers), str(p.d_model), str(p.heads), str(p.ctx), str(p.batch),
            f"{model.param_count(p):,}", f"{model.flops_per_step(p)['total'] / 1e9:.3f}",
            fmt_bytes(b["weights"] + b["grads"] + b["adam"], 1), fmt_bytes(b["activations"], 1), fmt_bytes(b["total"], 1),
        ])
    if markdown:
        print("| " + " | ".join(PRESET_COLUMNS) + " |")
        print("|" + "---|" * len(PRESET_COLUMNS))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print(f"\n{PRESET_NOTE}")
        return
    t = Table(title="tinygpt-bench presets", caption=PRESET_NOTE, caption_justify="left", padding=(0, 1))
    for c in PRESET_COLUMNS:
        t.add_column(c, justify="left" if c == "preset" else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    console.print(t)


@app.command("env", cls=Command)
def env_cmd(as_json: Json = False) -> None:
    """Show the machine: CPU, Python and library versions, WebGPU adapters, wasmtime features."""
    from tinygpt_bench import engines, envinfo

    info = envinfo.collect_all()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(_machine_table(info))
    a = Table(title="WebGPU adapters (backend webgpu: wgpu-native; webgpu-dawn: Dawn)")
    for c in ("implementation", "#", "name", "backend", "type", "software", "driver", "max binding"):
        a.add_column(c)
    for ad in info["adapters"]:
        a.add_row(ad["implementation"], str(ad["index"]), ad["name"], ad["backend"], ad["adapter_type"],
                  "yes" if ad["software"] else "no", ad["driver"], fmt_bytes(ad["max_storage_buffer_binding_size"], 1))
    console.print(a)
    for impl, error in info.get("adapters_errors", {}).items():
        console.print(f"[yellow]WebGPU ({impl}): {error}[/yellow]", highlight=False)
    console.print(f"backends: {', '.join(engines.names())}")


def _machine_table(info: dict) -> Table:
    """env's first table: the CPU, memory, OS, Python, the libraries, the runtimes."""
    from tinygpt_bench import envinfo

    t = Table(title="environment", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("CPU", f"{info['cpu_model']} ({info['cpu_usable_cores']} usable of {info['cpu_logical_cores']} logical cores)")
    if info.get("host_memory_bytes"):
        t.add_row("memory", fmt_bytes(info["host_memory_bytes"], 1))
    t.add_row("OS", info["os"])
    t.add_row("Python", info["python"])
    for lib in envinfo.LIBRARIES:
        t.add_row(lib, info.get(lib) or "not installed")
    t.add_row("tinygpt-bench", info["tinygpt_bench"])
    t.add_row("git commit", f"{info['git_commit']}{' (dirty)' if info.get('git_dirty') else ''} ({info['git_source']})"
              if info["git_commit"] else "none: not run from a git checkout of tinygpt-bench")
    if "wasmtime_features" in info:
        feats = ", ".join(f"{k.removeprefix('wasm_')}={'yes' if v else 'no'}" for k, v in info["wasmtime_features"].items())
        t.add_row("wasmtime", f"{info['wasmtime_version']}: {feats}")
    else:
        t.add_row("wasmtime", info.get("wasmtime_error", "?"))
    if info.get("node_version"):
        t.add_row("Node (wasm-v8)", f"node {info['node_version']}, V8 {info['v8_version']} ({info['node_path']})")
    else:
        t.add_row("Node (wasm-v8)", info.get("node_error", "?"))
    if info.get("browser_version"):
        v8 = f", V8 {info['browser_v8_version']}" if info.get("browser_v8_version") else ""
        t.add_row("Chromium (wasm-chrome)", f"{info['browser_version']}{v8} ({info['browser_path']})"
                  + (f"; {info['browser_error']}" if info.get("browser_error") else ""))
    else:
        t.add_row("Chromium (wasm-chrome)", info.get("browser_error", "?"))
    return t
