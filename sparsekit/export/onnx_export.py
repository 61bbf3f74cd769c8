"""Export a run (ticket or dense reference, masked-dense or structured) to one verified ONNX file.

The exporter first tries torch's TorchScript exporter (``dynamo=False``: ~0.1 s, opset 17) and falls
back to the dynamo exporter (~3 s) if tracing fails. The file is written under a temporary name,
verified (``verify.verify_export``) and only then renamed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit.errors import ArtifactError, UsageError, VerificationError

log = logging.getLogger("sparsekit")

#: ONNX operator set written (>= 17: LayerNormalization etc. are standard ops).
ONNX_OPSET = 17
#: IR version stamped explicitly: onnx 1.23 writes 14 by default, onnxruntime 1.31 reads <= 13.
#: IR 8 is the minimum for opset 17; 10 is what torch's dynamo exporter writes.
ONNX_IR_VERSION = 10
#: graph input / output names (the batch axis of both is dynamic, named "batch")
INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: models above this size would need external data; sparsekit writes single files only
MAX_SINGLE_FILE_BYTES = 2_000_000_000
#: key prefix of sparsekit's entries in ONNX metadata_props
META_PREFIX = "sparsekit."
EXPORT_FORMATS = ("masked", "structured")


@dataclass
class ExportResult:
    """What ``export_run`` wrote and how it was verified."""

    path: str
    variant: str  # "ticket" or "dense"
    format: str  # "masked" or "structured"
    exporter: str  # "torchscript" or "dynamo"
    file_bytes: int
    metadata: dict[str, str]
    verification: dict[str, Any]
    sparse_initializers: dict[str, Any] | None = None
    structured: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    dense: bool = False,
    fmt: str = "masked",
    sparse_initializers: bool = False,
    data_dir: str | None = None,
    static_batch: int | None = None,
) -> ExportResult:
    """Export a run directory to a verified single-file ONNX model.

    Args:
        run_dir: a complete sparsekit run.
        out: the ``.onnx`` file to write (replaced atomically).
        dense: export the run's dense reference instead of the fine-tuned ticket.
        fmt: "masked" (dense weights with exact zeros) or "structured" (empty channels removed).
        sparse_initializers: store sparse weights as ONNX sparse initializers (smaller file only).
        data_dir: where the run's dataset lives (verification uses real test inputs).
        static_batch: write a fixed batch dimension of this size instead of a dynamic one (for
            runtimes that refuse dynamic shapes); verified at that batch size.

    Raises:
        UsageError: bad option combination or unwritable output.
        ArtifactError: missing/corrupt run.
        VerificationError: the ONNX model does not match torch (nothing is written).

    Example:
        >>> export_run("runs/lenet", "lenet.onnx")  # doctest: +SKIP
    """
    from sparsekit.progress import step
    from sparsekit.ticket import Ticket

    _check_options(dense, fmt, static_batch)
    out = Path(out)
    _check_out(out)
    ticket = Ticket.load(run_dir)
    if dense and not ticket.has_dense():
        raise ArtifactError(f"run {run_dir} has no dense reference (it was pruned with --no-dense)")
    variant = "dense" if dense else "ticket"
    model, mask, structured_info = _build_model(ticket, dense, fmt, data_dir)
    meta = _metadata(ticket, variant, fmt, mask)
    meta[f"{META_PREFIX}batch"] = str(static_batch) if static_batch else "dynamic"
    in_shape = ticket.spec.in_shape
    with step("exporting to ONNX"):
        proto, exporter = to_onnx_proto(model, in_shape, static_batch=static_batch)
    proto.ir_version = ONNX_IR_VERSION
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    sparse_info = None
    notes: list[str] = []
    if sparse_initializers:
        from sparsekit.export.sparse_init import to_sparse_initializers

        sparse_info = to_sparse_initializers(proto)
        notes.append(
            "weights stored as ONNX sparse initializers: the file is smaller, but ONNX Runtime "
            "densifies them at load (same speed, more load memory)"
        )
    data = proto.SerializeToString()
    if len(data) > MAX_SINGLE_FILE_BYTES:
        raise UsageError(f"model is {len(data)} bytes; ONNX single files must stay < 2 GB")
    verification = _write_verified(out, data, model, ticket, mask, data_dir, static_batch)
    if verification.get("verified") != "passed":
        notes.append(verification["verified_note"])
    if fmt == "masked" and not dense and not sparse_initializers:
        notes.append("masked-dense ONNX runs at dense speed; use --format structured to remove empty channels")
    return ExportResult(
        path=str(out), variant=variant, format=fmt, exporter=exporter, file_bytes=out.stat().st_size,
        metadata=meta, verification=verification, sparse_initializers=sparse_info,
        structured=structured_info, notes=notes,
    )


def _check_options(dense: bool, fmt: str, static_batch: int | None) -> None:
    """Reject bad option combinations before anything is loaded."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if dense and fmt != "masked":
        raise UsageError("--dense exports the dense reference; it has no empty channels (drop --format)")
    if static_batch is not None and static_batch < 1:
        raise UsageError(f"--static-batch must be >= 1, got {static_batch}")


def _build_model(ticket: Any, dense: bool, fmt: str, data_dir: str | None) -> tuple[nn.Module, Any, Any]:
    """The module to export (in eval mode), its mask (None for the dense reference) and, for the
    structured format, the conversion report."""
    from sparsekit.progress import step

    with step("building the model"):
        model = ticket.materialize("dense" if dense else "final")
    mask = None if dense else ticket.mask()
    structured_info = None
    if fmt == "structured":
        from sparsekit.formats import get_format

        with step("converting to structured"):
            converted = get_format("structured").convert(model, mask, _probe_input(ticket, data_dir))
        model, mask, structured_info = converted.module, converted.mask, converted.report
    model.eval()
    return model, mask, structured_info


