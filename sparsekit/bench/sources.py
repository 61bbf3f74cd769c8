"""What ``sparsekit bench`` measures: inputs (run dirs, .onnx files) resolved to model variants."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sparsekit.errors import ArtifactError, UsageError


@dataclass(frozen=True)
class Source:
    """One model variant to measure.

    Attributes:
        label: short unique name for tables.
        kind: "run" (rebuilt from a run directory) or "onnx" (a file).
        path: run directory or .onnx file.
        variant: "ticket" or "dense".
        format: "masked" or "structured".
        pair_key: identifies the run, so a ticket pairs with its dense reference.
        sparsity: fraction of prunable weights that are zero (0 for dense).
        data: dataset spec of the run (None for foreign ONNX files).
        in_shape: (C, H, W) when known.
        fixed_batch: the batch size an ONNX file was exported for (``export --static-batch``), else None.
        budget: a ticket's ``--budget`` as its run recorded it (asked, achieved MACs/ms), else None.
    """

    label: str
    kind: str
    path: str
    variant: str
    format: str
    pair_key: str
    sparsity: float
    data: str | None
    in_shape: tuple[int, ...] | None
    fixed_batch: int | None = None
    budget: dict | None = None


def resolve(inputs: list[str], formats: tuple[str, ...] = ("masked",), dense: bool = True) -> list[Source]:
    """Turn CLI inputs into sources; a run dir yields its ticket (per format) and its dense reference."""
    from sparsekit.ticket import Ticket

    out: list[Source] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            t = Ticket.load(p)
            key = str(p.resolve())
            spec = t.spec
            for fmt in formats:
                label = f"{p.name}/ticket" + ("" if fmt == "masked" else f"-{fmt}")
                sparsity = t.record.sparsity
                out.append(Source(label, "run", str(p), "ticket", fmt, key,
                                  t.mask().sparsity if sparsity is None else sparsity,
                                  t.data_spec, spec.in_shape, budget=t.record.measured_budget()))
            if dense:
                if not t.has_dense():
                    raise ArtifactError(f"run {p} has no dense reference; pass --no-dense to bench the ticket alone")
                out.append(Source(f"{p.name}/dense", "run", str(p), "dense", "masked", key, 0.0, t.data_spec, spec.in_shape))
        elif p.suffix == ".onnx" or p.is_file():
            out.append(_onnx_source(p))
        else:
            raise ArtifactError(f"not found: {p} (give run directories or .onnx files)")
    labels = [s.label for s in out]
    dupes = {lab for lab in labels if labels.count(lab) > 1}
    if dupes:
        out = [Source(f"{s.label}@{i}" if s.label in dupes else s.label, *list(s.__dict__.values())[1:])
               for i, s in enumerate(out)]
    return out


def _onnx_source(p: Path) -> Source:
    import onnx

    from sparsekit.export.onnx_export import read_metadata

    if not p.is_file():
        raise ArtifactError(f"ONNX file not found: {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"corrupt ONNX file {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not proto.graph.node:
        raise ArtifactError(f"corrupt ONNX file {p}: empty graph")
    meta = read_metadata(proto)
    spec = json.loads(meta["model"]) if "model" in meta else None
    variant = meta.get("variant", "ticket")
    if variant not in ("ticket", "dense"):
        raise UsageError(f"{p}: unknown sparsekit.variant {variant!r}")
    return Source(
        label=p.name, kind="onnx", path=str(p), variant=variant, format=meta.get("format", "masked"),
        pair_key=meta.get("run_dir", str(p.resolve())), sparsity=float(meta.get("sparsity", "nan")),
        data=meta.get("data"), in_shape=tuple(spec["in_shape"]) if spec else _graph_in_shape(proto),
        fixed_batch=_graph_batch(proto),
    )


def _graph_batch(proto) -> int | None:  # noqa: ANN001
    """The first input's batch dimension when the file fixes it."""
    init = {i.name for i in proto.graph.initializer}
    for vi in proto.graph.input:
        if vi.name not in init:
            dims = vi.type.tensor_type.shape.dim
            return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return None


def _graph_in_shape(proto) -> tuple[int, ...] | None:  # noqa: ANN001
    """(C, H, W) of a foreign model's first input when every dimension after the batch is fixed."""
    init = {i.name for i in proto.graph.initializer}
    for vi in proto.graph.input:
        if vi.name in init:
            continue
        dims = vi.type.tensor_type.shape.dim[1:]
        if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            return tuple(d.dim_value for d in dims)
        return None
    return None
