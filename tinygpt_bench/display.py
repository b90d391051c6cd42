"""How a curve run shows itself: a live rich display, or plain lines for CI logs."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tinygpt_bench import model
from tinygpt_bench.runner import Reporter
from tinygpt_bench.presets import Preset
from tinygpt_bench.results import Measurement


NOISY = 0.25  # a measurement whose steps' IQR passes this share of their median is called noisy


def measured_line(m: Measurement) -> str:
    name = f"{m.preset}/{m.backend}"
    if m.status != "ok":
        return f"{name}: {m.status.upper()} at {m.stage or '?'}: {m.error or ''}"
    nan = float("nan")
    parts = [f"{m.median_ms:.2f} ms/step (median, IQR {m.q1_ms:.2f}-{m.q3_ms:.2f}, n={m.n_samples})",
             f"cold {m.cold_ms:.1f} ms", f"{m.tokens_per_s:,.0f} tok/s", f"{m.gflop_per_s:.2f} GFLOP/s",
             f"loss {nan if m.first_loss is None else m.first_loss:.4f} -> "
             f"{nan if m.final_loss is None else m.final_loss:.4f}"]
    if m.harness_s is not None:
        parts.append(f"harness {m.harness_s:.2f} s/measurement")
    if m.n_outliers:
        parts.append(f"WARNING {m.n_outliers} outlier steps (kept)")
    if m.median_ms and m.q3_ms is not None and m.q1_ms is not None and (m.q3_ms - m.q1_ms) > NOISY * m.median_ms:
        parts.append(f"WARNING noisy: the steps' IQR is {(m.q3_ms - m.q1_ms) / m.median_ms:.0%} of their median "
                     "(a busy machine?)")
    if m.parity_ok is False:
        parts.append("WARNING loss parity FAILED")
    if m.error:
        parts.append(f"WARNING {m.error}")
    return f"{name}: " + ", ".join(parts)


class PlainReporter(Reporter):
    def __init__(self, console: Console):
        self.console = console

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def preset_start(self, preset: Preset, n_backends: int) -> None:
        self.console.print(f"== {preset.name}: {model.param_count(preset):,} parameters, "
                           f"{model.flops_per_step(preset)['total'] / 1e9:.2f} GFLOP/step", highlight=False)

    def run_progress(self, line: str) -> None:
        self.console.print(f"[{line}]", highlight=False, markup=False)

    def measurement_start(self, preset, backend, repeat, repeats, steps) -> None:
        self.console.print(f"{preset}/{backend} repeat {repeat}/{repeats}", highlight=False)

    def step(self, preset, backend, st) -> None:
        self.console.print(f"  step {st.step:3d} {st.ms:10.2f} ms  loss {st.loss:.6f}", highlight=False)

    def measured(self, m: Measurement) -> None:
        self.console.print(measured_line(m), highlight=False)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)


class LiveReporter(PlainReporter):
    """A progress bar for the measurement under way; finished measurements print above it."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True,
        )
        self.task = None

    def __enter__(self):
        self.progress.start()
        self.run_task = self.progress.add_task("run", total=None, info="starting")
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def run_progress(self, line: str) -> None:  # the whole run, on its own line above the repeat's bar
        self.progress.update(self.run_task, info=line)

    def measurement_start(self, preset, backend, repeat, repeats, steps) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{preset}/{backend} rep {repeat}/{repeats}", total=steps, info="loading")

    def step(self, preset, backend, st) -> None:
        self.progress.update(self.task, advance=1, info=f"step {st.step}: {st.ms:8.2f} ms  loss {st.loss:.4f}")

    def measured(self, m: Measurement) -> None:
        self.progress.console.print(measured_line(m), highlight=False)
