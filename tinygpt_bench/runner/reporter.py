"""What a measurement tells the display as it goes; the CLI supplies a live or a plain one
(display.py). Every method does nothing here."""

from __future__ import annotations


class Reporter:
    def run_progress(self, line: str) -> None: ...  # the whole run: repeat i of N, elapsed, time left (eta.py)
    def preset_start(self, preset, n_backends: int) -> None: ...
    def measurement_start(self, preset: str, backend: str, repeat: int, repeats: int, steps: int) -> None: ...
    def step(self, preset: str, backend: str, st) -> None: ...  # a protocol.StepTime
    def measured(self, m) -> None: ...  # a results.Measurement
    def note(self, text: str) -> None: ...
