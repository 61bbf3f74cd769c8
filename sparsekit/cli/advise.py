"""``sparsekit advise DIR``: which format will be fastest per layer on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run


@app.command("advise")
def advise_cmd(
    run_dir: Annotated[str, typer.Argument(help="run directory")],
    threads: Annotated[int, typer.Option("--threads", help="threads for the microbenchmark")] = 1,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="where the run's dataset is")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write JSON to PATH (- for stdout)")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="sparse-cpu: also show where the engine's time "
                                                "goes (measured µs per op, batch 1)")] = None,
) -> None:
    """Learn before exporting whether sparsity will pay: dense vs CSR vs sparse-cpu vs structured per layer."""
    from sparsekit.bench.advise import advise_run

    def go() -> dict:
        if runtime not in (None, "sparse-cpu"):
            from sparsekit.errors import UsageError

            raise UsageError(f"--runtime {runtime}: only sparse-cpu has a per-op profile")
        res = advise_run(run_dir, threads=threads, data_dir=data_dir)
        if runtime == "sparse-cpu":
            from sparsekit.bench.advise import engine_time_split

            res["engine_profile"] = engine_time_split(run_dir, threads=threads, data_dir=data_dir)
        emit_json(res, json_out)
        return res

    res = run(go)
    if json_out == "-":
        return
    w = max(len("layer"), *(len(r["name"]) for r in res["layers"])) + 2
    typer.echo(f"{'layer':<{w}}{'kind':<8}{'sparsity':>9}{'free ch':>9}  {'b1 csr/dense':>13}{'b32 csr/dense':>14}"
               f"{'engine sp/dn':>13}  advice")
    for r in res["layers"]:
        b1 = f"{r['batch1']['csr_speedup']:.2f}x" if "batch1" in r else "-"
        b32 = f"{r['batch32']['csr_speedup']:.2f}x" if "batch32" in r else "-"
        eng = f"{r['engine']['sparse_speedup']:.2f}x" if r.get("engine", {}).get("sparse_speedup") else "-"
        typer.echo(f"{r['name']:<{w}}{r['kind']:<8}{r['sparsity']:>9.1%}{r['free_channels']:>9}  {b1:>13}{b32:>14}"
                   f"{eng:>13}  {r['recommendation']} ({r['reason']})")
    if res.get("engine") and not res["engine"].get("available", True):
        typer.echo(f"sparse-cpu: {res['engine']['reason']}")
    dense = res.get("dense_runtimes") or {}
    for name, times in dense.get("us", {}).items():
        typer.echo(f"dense {name}: " + ", ".join(f"batch {b} {t:.0f} us" for b, t in times.items()))
    for name, reason in dense.get("failed", {}).items():
        typer.echo(f"dense {name}: {reason}")
    typer.echo(res["summary"])
    prof = res.get("engine_profile")
    if prof:
        typer.echo(f"sparse-cpu time per batch-{prof['batch']} run ({prof['threads']} thread(s), {prof['isa']}, "
                   f"{prof.get('layout', 'planar')} layout): "
                   f"{prof['wall_us']:.0f} µs, of which ops {prof['ops_us']:.0f} µs; slowest ops:")
        for o in prof["ops"][:8]:
            typer.echo(f"  {o['name']:<40} {o['kind']:<8}{o['kernel']:<7}{o['us']:>9.1f} µs {o['share']:>6.1%}")
