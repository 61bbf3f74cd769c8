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


def convert_run(run_dir: str | Path, fmt: str, data_dir: str | None = None, finetune_epochs: int = 0,
                **options: Any) -> dict[str, Any]:
    """Convert a run's fine-tuned ticket to ``fmt`` and save it under ``<run>/converted/<fmt>/``.

    Pattern formats (nm, block) change the function: their report also carries the test accuracy
    of the ticket and of the projection (None when the run's dataset is not available) and, with
    ``finetune_epochs``, of the projection fine-tuned with its own mask held (what is saved then).

    Returns:
        {"format", "options", "path", "report"} (also written to format.json).
    """
    from sparsekit.formats.base import get_format
    from sparsekit.progress import step
    from sparsekit.ticket import Ticket

    if finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    ticket = Ticket.load(run_dir)
    form = get_format(fmt, **options)
    with step("building the model"):
        model = ticket.materialize("final")
    example = probe_batch(ticket, data_dir)
    with step(f"converting to {fmt}"):
        converted = form.convert(model, ticket.mask(), example)
    if "pattern" in converted.report:
        _pattern_accuracy(ticket, model, converted, data_dir, finetune_epochs)
    elif finetune_epochs:
        raise UsageError(f"--finetune-epochs applies to nm and block (they change the mask), not {fmt}")
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


def _pattern_accuracy(ticket: Any, model: nn.Module, converted: Any, data_dir: str | None, epochs: int) -> None:
    """Accuracy before/after projection (and after fine-tuning the projection, mask held) into the report."""
    from sparsekit.data import load_dataset
    from sparsekit.errors import DataNotFoundError
    from sparsekit.progress import step
    from sparsekit.train.loop import evaluate, train_epochs

    rep = converted.report
    try:
        data = load_dataset(ticket.data_spec, data_dir)
    except DataNotFoundError as exc:
        if epochs:
            raise
        rep.update(accuracy_before=None, accuracy_after=None, accuracy_note=f"no accuracy: {exc}")
        return
    rep["accuracy_before"] = evaluate(model, data)["accuracy"]
    rep["accuracy_after"] = evaluate(converted.module, data)["accuracy"]
    if epochs:
        # the run's own recipe (optimizer, LR schedule, warm-up, augmentation, ...) over the epochs of
        # its fine-tune stage, as `sparsekit finetune` retrains: schedule from epoch pretrain_epochs on
        record = ticket.record
        tcfg = record.train_config(epochs)
        with step(f"fine-tuning the projection for {epochs} epoch(s)"):
            train_epochs(converted.module, data, tcfg, epochs, mask=converted.mask, seed=record.seed,
                         first_epoch=record.pretrain_epochs, stage="convert-finetune")
        converted.mask.apply(converted.module)
        if record.config.get("bn_recalibrate"):  # as the run's own fine-tune: BN statistics recomputed
            from sparsekit.masking.bn_stats import recalibrate_on_data

            stats = recalibrate_on_data(converted.module, data, record.seed)
            converted.module.load_state_dict(stats, strict=False)
        converted.module.eval()
        rep["finetune_epochs"] = epochs
        rep["accuracy_after_finetune"] = evaluate(converted.module, data)["accuracy"]
        rep["nonzero_density_after_finetune"] = _nonzero_density(converted.module, converted.mask)


def _nonzero_density(module: nn.Module, mask: Any) -> float:
    params = dict(module.named_parameters())
    total = sum(k.numel() for _, k in mask.items())
    return sum(int((params[n].detach() != 0).sum()) for n, _ in mask.items()) / max(1, total)


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
