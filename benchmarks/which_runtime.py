"""The README's "which runtime" table: pivot `sparsekit bench --json` reports (p50 ms, dense and ticket,
batch 1 and 64, the ticket's speed-up vs the fastest dense runtime of the same run with its 95 % CI).

    OMP_NUM_THREADS=1 sparsekit prune --model lenet300 --data fashion-mnist --method magnitude --sparsity 0.9 \
        --pretrain-epochs 1 --finetune-epochs 1 --threads 1 --out runs/l300
    OMP_NUM_THREADS=1 sparsekit prune --model resnet20 --data fashion-mnist --method magnitude --sparsity 0.9 \
        --pretrain-epochs 1 --finetune-epochs 0 --threads 1 --out runs/r20
    sparsekit bench runs/l300 --runtime torch-cpu,ort-cpu,openvino-cpu,mnn-cpu,mnn-sparse,sparse-cpu \
        --batch 1,64 --json l300_bench.json
    sparsekit bench runs/r20 --runtime torch-cpu,ort-cpu,openvino-cpu,mnn-cpu,mnn-sparse,sparse-cpu \
        --batch 1,64 --accuracy-limit 1000 --json r20_bench.json
    python benchmarks/which_runtime.py l300_bench.json r20_bench.json
"""

from __future__ import annotations

import json
import sys


def _cell(rows: dict, rt: str, variant: str, batch: int) -> str:
    r = rows.get((rt, variant, batch))
    if r is None and variant == "dense":  # e.g. mnn-sparse: its dense model is mnn-cpu's, measured once
        dense_rt = rows.get((rt, "ticket", batch), {}).get("dense_runtime")
        return f"= {dense_rt}" if dense_rt else "-"
    return f"{r['latency_ms']['p50']:.3f}" if r else "-"


def _speedup(rows: dict, rt: str, batch: int) -> str:
    r = rows.get((rt, "ticket", batch))
    if r is None or r["speedup_vs_best_dense"] is None:
        return "-"
    lo, hi = r["speedup_vs_best_dense_ci"]
    return f"{r['speedup_vs_best_dense']:.2f}x ({lo:.2f}-{hi:.2f})"


def main(paths: list[str]) -> None:
    print("| model | runtime | dense b1 | ticket b1 | dense b64 | ticket b64 | ticket vs best dense b1 / b64 |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as f:
            rep = json.load(f)
        rows = {(r["runtime"], r["variant"], r["batch"]): r for r in rep["rows"]}
        model = rep["rows"][0]["model"].split("/")[0]
        for rt in dict.fromkeys(r["runtime"] for r in rep["rows"]):
            print(f"| {model} | {rt} | {_cell(rows, rt, 'dense', 1)} | {_cell(rows, rt, 'ticket', 1)} | "
                  f"{_cell(rows, rt, 'dense', 64)} | {_cell(rows, rt, 'ticket', 64)} | "
                  f"{_speedup(rows, rt, 1)} / {_speedup(rows, rt, 64)} |")
        best = {b["batch"]: b["runtime"] for b in rep["best_dense"]}
        env = rep["environment"]
        print(f"| {model} | fastest dense | {best.get(1)} | | {best.get(64)} | | load avg at start "
              f"{env['load_average_at_start']}, {env['date_utc']}, commit {env['git_commit']} |")


if __name__ == "__main__":
    main(sys.argv[1:])
