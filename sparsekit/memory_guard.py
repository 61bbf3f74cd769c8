"""Stop a long pure-Python step before it exhausts the machine's memory, with one clear error.

Some third-party tracing (torch-pruning's channel-dependency groups on window-attention models such as
tv:swin_t) grows without bound: measured here, 24 GB of anonymous memory after ~12 minutes, then the
kernel's OOM killer ended the process with no message. ``memory_limited`` watches the process's resident
memory from a thread and, past the limit, interrupts the main thread (the step is Python code, so the
interrupt lands between bytecodes) and turns that interrupt into a ``UsageError`` naming the step.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sparsekit.errors import UsageError

#: a guarded step may grow the process by this fraction of the memory available when it starts
MAX_GROWTH_FRACTION = 0.6
POLL_S = 0.25


@contextmanager
def memory_limited(what: str, hint: str = "", limit_bytes: int | None = None) -> Iterator[None]:
    """Run the body; if the process's RSS grows by more than ``limit_bytes`` (default: MAX_GROWTH_FRACTION
    of the available memory) raise ``UsageError("WHAT needs more than X GB of memory ...; HINT")``.
    A real Ctrl-C inside the body still raises KeyboardInterrupt."""
    import psutil

    proc = psutil.Process()
    start = proc.memory_info().rss
    limit = limit_bytes if limit_bytes is not None else int(psutil.virtual_memory().available * MAX_GROWTH_FRACTION)
    lock, done, tripped = threading.Lock(), threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(POLL_S):
            if proc.memory_info().rss - start > limit:
                with lock:  # never interrupt once the body has finished
                    if not done.is_set():
                        tripped.set()
                        _thread.interrupt_main()
                return

    watcher = threading.Thread(target=watch, name="memory-guard", daemon=True)
    watcher.start()
    try:
        try:
            yield
        finally:
            with lock:
                done.set()
            watcher.join()
    except KeyboardInterrupt:
        if not tripped.is_set():
            raise
        raise UsageError(f"{what} needs more than {limit / 2**30:.1f} GB of memory and was stopped"
                         + (f"; {hint}" if hint else "")) from None
