"""``sparsekit prune``: search a ticket, fine-tune it, evaluate it against the dense model."""

from __future__ import annotations

import logging
import math
from typing import Any

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run, set_threads
from sparsekit.cli.options import config_kwargs, generated_command
from sparsekit.errors import UsageError


def parse_sparsity(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise UsageError(f"--sparsity must be a number in [0, 1), got {value!r}") from None
    if not math.isfinite(s) or not 0 <= s < 1:
        raise UsageError(f"--sparsity must be in [0, 1), got {value}")
    return s


def resolve_sparsity(sparsity: str | None, budget: str | None) -> float:
    """--sparsity, or the nominal one of a --budget: 1 - F for params/macs (the search's starting
    density), 0.5 for latency (replaced by the fraction of the dense latency once it is measured)."""
    if (sparsity is None) == (budget is None):
        raise UsageError("give --sparsity S or --budget params=F|macs=F|latency=MS (exactly one)")
    if sparsity is not None:
        return parse_sparsity(sparsity)
    from sparsekit.cost.budget import parse_budget

    b = parse_budget(budget)
    return 0.5 if b.kind == "latency" else 1.0 - b.value


@app.command("prune")
@generated_command  # every option comes from a PruneConfig field's metadata (sparsekit/cli/options.py)
def prune_cmd(**values: Any) -> None:
    """Search a ticket near initialization, fine-tune it with its mask held exactly, evaluate it."""
    from sparsekit.dist import from_environment, shutdown
    from sparsekit.pipeline import PruneConfig, prune

    json_out = values["json_out"]

    def go() -> dict:
        set_threads(values["threads"])
        kwargs = config_kwargs(values)
        kwargs["sparsity"] = resolve_sparsity(values["sparsity"], values["budget"])
        cfg = PruneConfig(**kwargs)
        dist = from_environment(cfg.device)
        try:
            if dist is not None and not dist.is_main:
                logging.getLogger("sparsekit").setLevel(logging.WARNING)
            result = prune(cfg, dist=dist)
        finally:
            shutdown(dist)
        if dist is None or dist.is_main:
            emit_json(result, json_out)
        return {**result, "_main": dist is None or dist.is_main}

    r = run(go)
    if not r.pop("_main"):
        return
    dense_txt = f", dense {r['dense_accuracy']:.4f}" if r.get("dense_accuracy") is not None else ""
    b = r.get("budget") or {}
    if "fraction_achieved" in b:
        target = f"{b['kind']} {b['fraction_achieved']:.4f} of dense, budget {b['fraction_asked']:.4f}"
        if b["kind"] == "latency":
            target = _latency_text(b)
        target = f"weight sparsity {r['sparsity']:.4%}, {target}"
    else:
        target = f"sparsity {r['sparsity']:.4%} (target {r['target_sparsity']:.4%})"
    typer.echo(
        f"{r['method']} ticket: {target}, "
        f"accuracy {r['accuracy']:.4f}{dense_txt}, {r['timings']['ticket_total_s']:.1f}s -> {r['out']}",
        err=json_out == "-",  # stdout carries only the JSON then
    )


def _latency_text(b: dict) -> str:
    """The latency a budgeted ticket reached: the measured ms when the correction loop ran (it measures
    the converted ticket), otherwise the table's estimate, labelled as such."""
    if b.get("measured_ms") is not None:
        return (f"latency {b['measured_ms']:.4g} ms measured (table {b['achieved']:.4g} ms), "
                f"budget {b['asked']:.4g} ms")
    return f"latency {b['achieved']:.4g} ms (table estimate), budget {b['asked']:.4g} ms"

