"""Atomic file writes: write to a temporary name in the same directory, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sparsekit.errors import ArtifactError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename tmp_path onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def guarded_dir(path: Path, *, enabled: bool = True, backup: bool = False) -> Iterator[None]:
    """Nothing half-written at the directory level.

    On a failure inside the block: a directory that did not exist before is removed (an empty one
    the user made is emptied again), and with ``backup`` (the block replaces an existing complete
    result) the previous directory, moved aside first, is put back exactly as it was. An
    interruption (KeyboardInterrupt, SIGTERM) keeps a new directory, so rerunning resumes it; a
    backed-up directory is restored then too. A directory that existed (e.g. a resumable run) is
    otherwise left as the block left it.
    """
    path = Path(path)
    if not enabled:
        yield
        return
    existed = path.exists()
    was_empty = existed and path.is_dir() and not any(path.iterdir())
    saved = None
    if backup and existed:
        saved = path.with_name(f".{path.name}.previous-{os.getpid()}")
        shutil.rmtree(saved, ignore_errors=True)
        os.replace(path, saved)
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        if saved is not None:
            shutil.rmtree(path, ignore_errors=True)
            os.replace(saved, path)
        elif not existed and not interrupted:
            shutil.rmtree(path, ignore_errors=True)
        elif was_empty and not interrupted and path.is_dir():
            for p in path.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        raise
    if saved is not None:
        shutil.rmtree(saved, ignore_errors=True)


@contextlib.contextmanager
def preserved_files(files: list[Path], *, enabled: bool = True) -> Iterator[None]:
    """Restore ``files`` exactly as they were (present or absent) if the block fails or is interrupted.

    Used where a command rewrites a complete result in place (``finetune``): a copy of each file is
    kept under a temporary name next to it and renamed back on failure, removed on success.
    """
    if not enabled:
        yield
        return
    kept: list[tuple[Path, Path | None]] = []
    try:
        for f in map(Path, files):
            if f.is_file():
                copy = f.with_name(f".{f.name}.keep-{os.getpid()}")
                shutil.copy2(f, copy)
                kept.append((f, copy))
            else:
                kept.append((f, None))
        yield
    except BaseException:
        for f, copy in kept:
            if copy is not None:
                os.replace(copy, f)
            else:
                f.unlink(missing_ok=True)
        raise
    for _, copy in kept:
        if copy is not None:
            copy.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write(path, lambda p: p.write_text(text))


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"corrupt JSON in {path}: {exc}") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(clean, str(p), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load safetensors (never a pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for truncated/corrupt headers
        raise ArtifactError(f"corrupt tensor file {path}: {exc}") from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_marked_section(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a markdown file
    (appending the section if absent), leaving everything else as it is. Used by the benchmark
    scripts and the demo to keep their generated numbers in docs/benchmarks.md."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery number here comes with the command that produced it.\n"
    section = f"{start}\n{body.strip(chr(10))}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write(path, lambda p: p.write_text(text))
