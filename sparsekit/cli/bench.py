"""``sparsekit bench FILE_OR_DIR...``: latency, throughput, memory, size, MACs, accuracy vs dense."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, parse_csv, parse_ints, run


@app.command("bench")
def bench_cmd(
    inputs: Annotated[list[str], typer.Argument(help="run directories and/or .onnx files")],
    data: Annotated[str | None, typer.Option("--data", help="dataset spec (default: each run's)")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="comma list (default: every installed runtime of `sparsekit list runtimes`, CUDA ones if present)")] = None,
    batch: Annotated[str, typer.Option("--batch", help="comma list of batch sizes")] = "1,32",
    threads: Annotated[int, typer.Option("--threads", help="intra-op threads")] = 1,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed calls per variant and batch size")] = 5,
    min_time: Annotated[float, typer.Option("--min-time", help="timed seconds per variant, batch size and process")] = 0.3,
    repeats: Annotated[int, typer.Option("--repeats", help="fresh timing processes per run and runtime (>= 3)")] = 3,
    fmt: Annotated[str, typer.Option("--format", help="ticket formats for run dirs: masked,structured")] = "masked",
    dense: Annotated[bool, typer.Option("--dense/--no-dense", help="also measure each run's dense reference")] = True,
    accuracy_limit: Annotated[int | None, typer.Option("--accuracy-limit", help="test samples for accuracy")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="where dataset files are")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write the report JSON to PATH (- for stdout)")] = None,
    markdown: Annotated[str | None, typer.Option("--markdown", help="write a markdown table")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="write a PNG plot")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="every column in the table and markdown")] = False,
    seed: Annotated[int, typer.Option("--seed", help="seed of the round order and the bootstrap")] = 0,
) -> None:
    """Benchmark tickets against the fastest dense runtime and their own runtime's dense, interleaved.

    Dense and ticket variants are timed in alternating shuffled rounds in --repeats fresh processes;
    a speed-up counts as faster or slower only when its 95 % bootstrap interval excludes 1.0.
    """
    from sparsekit.bench.core import BenchConfig, bench
    from sparsekit.bench.speedup_report import check_writable, terminal_table, write_outputs

    def go() -> dict:
        for path, what in ((json_out, "--json"), (markdown, "--markdown"), (plot, "--plot")):
            check_writable(path, what)
        cfg = BenchConfig(
            inputs=tuple(inputs), runtimes=tuple(parse_csv(runtime, "--runtime")) if runtime else None,
            batches=tuple(parse_ints(batch, "--batch")), threads=threads, warmup=warmup,
            min_time=min_time, repeats=repeats, seed=seed,
            data=data, data_dir=data_dir, dense=dense, formats=tuple(parse_csv(fmt, "--format")),
            accuracy_limit=accuracy_limit,
        )
        rep = bench(cfg)
        emit_json(rep, json_out)
        write_outputs(rep, markdown, plot, wide)
        return rep

    rep = run(go)
    if json_out != "-":
        typer.echo(terminal_table(rep, wide))
