"""Progress lines of the learned-mask searches (cts, gates, edge-popup).

A search of thousands of steps on a big model runs for minutes to hours; the user sees a line at
least every ``INTERVAL_S`` seconds of work with the step, the search's view of the budget (expected
density or cost), the objective and an estimate of the time left. Lines go through the search
context's ``progress`` callback (the pipeline's logger, as for the training loop's lines of
sparsekit.progress); library code never prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: seconds of search between two progress lines
INTERVAL_S = 5.0


def format_seconds(s: float) -> str:
    s = max(0, round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class SearchProgress:
    """Call ``update(step, fields)`` after every step; a line is reported when ``INTERVAL_S`` seconds
    have passed since the last one (``fields`` is a callable so the diagnostics are only computed
    then). Time left is extrapolated from the steps run by this process (a resumed search starts
    counting at the step it resumed from)."""

    def __init__(self, method: str, total: int, report: Callable[[str], None],
                 interval: float | None = None) -> None:
        self.method, self.total, self.report = method, total, report
        self.interval = INTERVAL_S if interval is None else interval
        self._t0 = self._last = time.monotonic()
        self._first: int | None = None
        self.lines = 0

    def update(self, step: int, fields: Callable[[], dict[str, Any]]) -> None:
        now = time.monotonic()
        if self._first is None:  # the first step of this process (after a resume: the resumed step)
            self._first = step - 1
        if now - self._last < self.interval:
            return
        self._last = now
        done = step - self._first
        left = (now - self._t0) / max(done, 1) * (self.total - step)
        parts = [f"{k} {_fmt(v)}" for k, v in fields().items()]
        pct = 100.0 * step / max(self.total, 1)
        self.report(f"{self.method} search step {step}/{self.total} ({pct:.0f}%): "
                    + ", ".join(parts) + f", {format_seconds(left)} left")
        self.lines += 1


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
