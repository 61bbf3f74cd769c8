"""Shared CLI plumbing: global flags, error -> exit code mapping, JSON output, logging."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from sparsekit.cli.options import flag_for, parse_kv  # noqa: F401  (parse_kv: re-exported)
from sparsekit.errors import (  # no torch: cli modules import it lazily
    SettingError,
    SparsekitError,
    UsageError,
)

T = TypeVar("T")


class _State:
    debug = False
    quiet = False
    trust_model_code = False


state = _State()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (CliRunner swaps it per invocation)."""

    _sparsekit = True

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def setup_logging() -> None:
    level = logging.WARNING if state.quiet else logging.INFO
    logger = logging.getLogger("sparsekit")
    logger.setLevel(logging.DEBUG if state.debug else level)
    if not any(getattr(h, "_sparsekit", False) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so it unwinds (and cleans up) exactly like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def run(fn: Callable[[], T]) -> T:
    """Call a library function; SparsekitError -> one stderr line + its exit code (1 or 2).

    Ctrl-C exits 130 and SIGTERM 143, each with one line saying how to resume.
    """
    import signal
    import threading

    from sparsekit.progress import use_rich_bars

    setup_logging()
    use_rich_bars(sys.stderr.isatty() and not state.quiet)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return fn()
    except SparsekitError as exc:
        if state.debug:
            traceback.print_exc()
        typer.echo(f"error: {error_text(exc)}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        if state.debug:
            traceback.print_exc()
        what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted (Ctrl-C)", 130)
        typer.echo(f"{what}: nothing half-written; run the same command again to resume", err=True)
        raise typer.Exit(code) from None
    except typer.Exit:
        raise
    except Exception as exc:  # an unexpected bug: still one line unless --debug
        if state.debug:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: internal error {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
        raise typer.Exit(1) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def error_text(exc: SparsekitError) -> str:
    """The message as the CLI prints it: a library error names settings (``sparsity``), the CLI their
    flags (``--sparsity``)."""
    if isinstance(exc, SettingError):
        return exc.render(flag_for)
    return str(exc)


def emit_json(obj: Any, dest: str | None) -> None:
    """Write JSON to a file (atomically) or to stdout with ``-``."""
    if dest is None:
        return
    if dest == "-":
        typer.echo(json.dumps(obj, indent=2, default=str))
        return
    from sparsekit._io import write_json

    path = Path(dest)
    try:
        write_json(path, obj)
    except OSError as exc:
        raise UsageError(f"cannot write --json {path}: {exc.strerror or exc}") from None


def parse_csv(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError(f"{what} must not be empty")
    return items


def parse_ints(value: str, what: str, minimum: int = 1) -> list[int]:
    out = []
    for v in parse_csv(value, what):
        try:
            n = int(v)
        except ValueError:
            raise UsageError(f"{what} must be integers, got {v!r}") from None
        if n < minimum:
            raise UsageError(f"{what} must be >= {minimum}, got {n}")
        out.append(n)
    return out


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
