"""Why does LTR beat CTS-KL on lenet300 at 0.74 %? Probes on the runs of bench_tickets.py.

Run after ``benchmarks/bench_tickets.py`` (it reads .bench/tickets/lenet300/...). Prints markdown.
For each seed with both tickets at 0.74 % density (0.8^22):

1. fine-tune trajectory: test accuracy of each mask at theta_1 and after every fine-tune epoch
   (same recipe as the benchmark: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 3 epochs);
2. allocation vs placement: each mask shuffled within its layers (same per-layer counts, random
   positions), trained with the same budget;
3. mask overlap and per-layer densities;
4. CTS with more search steps through the pipeline: batch 128 (4x the steps for the same data
   passes) and 10 epochs at batch 512.

Usage:
    .venv/bin/python benchmarks/probe_cts_vs_ltr.py [--out .bench/tickets] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sparsekit import paths
from sparsekit.binary_mask import Mask
from sparsekit.data import load_dataset
from sparsekit.models.registry import build_model
from sparsekit.pipeline import PruneConfig, prune
from sparsekit.sanity import layerwise_shuffle
from sparsekit.ticket import Ticket, load_state
from sparsekit.train.loop import TrainConfig, evaluate, train_epochs

ROOT = Path(__file__).resolve().parents[1]
J = 22


def ltr_mask(root: Path, seed: int) -> Mask | None:
    """LTR mask at 0.8^22: the final mask of a run to 0.74 %, or round 22 of a deeper run."""
    for d in sorted((root / "lenet300" / "ltr").glob(f"d*/s{seed}")):
        jj = int(d.parent.name[1:])
        if jj == J and paths.mask(d).exists():
            return Mask.load(paths.mask(d))
        rd = paths.round_dir(d, J)
        if jj > J and paths.mask(rd).exists():
            return Mask.load(paths.mask(rd))
    return None


def trajectory(ticket: Ticket, mask: Mask, data, tcfg: TrainConfig, seed: int, epochs: int = 3) -> list[float]:
    model = build_model(ticket.spec, seed=0)
    load_state(model, ticket.state("theta_k"), str(ticket.run_dir))
    mask.apply(model)
    accs = [evaluate(model, data)["accuracy"]]
    for e in range(epochs):
        train_epochs(model, data, tcfg, 1, mask=mask, seed=seed, first_epoch=1 + e)
        accs.append(evaluate(model, data)["accuracy"])
    return accs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / ".bench" / "tickets"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out)
    data = load_dataset("fashion-mnist")
    tcfg = TrainConfig(0.1, 0.9, 1e-4, 128)
    t0 = time.perf_counter()
    print("| seed | mask | per-layer density % | acc at theta_1 | after ft epoch 1 | 2 | 3 |")
    print("|---|---|---|---|---|---|---|")
    overlaps = []
    for seed in args.seeds:
        cts_dir = root / "lenet300" / "cts-kl" / f"d{J:02d}" / f"s{seed}"
        lm = ltr_mask(root, seed)
        if not paths.run_json(cts_dir).exists() or lm is None:
            continue
        ticket = Ticket.load(cts_dir)
        cm = ticket.mask()
        inter = (cm & lm).kept
        overlaps.append((seed, inter / cm.kept))
        variants = {
            "cts-kl": cm,
            "ltr": lm,
            "cts-kl shuffled in-layer": layerwise_shuffle(cm, seed + 777),
            "ltr shuffled in-layer": layerwise_shuffle(lm, seed + 777),
        }
        for name, m in variants.items():
            dens = " / ".join(f"{100 * (1 - s['sparsity']):.2f}" for s in m.layer_stats())
            accs = trajectory(ticket, m, data, tcfg, seed)
            print(f"| {seed} | {name} | {dens} | " + " | ".join(f"{100 * a:.1f}" for a in accs) + " |", flush=True)
    print()
    for seed, o in overlaps:
        print(f"* seed {seed}: {100 * o:.1f} % of the CTS-KL survivors are also LTR survivors")
    print()
    print("| seed | CTS-KL search | steps | final expected density % | accuracy % | before fine-tune % | search s | ticket s |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for se, bs in ((2, 512), (2, 128), (10, 512)):
            out = root / "probe" / f"cts-kl-e{se}-b{bs}" / f"s{seed}"
            if (se, bs) == (2, 512):
                out = root / "lenet300" / "cts-kl" / f"d{J:02d}" / f"s{seed}"
                if not paths.run_json(out).exists():
                    continue
                r = Ticket.load(out).meta["result"]
            else:
                r = prune(PruneConfig("lenet300", "fashion-mnist", "cts", 1 - 0.8**J, str(out), seed=seed,
                                      pretrain_epochs=1, search_epochs=se, finetune_epochs=3,
                                      method_options={"objective": "kl", "batch_size": bs},
                                      dense_reference=False), data=data)
            info, t = r["search_info"], r["timings"]
            print(f"| {seed} | {se} epochs, batch {bs} | {info['steps']} | {100 * info['expected_density']:.2f} | "
                  f"{100 * r['accuracy']:.1f} | {100 * r['accuracy_before_finetune']:.1f} | {t['search_s']:.0f} | "
                  f"{t['ticket_total_s']:.0f} |", flush=True)
    print(f"\nprobe wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
