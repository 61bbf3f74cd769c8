"""Convert a run and persist the result as safetensors + JSON; rebuild it without pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit import paths
from sparsekit._io import load_tensors, read_json, save_tensors, write_json
from sparsekit.errors import ArtifactError, UsageError

CONVERTED_SCHEMA_VERSION = 1
#: probe batch used for conversion checks and Torch-Pruning tracing
PROBE_BATCH = 64


def probe_batch(ticket: Any, data_dir: str | None = None, n: int = PROBE_BATCH) -> torch.Tensor:
    """Real test inputs of the run's dataset when available, else seeded noise: (n, C, H, W)."""
    try:
        from sparsekit.data import load_dataset

        x, _ = next(iter(load_dataset(ticket.data_spec, data_dir).batches("test", n)))
        return x
    except UsageError:  # e.g. a --data-dir that does not exist: the user's mistake, not missing data
        raise
    except Exception:  # dead-channel probing and equality checks also work on noise
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, *ticket.spec.in_shape, generator=g)


def convert_run(run_dir: str | Path, fmt: str, data_dir: str | None = None, **options: Any) -> dict[str, Any]:
    """Convert a run's fine-tuned ticket to ``fmt`` and save it under ``<run>/converted/<fmt>/``.

    Returns:
        {"format", "options", "path", "report"} (also written to format.json).
    """
    from sparsekit.formats.base import get_format
    from sparsekit.ticket import Ticket

    ticket = Ticket.load(run_dir)
    form = get_format(fmt, **options)
    model = ticket.materialize("final")
    example = probe_batch(ticket, data_dir)
    converted = form.convert(model, ticket.mask(), example)
    out = paths.converted(Path(run_dir), fmt)
    meta_path = paths.converted_meta(Path(run_dir), fmt)
    meta_path.unlink(missing_ok=True)  # an old format.json must not vouch for new weights
    save_tensors(paths.converted_weights(Path(run_dir), fmt), form.save_state(converted))
    meta = {
        "schema_version": CONVERTED_SCHEMA_VERSION,
        "complete": True,
        "format": fmt,
        "options": form.options,
        "plan": converted.plan,
        "mask_sha256": ticket.mask().sha256(),
        "report": converted.report,
    }
    write_json(meta_path, meta)
    return {"format": fmt, "options": form.options, "path": str(out), "report": converted.report}


def load_converted(run_dir: str | Path, fmt: str, example: torch.Tensor | None = None) -> nn.Module:
    """Rebuild a converted model saved by ``convert_run`` (fresh model + plan + safetensors)."""
    from sparsekit.formats.base import get_format
    from sparsekit.models.registry import build_model
    from sparsekit.ticket import Ticket

    ticket = Ticket.load(run_dir)
    meta = read_json(paths.converted_meta(Path(run_dir), fmt))
    if not meta.get("complete") or meta.get("format") != fmt:
        raise ArtifactError(f"{paths.converted_meta(Path(run_dir), fmt)} is incomplete; rerun sparsekit convert")
    if meta.get("mask_sha256") != ticket.mask().sha256():
        raise ArtifactError(f"converted {fmt} model in {run_dir} is stale (the mask changed); rerun sparsekit convert")
    opts = dict(meta["options"])
    if "block" in opts:
        opts["block"] = tuple(opts["block"])
    form = get_format(fmt, **opts)
    if example is None:
        g = torch.Generator().manual_seed(0)
        example = torch.randn(2, *ticket.spec.in_shape, generator=g)
    model = build_model(ticket.spec, seed=0).eval()
    model = form.rebuild(model, meta["plan"], example)
    state = load_tensors(paths.converted_weights(Path(run_dir), fmt))
    try:
        return form.load_state(model, state, meta["plan"])
    except RuntimeError as exc:
        raise ArtifactError(f"converted weights do not fit the rebuilt {fmt} model: {str(exc).splitlines()[0]}") from None
