"""Two CPU processes under torchrun (gloo) give the single-process ticket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import torch

from sparsekit.ticket import Ticket

ARGS = ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "magnitude", "--sparsity", "0.9",
        "--pretrain-epochs", "1", "--finetune-epochs", "1", "--batch-size", "64", "-q"]
# gradient all-reduce sums in another order than one process does: float32 round-off only
DDP_WEIGHT_ATOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_matches_single(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun ships with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "sparsekit", *ARGS,
         "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "sparsekit", *ARGS, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = Ticket.load(tmp_path / "one"), Ticket.load(tmp_path / "ddp")
    assert a.mask() == b.mask()
    sa, sb = a.state("final"), b.state("final")
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=DDP_WEIGHT_ATOL, rtol=0)
    # only rank 0 wrote: one line per epoch in the metrics log
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 3
