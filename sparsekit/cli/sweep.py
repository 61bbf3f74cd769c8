"""``sparsekit sweep``: the fastest model within X points of dense, and in which form, measured."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, parse_csv, parse_ints, parse_kv, run, set_threads
from sparsekit.errors import SparsekitError, UsageError


def _floats(value: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in parse_csv(value, what))
    except ValueError:
        raise UsageError(f"{what} must be a comma list of numbers, got {value!r}") from None


# -- the options of ``sweep`` (declared here so the command's signature reads as one line each) --
_Model = Annotated[str, typer.Option(help="registered model, tv:NAME, pkg.mod:factory or file.py:factory")]
_Data = Annotated[str, typer.Option(help="fashion-mnist, mnist, cifar10, imagefolder:PATH, synthetic")]
_Out = Annotated[str, typer.Option(help="sweep directory (rerun the same command to resume)")]
_Methods = Annotated[str, typer.Option(help="comma list; METHOD:weight / METHOD:channel picks a granularity")]
_Sparsity = Annotated[str, typer.Option(help="comma list of sparsities for weight-granularity methods")]
_Macs = Annotated[str, typer.Option(help="comma list of MAC budgets (fraction kept) for channel methods")]
_Runtime = Annotated[str, typer.Option(help="comma list of runtimes (ONNX ones: sparse-cpu, ort-cpu, ort-cuda)")]
_Batch = Annotated[str, typer.Option(help="comma list of batch sizes; the first one decides")]
_Threads = Annotated[int, typer.Option(help="intra-op threads of the bench")]
_MaxDrop = Annotated[float | None, typer.Option(help="percentage points below the dense accuracy")]
_MaxLatency = Annotated[float | None, typer.Option(help="p50 latency per batch, milliseconds")]
_Seed = Annotated[int, typer.Option(help="seed of init, data order, searches and bench")]
_Pretrain = Annotated[int, typer.Option(help="dense epochs before the searches (rewind point K, trained once)")]
_Finetune = Annotated[int, typer.Option(help="ticket (and dense reference) training epochs")]
_SearchEpochs = Annotated[int | None, typer.Option(help="epochs of a learned-mask search (cts, gates)")]
_SearchSteps = Annotated[int | None, typer.Option(help="steps of a learned-mask search instead")]
_BatchSize = Annotated[int, typer.Option(help="training batch size")]
_Lr = Annotated[float, typer.Option(help="SGD learning rate")]
_EvalLimit = Annotated[int | None, typer.Option(help="evaluate runs on the first N test samples")]
_AccuracyLimit = Annotated[int | None, typer.Option(help="bench accuracy on the first N test samples")]
_Repeats = Annotated[int, typer.Option(help="fresh bench processes per runtime (>= 3)")]
_MinTime = Annotated[float, typer.Option(help="timed seconds per variant, batch and process")]
_DataDir = Annotated[str | None, typer.Option(help="directory holding the dataset files")]
_Jobs = Annotated[int, typer.Option(
    help="cells trained at once, each a process with the training threads split between them")]
_TrainThreads = Annotated[int | None, typer.Option(help="CPU threads for training [default: torch's choice]")]
_ChannelMultiple = Annotated[int, typer.Option(
    help="channel cells: kept channels per coupling family a multiple of N (1 = free widths; dense CPU "
         "runtimes ran odd widths slower than dense in our measurement)")]
_Opt = Annotated[
    list[str] | None,
    typer.Option(help="method option METHOD.KEY=VALUE (repeatable), e.g. cts.batch_size=64"),
]
_JsonOut = Annotated[str | None, typer.Option("--json", help="also write sweep.json to PATH (- for stdout)")]


def _method_options(opt: list[str] | None) -> dict[str, dict[str, str]]:
    """``--opt METHOD.KEY=VALUE`` values as {method: {key: value}}."""
    options: dict[str, dict[str, str]] = {}
    for key, value in parse_kv(opt, "--opt").items():
        method, dot, name = key.partition(".")
        if not dot or not method or not name:
            raise UsageError(f"--opt expects METHOD.KEY=VALUE, got {key}={value}")
        options.setdefault(method, {})[name] = value
    return options


def _config(a: dict[str, Any]) -> Any:
    """The ``SweepConfig`` of the command's arguments ``a`` (its locals), lists parsed."""
    from sparsekit.sweep.plan import SweepConfig

    return SweepConfig(
        model=a["model"],
        data=a["data"],
        out=a["out"],
        methods=tuple(parse_csv(a["methods"], "--methods")),
        sparsities=_floats(a["sparsity"], "--sparsity") if a["sparsity"].strip() else (),
        macs=_floats(a["macs"], "--macs") if a["macs"].strip() else (),
        runtimes=tuple(parse_csv(a["runtime"], "--runtime")),
        batches=tuple(parse_ints(a["batch"], "--batch")),
        method_options=_method_options(a["opt"]),
        **{k: a[k] for k in _PLAIN},
    )


