"""Progress reporting for long loops, decoupled from the terminal.

Library code wraps long loops in ``track(...)``. By default that logs a plain line every
``PLAIN_INTERVAL_S`` seconds (good for CI logs); the CLI installs a rich progress bar when stderr is a
terminal (``use_rich_bars``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("sparsekit")
PLAIN_INTERVAL_S = 10.0

_rich = False


def use_rich_bars(enabled: bool) -> None:
    global _rich
    _rich = enabled


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Iterate ``items`` while reporting progress (rich bar on a TTY, periodic log lines otherwise)."""
    if _rich and log.isEnabledFor(logging.INFO):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        return
    last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= PLAIN_INTERVAL_S:
            log.info("%s: %d/%s", description, i, total if total is not None else "?")
            last = now


#: a step (model build, conversion, export) that runs longer than this gets a progress line
STEP_NOTICE_S = 3.0
#: while an exporter's own output is silenced at the fd level, notices go to this fd (the real stderr)
_notice_fd: int | None = None


def _notice(message: str) -> None:
    if _notice_fd is not None:
        if log.isEnabledFor(logging.INFO):
            import os

            os.write(_notice_fd, (message + "\n").encode())
        return
    log.info("%s", message)


class step:  # noqa: N801 - used as a context manager: ``with step("exporting to ONNX"):``
    """Report a one-shot step only if it is slow: "DESC ... (still running)" after STEP_NOTICE_S, then
    "DESC: done in X s". Quick steps (and quick failures) print nothing."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __enter__(self) -> step:
        import threading

        self._t0 = time.monotonic()
        self._shown = False

        def show() -> None:
            self._shown = True
            _notice(f"{self.description} ...")

        self._timer = threading.Timer(STEP_NOTICE_S, show)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        self._timer.cancel()
        if self._shown and exc_type is None:
            _notice(f"{self.description}: done in {time.monotonic() - self._t0:.1f}s")
