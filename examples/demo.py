"""make demo: Fashion-MNIST LeNet-300-100 ticket at 90% sparsity, end to end, vs the dense model.

prune (1 dense epoch to the rewind point, magnitude mask, 3 fine-tune epochs; the dense reference gets
the same 1+3 epochs) -> export ticket and dense to verified ONNX -> bench the run (ticket + dense) on
torch-cpu, torch-csr, ort-cpu and sparse-cpu (sparsekit's native engine), every speed-up against the
fastest dense runtime of the same bench.
Every step is the public CLI, so this file doubles as a usage example.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OUT = Path(os.environ.get("SPARSEKIT_DEMO_DIR", ".demo"))
SYSTEM_DATA = Path("/usr/share/datasets/fashion-mnist")


def sk(*args: str) -> None:
    cmd = [sys.executable, "-m", "sparsekit", *args]
    print("$ sparsekit " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    import time

    t0 = time.perf_counter()
    OUT.mkdir(exist_ok=True)
    run = OUT / "lenet300-magnitude-s90"
    data_flags = [] if SYSTEM_DATA.is_dir() or os.environ.get("SPARSEKIT_DATA") else ["--download"]
    sk("prune", "--model", "lenet300", "--data", "fashion-mnist", "--method", "magnitude",
       "--sparsity", "0.9", "--pretrain-epochs", "1", "--finetune-epochs", "3", "--seed", "0",
       "--out", str(run), "--json", str(OUT / "prune.json"), *data_flags)
    sk("info", str(run))
    sk("export", str(run), "--out", str(OUT / "ticket.onnx"))
    sk("export", str(run), "--dense", "--out", str(OUT / "dense.onnx"))
    # the run directory is benched as the ticket AND its dense reference, in the same run
    # every runtime installed here: sparse-cpu and the optional dense runtimes (OpenVINO, MNN) and MNN's
    # sparse kernels, so "best dense" is the fastest a user could pick on this machine
    runtimes = ",".join(["torch-cpu", "torch-csr", "ort-cpu"] + _installed(
        "sparse-cpu", "openvino-cpu", "mnn-cpu", "mnn-sparse"))
    sk("bench", str(run), "--data", "fashion-mnist", "--runtime", runtimes,
       "--batch", "1,64", "--json", str(OUT / "bench.json"), "--markdown", str(OUT / "bench.md"))
    print(f"\nresults in {OUT}/ (prune.json, bench.json, bench.md); demo took {time.perf_counter() - t0:.0f} s")
    if "--record" in sys.argv:
        record()


def _installed(*names: str) -> list[str]:
    """The runtimes among ``names`` that can run here (the others are named and skipped)."""
    from sparsekit.bench.runtimes import RUNTIMES

    ok = []
    for name in names:
        reason = RUNTIMES.get(name).unavailable_reason()
        if reason is None:
            ok.append(name)
        else:
            print(f"demo: skipping runtime {name}: {reason}")
    return ok


def record() -> None:
    """Write the demo's numbers into docs/benchmarks.md (between the demo markers)."""
    import json

    prune = json.loads((OUT / "prune.json").read_text())
    section = (
        "## make demo: LeNet-300-100 on Fashion-MNIST at 90 % sparsity\n\n"
        "Command: `make demo DEMO_ARGS=--record` (= `python examples/demo.py --record`, which writes this "
        "section). Budget: 1 dense epoch to the rewind point, magnitude mask at "
        "theta_1, 3 fine-tune epochs; the dense reference gets the same 1 + 3 epochs.\n\n"
        f"Ticket: sparsity {prune['sparsity']:.2%}, test accuracy {prune['accuracy']:.2%} "
        f"(dense reference {prune['dense_accuracy']:.2%}); the mask alone at theta_1 before fine-tuning: "
        f"{prune['accuracy_before_finetune']:.2%}. Ticket wall time {prune['timings']['ticket_total_s']:.0f} s.\n\n"
        + (OUT / "bench.md").read_text()
    )
    from sparsekit._io import write_marked_section

    doc = Path("docs/benchmarks.md")
    write_marked_section(doc, "demo", section)
    print(f"recorded in {doc}")


if __name__ == "__main__":
    main()
