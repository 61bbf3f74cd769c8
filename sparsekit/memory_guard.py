"""Stop a long pure-Python step before it exhausts the machine's memory, with one clear error.

Some third-party tracing (torch-pruning's channel-dependency groups on window-attention models such as
tv:swin_t) grows without bound: measured here, 24 GB of anonymous memory after ~12 minutes, then the
kernel's OOM killer ended the process with no message. ``memory_limited`` watches the process's resident
memory from a thread and, past the limit, interrupts the main thread (the step is Python code, so the
interrupt lands between bytecodes) and turns that interrupt into a ``UsageError`` naming the step.

The interrupt is delivered as a simulated SIGUSR2 with a Python handler of its own installed for the
body (``_thread.interrupt_main`` does nothing for a signal without a Python handler, and a process
started in the background by a script inherits SIGINT ignored: relying on Ctrl-C's handler left the
guard silent there). Off the main thread, or without SIGUSR2, it falls back to SIGINT.
"""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sparsekit.errors import UsageError

#: a guarded step may grow the process by this fraction of the memory available when it starts
MAX_GROWTH_FRACTION = 0.6
POLL_S = 0.25


#: the simulated signal that carries the interrupt (its own Python handler during the body)
_SIGNUM = getattr(signal, "SIGUSR2", None)


class _OverLimit(BaseException):
    """Raised in the main thread by the guard's handler (BaseException: not swallowed by ``except Exception``)."""


def _raise_over_limit(signum: int, frame: object) -> None:
    raise _OverLimit


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
    own = _SIGNUM is not None and threading.current_thread() is threading.main_thread()
    previous = signal.signal(_SIGNUM, _raise_over_limit) if own else None

    def watch() -> None:
        while not done.wait(POLL_S):
            if proc.memory_info().rss - start > limit:
                with lock:  # never interrupt once the body has finished
                    if not done.is_set():
                        tripped.set()
                        _thread.interrupt_main(_SIGNUM if own else signal.SIGINT)
                return

    def stopped() -> UsageError:
        return UsageError(f"{what} needs more than {limit / 2**30:.1f} GB of memory and was stopped"
                          + (f"; {hint}" if hint else ""))

    watcher = threading.Thread(target=watch, name="memory-guard", daemon=True)
    watcher.start()
    try:
        try:
            yield
        finally:
            with lock:
                done.set()
            watcher.join()
    except _OverLimit:
        raise stopped() from None
    except KeyboardInterrupt:
        if own or not tripped.is_set():
            raise
        raise stopped() from None
    finally:
        if own:  # None: a handler not set from Python; the default is the closest we can restore
            signal.signal(_SIGNUM, previous if previous is not None else signal.SIG_DFL)
