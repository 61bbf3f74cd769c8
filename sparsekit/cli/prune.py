"""``sparsekit prune``: search a ticket, fine-tune it, evaluate it against the dense model."""

from __future__ import annotations

import logging
import math
from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, parse_kv, run, set_threads
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
    from sparsekit.budget import parse_budget

    b = parse_budget(budget)
    return 0.5 if b.kind == "latency" else 1.0 - b.value


@app.command("prune")
def prune_cmd(
    model: Annotated[str, typer.Option(help="registered model, tv:NAME, pkg.mod:factory or file.py:factory")],
    data: Annotated[str, typer.Option(help="fashion-mnist, mnist, cifar10, imagefolder:PATH, synthetic")],
    method: Annotated[str, typer.Option(help="search method (sparsekit list methods)")],
    out: Annotated[str, typer.Option(help="run directory to write")],
    sparsity: Annotated[str | None, typer.Option(help="fraction of prunable weights (channels with --granularity channel) removed, 0 <= s < 1; or give --budget")] = None,
    budget: Annotated[str | None, typer.Option(help="params=F (fraction of weights kept), macs=F (fraction of the dense MACs kept) or latency=MS; channel granularity for macs/latency")] = None,
    budget_runtime: Annotated[str, typer.Option(help="runtime whose measured per-layer latency a latency budget uses")] = "ort-cpu",
    budget_batch: Annotated[int, typer.Option(help="batch size of a latency budget")] = 1,
    budget_threads: Annotated[int, typer.Option(help="threads of a latency budget")] = 1,
    seed: Annotated[int, typer.Option(help="seed for init, data order and search")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    pretrain_epochs: Annotated[int, typer.Option(help="dense epochs before the search (rewind point K)")] = 1,
    finetune_epochs: Annotated[int | None, typer.Option(help="ticket training epochs [default: 3; 0 for gates/edge-popup]")] = None,
    search_epochs: Annotated[int | None, typer.Option(help="epochs of a learned-mask search (cts, gates, edge-popup) [default: cts: the training budget (pretrain + fine-tune epochs, the reference's rule) but at least 2,000 steps (the reference's shortest search) and at least GradBalance's 4/ema = 400 steps, in whole epochs; gates: 10 epochs, at least 400 steps; edge-popup: 10 epochs]")] = None,
    search_steps: Annotated[int | None, typer.Option(help="steps of a learned-mask search, instead of --search-epochs")] = None,
    batch_size: Annotated[int, typer.Option(help="training batch size")] = 128,
    lr: Annotated[float, typer.Option(help="SGD learning rate")] = 0.1,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay")] = 1e-4,
    schedule: Annotated[str, typer.Option(help="LR schedule over pretrain + fine-tune epochs: cosine, step (x0.1 at 50%/75%), constant")] = "cosine",
    warmup_epochs: Annotated[float, typer.Option(help="linear LR warm-up epochs")] = 0.0,
    augment: Annotated[str, typer.Option(help="auto (crop+flip for 3-channel images >= 32x32, else none), none, crop-flip")] = "auto",
    grad_clip: Annotated[float, typer.Option(help="max global gradient norm (0 = off)")] = 0.0,
    label_smoothing: Annotated[float, typer.Option(help="cross-entropy label smoothing in [0, 1)")] = 0.0,
    data_dir: Annotated[str | None, typer.Option(help="directory holding the dataset files")] = None,
    download: Annotated[bool, typer.Option("--download/--no-download", help="allow torchvision downloads")] = False,
    layerwise: Annotated[bool, typer.Option("--layerwise/--global", help="per-layer budgets instead of one global ranking")] = False,
    granularity: Annotated[str | None, typer.Option(help="weight or channel (whole output channels) [default: weight; channel for *-channel and tp-* methods]")] = None,
    channel_multiple: Annotated[int, typer.Option(help="channel granularity with --layerwise or a --budget: round kept channels per coupling family to a multiple of N (8 suits CPU kernels)")] = 1,
    include: Annotated[list[str] | None, typer.Option(help="FQN pattern of prunable weights (repeatable)")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="FQN pattern left dense (repeatable)")] = None,
    weight_init: Annotated[str, typer.Option(help="default, kaiming-normal, signed-kaiming-constant, kaiming-uniform (U(+-sqrt(6/fan_in))), uniform (U(-1, 1), unscaled; before 2026-12-03 an alias of kaiming-uniform)")] = "default",
    objective: Annotated[str | None, typer.Option(help="cts objective: kl, ce, fkl, msefeature")] = None,
    balance: Annotated[str | None, typer.Option(help="cts sparsity control: gradbalance or lagrange")] = None,
    relaxation: Annotated[str | None, typer.Option(help="gates relaxation: hard-concrete or gaussian")] = None,
    weight_scale: Annotated[str | None, typer.Option(help="strong tickets (gates, edge-popup): density (frozen weights x 1/sqrt(layer density)) or none [default: density for gates, none for edge-popup]")] = None,
    opt: Annotated[list[str] | None, typer.Option(help="method option KEY=VALUE (repeatable; README lists them). gates: objective=project (default: expected density held at the target) | gradbalance (one-sided, the CTS rule) | l0; two_sided=true makes gradbalance push up below the target too, but it oscillates (density 2.3 % -> 93.7 % -> 3.4 % in a 95 % search); bn_affine=true keeps BN scale/shift (default: non-affine BN for strong tickets)")] = None,
    dense: Annotated[bool, typer.Option("--dense/--no-dense", help="also train the dense reference with the same budget")] = True,
    force: Annotated[bool, typer.Option("--force", help="redo completed stages of an existing run")] = False,
    allow_layer_collapse: Annotated[bool, typer.Option("--allow-layer-collapse", help="keep a mask that leaves a prunable layer with 0 weights (else exit 1)")] = False,
    eval_limit: Annotated[int | None, typer.Option(help="evaluate on the first N test samples only (quick looks)")] = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes decoding image-folder samples (0 = main process)")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch [default: torch's choice]")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write the result as JSON to PATH (- for stdout)")] = None,
) -> None:
    """Search a ticket near initialization, fine-tune it with its mask held exactly, evaluate it."""
    from sparsekit.dist import from_environment, shutdown
    from sparsekit.pipeline import PruneConfig, prune

    def go() -> dict:
        set_threads(threads)
        options = parse_kv(opt, "--opt")
        for key, value in (("objective", objective), ("balance", balance), ("relaxation", relaxation),
                           ("weight_scale", weight_scale)):
            if value is not None:
                options[key] = value
        cfg = PruneConfig(
            model=model, data=data, method=method, sparsity=resolve_sparsity(sparsity, budget), out=out, seed=seed,
            device=device, pretrain_epochs=pretrain_epochs, finetune_epochs=finetune_epochs,
            search_epochs=search_epochs, search_steps=search_steps, batch_size=batch_size, lr=lr, momentum=momentum,
            weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, augment=augment,
            grad_clip=grad_clip, label_smoothing=label_smoothing, data_dir=data_dir, download=download, layerwise=layerwise,
            granularity=granularity, channel_multiple=channel_multiple, budget=budget, budget_runtime=budget_runtime,
            budget_batch=budget_batch, budget_threads=budget_threads, include=tuple(include or ("*",)),
            exclude=tuple(exclude) if exclude else None, weight_init=weight_init, eval_limit=eval_limit, workers=workers,
            method_options=options, dense_reference=dense, force=force, allow_layer_collapse=allow_layer_collapse,
        )
        dist = from_environment(device)
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
            target = f"latency {b['achieved']:.4g} ms (table), budget {b['asked']:.4g} ms"
        target = f"weight sparsity {r['sparsity']:.4%}, {target}"
    else:
        target = f"sparsity {r['sparsity']:.4%} (target {r['target_sparsity']:.4%})"
    typer.echo(
        f"{r['method']} ticket: {target}, "
        f"accuracy {r['accuracy']:.4f}{dense_txt}, {r['timings']['ticket_total_s']:.1f}s -> {r['out']}",
        err=json_out == "-",  # stdout carries only the JSON then
    )