#: arguments passed to ``SweepConfig`` unchanged
_PLAIN = ("threads", "max_accuracy_drop", "max_latency_ms", "seed", "pretrain_epochs", "finetune_epochs",
          "search_epochs", "search_steps", "batch_size", "lr", "eval_limit", "data_dir", "repeats",
          "min_time", "accuracy_limit", "channel_multiple", "jobs")


def _summary(doc: dict, out: str) -> None:
    """The two closing lines: where the frontier is, what is recommended."""
    t = doc["timings"]
    typer.echo(
        f"frontier: {out}/frontier.md, {out}/frontier.png, {out}/sweep.json "
        f"(sweep {t['wall_s']:.0f} s: train {t['train_wall_s']:.0f} s, bench {t['bench_s']:.0f} s)"
    )
    typer.echo(f"recommended: {doc['recommendation']['message']} -> {out}/best.onnx")


@app.command("sweep")
def sweep_cmd(
    model: _Model,
    data: _Data,
    out: _Out,
    methods: _Methods = "cts,magnitude,magnitude-channel",
    sparsity: _Sparsity = "0.8,0.9,0.95,0.98",
    macs: _Macs = "0.5,0.25",
    runtime: _Runtime = "sparse-cpu,ort-cpu",
    batch: _Batch = "1",
    threads: _Threads = 1,
    max_accuracy_drop: _MaxDrop = None,
    max_latency_ms: _MaxLatency = None,
    seed: _Seed = 0,
    pretrain_epochs: _Pretrain = 1,
    finetune_epochs: _Finetune = 3,
    search_epochs: _SearchEpochs = None,
    search_steps: _SearchSteps = None,
    batch_size: _BatchSize = 128,
    lr: _Lr = 0.1,
    eval_limit: _EvalLimit = None,
    accuracy_limit: _AccuracyLimit = None,
    repeats: _Repeats = 3,
    min_time: _MinTime = 0.3,
    data_dir: _DataDir = None,
    train_threads: _TrainThreads = None,
    jobs: _Jobs = 1,
    channel_multiple: _ChannelMultiple = 8,
    opt: _Opt = None,
    json_out: _JsonOut = None,
) -> None:
    """Pretrain once, search every ticket from that rewind point, bench all with dense, recommend one.

    Exit 0 with the recommendation (OUT/best.onnx + best.json), or exit 1 with the best found and by
    how much it misses the constraint.
    """
    args = dict(locals())  # the options, by name, for _config
    from sparsekit.sweep.run import run_sweep

    def go() -> dict:
        set_threads(train_threads)
        doc, decision = run_sweep(_config(args))
        emit_json(doc, json_out)
        if not decision.ok:
            raise SparsekitError(decision.message)
        return doc

    doc = run(go)
    if json_out != "-":
        _summary(doc, out)
