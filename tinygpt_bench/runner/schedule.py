"""The order of a preset's repeats and the run's budget (hyperfine's scheduler and executor are
apart so; here the schedule says what runs next, repeat.py runs it).

Repeats interleave the backends (repeat 1 of A, of B, then repeat 2 of A, of B...) so that drift
on a shared machine hits every backend alike. A backend that failed is not run again; the
repeats an interrupted run kept are not measured again. Under a budget (a deadline on the host
clock) no repeat is started that its backend's longest repeat so far, with a margin
(Series.repeat_estimate), says would end past it: the schedule stops, and says which repeat it
left unstarted and why."""

from __future__ import annotations

import time
from typing import Iterator

from tinygpt_bench.runner.series import REPEAT_MARGIN, Series


class Schedule:
    def __init__(self, preset: str, backends: list[str], repeats: int, kept: dict[str, int],
                 deadline: float | None = None):
        self.preset, self.backends, self.repeats = preset, backends, repeats
        self.kept = kept  # backend -> repeats already finished (an interrupted run's)
        self.deadline = deadline
        self.stopped = ""  # the repeat the budget left unstarted, and why

    def __call__(self, series: dict[str, Series]) -> Iterator[tuple[int, str]]:
        """(repeat, backend) in order; each backend's series says whether it still runs and how
        long its next repeat may take."""
        for r in range(1, self.repeats + 1):
            for b in self.backends:
                if not series[b].ok or r <= self.kept.get(b, 0):
                    continue
                if not self._fits(r, b, series[b]):
                    return
                yield r, b

    def _fits(self, r: int, b: str, s: Series) -> bool:
        if self.deadline is None:
            return True
        need, left = s.repeat_estimate(), self.deadline - time.perf_counter()
        if need <= left:
            return True
        self.stopped = (f"{self.preset}/{b} repeat {r} not started: its longest repeat took {need / REPEAT_MARGIN:.0f} s, "
                        f"{need:.0f} s with the margin, {max(left, 0):.0f} s of --stop-after were left")
        return False
