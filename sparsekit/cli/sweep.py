"""``sparsekit sweep``: the fastest model within X points of dense, and in which form, measured."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, parse_csv, parse_ints, parse_kv, run, set_threads
from sparsekit.errors import SparsekitError, UsageError


def _floats(value: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in parse_csv(value, what))
    except ValueError:
        raise UsageError(f"{what} must be a comma list of numbers, got {value!r}") from None


@app.command("sweep")
def sweep_cmd(
    model: Annotated[
        str, typer.Option(help="registered model, tv:NAME, pkg.mod:factory or file.py:factory")
    ],
    data: Annotated[
        str, typer.Option(help="fashion-mnist, mnist, cifar10, imagefolder:PATH, synthetic")
    ],
    out: Annotated[str, typer.Option(help="sweep directory (rerun the same command to resume)")],
    methods: Annotated[
        str, typer.Option(help="comma list; METHOD:weight / METHOD:channel picks a granularity")
    ] = "cts,magnitude,magnitude-channel",
    sparsity: Annotated[
        str, typer.Option(help="comma list of sparsities for weight-granularity methods")
    ] = "0.8,0.9,0.95,0.98",
    macs: Annotated[
        str, typer.Option(help="comma list of MAC budgets (fraction kept) for channel methods")
    ] = "0.5,0.25",
    runtime: Annotated[
        str, typer.Option(help="comma list of runtimes (ONNX ones: sparse-cpu, ort-cpu, ort-cuda)")
    ] = "sparse-cpu,ort-cpu",
    batch: Annotated[
        str, typer.Option(help="comma list of batch sizes; the first one decides")
    ] = "1",
    threads: Annotated[int, typer.Option(help="intra-op threads of the bench")] = 1,
    max_accuracy_drop: Annotated[
        float | None, typer.Option(help="percentage points below the dense accuracy")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option(help="p50 latency per batch, milliseconds")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of init, data order, searches and bench")] = 0,
    pretrain_epochs: Annotated[
        int, typer.Option(help="dense epochs before the searches (rewind point K, trained once)")
    ] = 1,
    finetune_epochs: Annotated[
        int, typer.Option(help="ticket (and dense reference) training epochs")
    ] = 3,
    search_epochs: Annotated[
        int | None, typer.Option(help="epochs of a learned-mask search (cts, gates)")
    ] = None,
    search_steps: Annotated[
        int | None, typer.Option(help="steps of a learned-mask search instead")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="training batch size")] = 128,
    lr: Annotated[float, typer.Option(help="SGD learning rate")] = 0.1,
    eval_limit: Annotated[
        int | None, typer.Option(help="evaluate runs on the first N test samples")
    ] = None,
    accuracy_limit: Annotated[
        int | None, typer.Option(help="bench accuracy on the first N test samples")
    ] = None,
    repeats: Annotated[int, typer.Option(help="fresh bench processes per runtime (>= 3)")] = 3,
    min_time: Annotated[
        float, typer.Option(help="timed seconds per variant, batch and process")
    ] = 0.3,
    data_dir: Annotated[
        str | None, typer.Option(help="directory holding the dataset files")
    ] = None,
    train_threads: Annotated[
        int | None, typer.Option(help="CPU threads for training [default: torch's choice]")
    ] = None,
    opt: Annotated[
        list[str] | None,
        typer.Option(help="method option METHOD.KEY=VALUE (repeatable), e.g. cts.batch_size=64"),
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="also write sweep.json to PATH (- for stdout)")
    ] = None,
) -> None:
    """Pretrain once, search every ticket from that rewind point, bench all with dense, recommend one.

    Exit 0 with the recommendation (OUT/best.onnx + best.json), or exit 1 with the best found and by
    how much it misses the constraint.
    """
    from sparsekit.sweep.plan import SweepConfig
    from sparsekit.sweep.run import run_sweep

    def go() -> dict:
        set_threads(train_threads)
        options: dict[str, dict[str, str]] = {}
        for key, value in parse_kv(opt, "--opt").items():
            method, dot, name = key.partition(".")
            if not dot or not method or not name:
                raise UsageError(f"--opt expects METHOD.KEY=VALUE, got {key}={value}")
            options.setdefault(method, {})[name] = value
        cfg = SweepConfig(
            model=model,
            data=data,
            out=out,
            methods=tuple(parse_csv(methods, "--methods")),
            sparsities=_floats(sparsity, "--sparsity") if sparsity.strip() else (),
            macs=_floats(macs, "--macs") if macs.strip() else (),
            runtimes=tuple(parse_csv(runtime, "--runtime")),
            batches=tuple(parse_ints(batch, "--batch")),
            threads=threads,
            max_accuracy_drop=max_accuracy_drop,
            max_latency_ms=max_latency_ms,
            seed=seed,
            pretrain_epochs=pretrain_epochs,
            finetune_epochs=finetune_epochs,
            search_epochs=search_epochs,
            search_steps=search_steps,
            batch_size=batch_size,
            lr=lr,
            eval_limit=eval_limit,
            data_dir=data_dir,
            repeats=repeats,
            min_time=min_time,
            accuracy_limit=accuracy_limit,
            method_options=options,
        )
        doc, decision = run_sweep(cfg)
        emit_json(doc, json_out)
        if not decision.ok:
            raise SparsekitError(decision.message)
        return doc

    doc = run(go)
    if json_out == "-":
        return
    t = doc["timings"]
    typer.echo(
        f"frontier: {out}/frontier.md, {out}/frontier.png, {out}/sweep.json "
        f"(sweep {t['wall_s']:.0f} s: train {t['train_wall_s']:.0f} s, bench {t['bench_s']:.0f} s)"
    )
    typer.echo(f"recommended: {doc['recommendation']['message']} -> {out}/best.onnx")
