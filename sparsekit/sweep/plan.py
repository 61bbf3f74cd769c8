"""The sweep's plan: its options (``SweepConfig``) and the grid of cells they expand to.

A weight-granularity method gets one cell per ``--sparsity``; a channel-granularity method one cell per
``--macs`` budget (fraction of the dense MACs kept). ``METHOD:weight`` / ``METHOD:channel`` picks the
granularity of a method that has both (default: the method's first, e.g. weight for cts and magnitude,
channel for magnitude-channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sparsekit.errors import UsageError

DEFAULT_RUNTIMES = ("sparse-cpu", "ort-cpu")
DEFAULT_FINETUNE_EPOCHS = 3
#: the run directory holding theta_K and the dense reference (its sparsity-0 ticket)
REFERENCE_DIR = "dense"
CELLS_DIR = "cells"
ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class Cell:
    """One ticket of the grid: a method at one sparsity (weight) or one MAC budget (channel)."""

    method: str
    granularity: str
    sparsity: float | None = None
    macs: float | None = None

    @property
    def id(self) -> str:
        if self.granularity == "weight":
            return f"{self.method}-s{self.sparsity:g}"
        return (
            f"{self.method}-channel-macs{self.macs:g}"
            if not self.method.endswith("channel")
            else f"{self.method}-macs{self.macs:g}"
        )

    @property
    def form(self) -> str:
        """The export its runtimes need: masked zeros (sparse-cpu) or channels removed (dense runtimes)."""
        return "masked" if self.granularity == "weight" else "structured"

    def describe(self) -> str:
        what = (
            f"sparsity {self.sparsity:g}" if self.granularity == "weight" else f"MACs {self.macs:g}"
        )
        return f"{self.method} ({self.granularity}) at {what}"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "method": self.method,
            "granularity": self.granularity,
            "sparsity": self.sparsity,
            "macs": self.macs,
            "form": self.form,
        }


@dataclass(frozen=True)
class SweepConfig:
    """Options of ``sparsekit sweep``."""

    model: str
    data: str
    out: str
    methods: tuple[str, ...] = ("cts", "magnitude", "magnitude-channel")
    sparsities: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)
    macs: tuple[float, ...] = (0.5, 0.25)
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    batches: tuple[int, ...] = (1,)
    threads: int = 1
    #: cells trained at once, each in a process of its own with torch threads // jobs. 1 by default (a
    #: GPU, or a big model whose one training already uses every core); on a small CPU model jobs = cores
    #: cut resnet20's sweep training wall time (README, sweep section)
    jobs: int = 1
    max_accuracy_drop: float | None = field(
        default=None, metadata={"help": "percentage points vs dense"}
    )
    max_latency_ms: float | None = None
    seed: int = 0
    pretrain_epochs: int = 1
    finetune_epochs: int = DEFAULT_FINETUNE_EPOCHS
    search_epochs: int | None = None
    search_steps: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    eval_limit: int | None = None
    data_dir: str | None = None
    device: str = "cpu"
    repeats: int = 3
    min_time: float = 0.3
    warmup: int = 5
    accuracy_limit: int | None = None
    #: channel cells keep every coupling family's channel count a multiple of this (prune --channel-multiple).
    #: 8 because the dense runtimes a channel ticket is for run odd widths slowly: resnet20 at a 0.5 MAC
    #: budget ran 0.80x of dense on ORT with free widths, 1.26x with multiples of 8 (1 thread, batch 1,
    #: AVX-512 Xeon, 2026-12-04; README, sweep section)
    channel_multiple: int = 8
    #: per method: option -> value (``--opt cts.batch_size=64``), as ``sparsekit prune --opt`` takes them
    method_options: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is None and self.max_latency_ms is None:
            raise UsageError(
                "give a constraint: --max-accuracy-drop PTS and/or --max-latency-ms MS"
            )
        if self.max_accuracy_drop is not None and not (
            math.isfinite(self.max_accuracy_drop) and self.max_accuracy_drop >= 0
        ):
            raise UsageError(
                f"--max-accuracy-drop must be >= 0 points, got {self.max_accuracy_drop}"
            )
        if self.max_latency_ms is not None and not (
            math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0
        ):
            raise UsageError(f"--max-latency-ms must be > 0, got {self.max_latency_ms}")
        for s in self.sparsities:
            if not (math.isfinite(s) and 0 < s < 1):
                raise UsageError(f"--sparsity values must be in (0, 1), got {s}")
        for m in self.macs:
            if not (math.isfinite(m) and 0 < m < 1):
                raise UsageError(f"--macs budgets must be fractions in (0, 1), got {m}")
        if not self.methods:
            raise UsageError("--methods must name at least one method")
        if not self.runtimes:
            raise UsageError("--runtime must name at least one runtime")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"--batch sizes must be >= 1, got {list(self.batches)}")
        if self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")
        if self.jobs < 1:
            raise UsageError(f"--jobs must be >= 1, got {self.jobs}")
        if self.channel_multiple < 1:
            raise UsageError(f"--channel-multiple must be >= 1, got {self.channel_multiple}")
        if self.pretrain_epochs < 0 or self.finetune_epochs < 0:
            raise UsageError("--pretrain-epochs and --finetune-epochs must be >= 0")
        self.check_runtimes()
        named = {m.partition(":")[0] for m in self.methods}
        for method in self.method_options:
            if method not in named:
                raise UsageError(f"--opt {method}.KEY=VALUE: {method} is not among --methods")
        if not self.cells():
            raise UsageError(
                "the grid is empty: weight methods need --sparsity values, channel methods --macs budgets"
            )

    def check_runtimes(self) -> None:
        """Before any training: every runtime exists, runs here, and runs ONNX files."""
        from sparsekit.bench.runtimes import RUNTIMES

        for name in self.runtimes:
            rt = RUNTIMES.get(name)  # unknown -> UsageError with "did you mean"
            if rt.engine == "torch":
                raise UsageError(
                    f"--runtime {name}: the sweep benches its exported ONNX artifacts; torch runtimes "
                    "rebuild run directories (bench a cell with `sparsekit bench OUT/cells/ID`)"
                )
            reason = rt.unavailable_reason()
            if reason:
                raise UsageError(f"--runtime {name}: {reason}")

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in the order they run (each method's cells from sparse to dense)."""
        from sparsekit.methods import METHODS

        out: list[Cell] = []
        for spec in self.methods:
            name, _, gran = spec.partition(":")
            method = METHODS.get(name)  # unknown -> UsageError with "did you mean"
            gran = gran or method.granularities[0]
            if gran not in method.granularities:
                raise UsageError(
                    f"--methods {spec}: {name} supports {'/'.join(method.granularities)} granularity"
                )
            if gran == "weight":
                out += [Cell(name, "weight", sparsity=s) for s in sorted(set(self.sparsities))]
            else:
                if not getattr(method, "cost_budgets", False):
                    raise UsageError(
                        f"--methods {spec}: {name} takes no MAC budget at channel granularity"
                    )
                out += [Cell(name, "channel", macs=m) for m in sorted(set(self.macs), reverse=True)]
        ids = [c.id for c in out]
        if len(set(ids)) != len(ids):
            raise UsageError("--methods names a cell twice")
        return out

    def reference_dir(self) -> Path:
        return Path(self.out) / REFERENCE_DIR

    def cell_dir(self, cell: Cell) -> Path:
        return Path(self.out) / CELLS_DIR / cell.id

    def artifact(self, name: str) -> Path:
        return Path(self.out) / ARTIFACTS_DIR / f"{name}.onnx"
