"""Every torchvision classifier through a tiny chain: prune -> export structured -> export masked.

Each model (random init, never downloaded) runs the CLI as a new user would, on a tiny image folder
of random pictures (2 classes, 8 train / 4 test images, SIZExSIZE):

  sparsekit prune  --model tv:NAME --method magnitude-channel --budget macs=0.5 (0 epochs)
  sparsekit export RUN --format structured      (ONNX, verified against torch)
  sparsekit export RUN --format masked

and records per model: ``pass`` (every command exit 0 and the MACs run.json records equal the
structured export's), ``refused`` (a command exits 1 or 2 with one clear line, no traceback and no
"internal error"), or ``fail`` (anything else: traceback, internal error, timeout, MAC mismatch).
It also records the longest silence of each command's output (seconds without a line) and the
line before it, so a step that works for minutes without saying what it does shows up.

Usage (one JSON line per model appended to --log; models run smallest first):

    .venv/bin/python benchmarks/tv_sweep.py --log .bench/tv_sweep.jsonl [--only NAME ...]
        [--size 64] [--timeout 900] [--max-params 100e6] [--skip-done]
    .venv/bin/python benchmarks/tv_sweep.py --log .bench/tv_sweep.jsonl --summary
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SPARSEKIT = [sys.executable, "-m", "sparsekit"]


def classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def param_count(name: str, size: int) -> int:
    """Parameters of tv:NAME at 1,000 classes, from torchvision's weights metadata (nothing is
    downloaded); else built on the meta device (no memory, no init cost)."""
    import torch
    import torchvision

    from sparsekit.models.torchvision_models import build_torchvision

    try:
        return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])
    except (ValueError, KeyError, AttributeError):
        pass
    with torch.device("meta"):
        try:
            net = build_torchvision(name, (3, size, size), 2)
        except Exception:  # noqa: BLE001 - the chain itself reports what is wrong
            return 0
    return sum(p.numel() for p in net.parameters())


def tiny_imagefolder(root: Path, size: int) -> Path:
    """root/train and root/test with 2 classes of random RGB PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def run(cmd: list[str], timeout: float) -> dict:
    """Run a command; returns rc, wall seconds, output tail and the longest silence of its output."""
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # progress lines and errors both count as "saying what it does": stdout and stderr together
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    stamps = [t0]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            stamps.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    reader.join(5)
    end = time.monotonic()
    stamps.append(end)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    return {"rc": rc, "seconds": round(end - t0, 1), "max_silence_s": round(gaps[worst], 1),
            "silent_after": lines[worst - 1] if worst >= 1 and worst - 1 < len(lines) else "(start)",
            "tail": lines[-3:]}


def classify(steps: dict[str, dict]) -> tuple[str, str]:
    for name, r in steps.items():
        text = "\n".join(r["tail"])
        if r["rc"] is None:
            return "fail", f"{name}: timed out after {r['seconds']}s"
        if r["rc"] == 0:
            continue
        if "Traceback" in text or "internal error" in text or r["rc"] not in (1, 2):
            return "fail", f"{name}: {r['tail'][-1] if r['tail'] else r['rc']}"
        return "refused", f"{name}: {r['tail'][-1] if r['tail'] else ''}"
    return "pass", ""


def sweep_one(name: str, data: Path, work: Path, size: int, timeout: float) -> dict:
    out = work / name
    run_dir = out / "run"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("prune.json", "structured.json", "masked.json"):  # a rerun must not read an older result
        (out / stale).unlink(missing_ok=True)
    steps: dict[str, dict] = {}
    prune = SPARSEKIT + ["prune", "--model", f"tv:{name}", "--data", f"imagefolder:{data}", "--method",
                         "magnitude-channel", "--budget", "macs=0.5", "--out", str(run_dir), "--pretrain-epochs", "0",
                         "--finetune-epochs", "0", "--no-dense", "--batch-size", "8", "--threads", "1", "--force",
                         "--json", str(out / "prune.json")]
    steps["prune"] = run(prune, timeout)
    if steps["prune"]["rc"] == 0:
        for fmt in ("structured", "masked"):
            steps[f"export-{fmt}"] = run(SPARSEKIT + ["export", str(run_dir), "--format", fmt, "--out",
                                                      str(out / f"{fmt}.onnx"), "--json", str(out / f"{fmt}.json")],
                                         timeout)
            if steps[f"export-{fmt}"]["rc"] != 0:
                break
    status, why = classify(steps)
    rec: dict = {"model": name, "size": size, "status": status, "why": why, "steps": steps}
    try:
        recorded = json.loads((out / "prune.json").read_text())["budget"]
        rec["macs_recorded"] = recorded["achieved"]
        rec["macs_dense"] = recorded["dense"]
    except (OSError, KeyError, ValueError, TypeError):
        pass
    try:
        structured = json.loads((out / "structured.json").read_text())["structured"]
        rec["macs_converted"] = structured["macs_after"]
        rec["channels_not_removed"] = structured["channels_not_removed"]
    except (OSError, KeyError, ValueError, TypeError):
        pass
    if status == "pass" and rec.get("macs_recorded") != rec.get("macs_converted"):
        rec["status"], rec["why"] = "fail", (f"run.json records {rec.get('macs_recorded')} MACs, the structured "
                                             f"export has {rec.get('macs_converted')}")
    return rec


def summary(log: Path) -> str:
    """Markdown table of the last record of each model in ``log``."""
    last: dict[str, dict] = {}
    for line in log.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            last[rec["model"]] = rec
    rows = ["| model | params (M) | status | MACs recorded | MACs converted | longest silence (s) | why |",
            "|---|---|---|---|---|---|---|"]
    for name in sorted(last, key=lambda n: (last[n].get("params", 0), n)):
        r = last[name]
        silence = max((v["max_silence_s"] for v in r.get("steps", {}).values()), default=0)
        rows.append(f"| {name} | {r.get('params', 0) / 1e6:.1f} | {r['status']} | {r.get('macs_recorded', '')} | "
                    f"{r.get('macs_converted', '')} | {silence} | {r.get('why', '')} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True, help="JSON lines file to append one record per model to")
    ap.add_argument("--summary", action="store_true", help="print a table of --log and exit")
    ap.add_argument("--only", nargs="*", help="model names (default: every torchvision classifier)")
    ap.add_argument("--size", type=int, default=64, help="input height = width")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per command")
    ap.add_argument("--max-params", type=float, default=float("inf"), help="skip (record) larger models")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--skip-done", action="store_true", help="skip models --log already has a result for")
    args = ap.parse_args()
    if args.summary:
        print(summary(Path(args.log)))
        return 0
    names = args.only or classifiers()
    if args.skip_done and Path(args.log).exists():
        done = {json.loads(line)["model"] for line in Path(args.log).read_text().splitlines() if line.strip()
                and json.loads(line)["status"] in ("pass", "refused", "fail")}
        names = [n for n in names if n not in done]
    sizes = {n: param_count(n, args.size) for n in names}
    work = Path(args.work or tempfile.mkdtemp(prefix="tv_sweep_"))
    data = tiny_imagefolder(work / "data", args.size)
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    for name in sorted(names, key=lambda n: (sizes[n], n)):
        if sizes[name] > args.max_params:
            rec = {"model": name, "size": args.size, "status": "not run", "params": sizes[name],
                   "why": f"over --max-params {args.max_params:g}"}
        else:
            rec = {**sweep_one(name, data, work, args.size, args.timeout), "params": sizes[name]}
        rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{name:28s} {rec['status']:8s} {rec.get('why', '')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