def _write_verified(out: Path, data: bytes, model: nn.Module, ticket: Any, mask: Any,
                    data_dir: str | None, static_batch: int | None) -> dict[str, Any]:
    """Write ``data`` under a temporary name, verify it against ``model``, then rename it to ``out``
    (a failed verification or write leaves nothing behind); returns the verification report."""
    from sparsekit.export.verify import verify_export
    from sparsekit.progress import step

    in_shape = ticket.spec.in_shape
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)

        def reexport(m: nn.Module) -> Any:
            p = to_onnx_proto(m, in_shape, static_batch=static_batch)[0]
            p.ir_version = ONNX_IR_VERSION
            return p

        with step("verifying the ONNX file"):
            verification = verify_export(tmp, model, ticket, mask, data_dir=data_dir, static_batch=static_batch,
                                         reexport=reexport)
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return verification


@contextlib.contextmanager
def silenced_output() -> Iterator[None]:
    """Keep an exporter's own chatter off the terminal: Python-level stdout/stderr AND the file
    descriptors 1 and 2 (C++ code and some exporters write there directly; torch.onnx.export of an
    attention model prints ~1,000 lines). What it wrote is logged at debug level. Progress notices
    still reach the real stderr (``sparsekit.progress``)."""
    from sparsekit import progress

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
        except OSError:  # no usable fds (embedded interpreters): Python-level silencing only
            pass
        previous_fd = progress._notice_fd
        progress._notice_fd = dict(saved).get(2, previous_fd)
        py_out, py_err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
                yield
        finally:
            with contextlib.suppress(Exception):
                import ctypes

                ctypes.CDLL(None).fflush(None)  # C stdio buffers into the sink before restoring
            for fd, dup in saved:
                os.dup2(dup, fd)
                os.close(dup)
            progress._notice_fd = previous_fd
            sink.seek(0)
            chatter = sink.read().decode(errors="replace") + py_out.getvalue() + py_err.getvalue()
            if chatter.strip():
                log.debug("exporter output (%d lines, silenced):\n%s", chatter.count("\n"), chatter[-4000:])


def to_onnx_proto(model: nn.Module, in_shape: tuple[int, ...], static_batch: int | None = None) -> tuple[Any, str]:
    """Export a module to an in-memory ONNX ModelProto with a dynamic batch axis (or a fixed one of
    ``static_batch``). The exporters' own output is silenced (``silenced_output``).

    Returns:
        (ModelProto, exporter name).
    """
    import onnx

    # (B, C, H, W); B=2 so nothing specializes to batch 1 when the batch axis is dynamic
    example = torch.zeros(static_batch or 2, *in_shape)
    dynamic = static_batch is None
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings(), silenced_output(), torch.no_grad():
            # the TorchScript exporter is deprecated in torch >= 2.9 but 30x faster and still correct
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None,
                do_constant_folding=True,
            )
        return onnx.load_from_string(buf.getvalue()), "torchscript"
    except Exception as exc:  # tracing failures differ by model; dynamo handles more
        log.debug("TorchScript export failed (%s); trying the dynamo exporter", exc)
    try:
        with warnings.catch_warnings(), silenced_output(), torch.no_grad():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=max(ONNX_OPSET, 18),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic else None, external_data=False,
            )
        return prog.model_proto, "dynamo"
    except Exception as exc:
        raise VerificationError(f"ONNX export failed with both exporters: {type(exc).__name__}: {exc}") from None


def _metadata(ticket: Any, variant: str, fmt: str, mask: Any) -> dict[str, str]:
    from sparsekit import __version__

    if variant == "dense":
        sparsity = 0.0
        sha = ""
    else:
        record = ticket.record
        sparsity = record.sparsity
        if sparsity is None:
            sparsity = mask.sparsity if mask is not None else 0.0
        sha = record.mask_sha256 or ticket.mask().sha256()
    return {
        f"{META_PREFIX}version": __version__,
        f"{META_PREFIX}run_dir": str(Path(ticket.run_dir).resolve()),
        f"{META_PREFIX}variant": variant,
        f"{META_PREFIX}format": fmt,
        f"{META_PREFIX}model": json.dumps(ticket.spec.to_dict()),
        f"{META_PREFIX}data": ticket.data_spec,
        f"{META_PREFIX}sparsity": repr(sparsity),
        f"{META_PREFIX}mask_sha256": sha,
    }


def read_metadata(proto: Any) -> dict[str, str]:
    """sparsekit's metadata_props of an ONNX model, without the prefix ({} for foreign files)."""
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def _probe_input(ticket: Any, data_dir: str | None, n: int = 64) -> torch.Tensor:
    """Real test inputs when the dataset is available (else seeded noise): (n, C, H, W)."""
    from sparsekit.export.verify import real_batches

    try:
        return next(iter(real_batches(ticket.data_spec, data_dir, (n,))))
    except UsageError:  # e.g. a --data-dir that does not exist
        raise
    except Exception:  # the converter's dead-channel probe also works on noise
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, *ticket.spec.in_shape, generator=g)


def _check_out(out: Path) -> None:
    if out.suffix != ".onnx":
        raise UsageError(f"--out must end with .onnx, got {out}")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write --out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write --out {out}: directory {parent} is not writable")
