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
