"""What a ticket may cost: ``--budget params=F | macs=F | latency=MS`` (or the plain ``--sparsity``).

* ``params=F``: keep a fraction F of the prunable weights. At weight granularity this is exactly
  ``--sparsity 1-F``; at channel granularity it counts the weights left after structured removal
  (the rows of removed channels and the input columns their consumers lose), where ``--sparsity``
  keeps its meaning of a fraction of channels removed.
* ``macs=F``: keep a fraction F of the dense model's multiply-accumulates per sample (whole model:
  Conv/Linear layers after removal plus the constant MACs of other matrix products). Channel
  granularity (a weight mask does not change what a dense runtime executes).
* ``latency=MS``: the ticket, converted to structured form, should run in MS milliseconds per batch
  on ``--budget-runtime`` at ``--budget-batch`` with ``--budget-threads`` (a per-layer latency table
  measured at search start, sparsekit/bench/latency_table.py). Channel granularity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsekit.errors import UsageError

KINDS = ("params", "macs", "latency")
#: runtimes a latency table can be measured on (sparsekit/bench/latency_table.py)
LATENCY_RUNTIMES = ("ort-cpu", "torch-cpu", "openvino-cpu")


@dataclass(frozen=True)
class Budget:
    """A parsed ``--budget``: ``kind`` and ``value`` (fraction kept, or milliseconds for latency)."""

    kind: str
    value: float
    runtime: str = "ort-cpu"
    batch: int = 1
    threads: int = 1

    def describe(self) -> str:
        if self.kind == "latency":
            return f"latency={self.value:g} ms ({self.runtime}, batch {self.batch}, {self.threads} thread(s))"
        return f"{self.kind}={self.value:g}"

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "value": self.value}
        if self.kind == "latency":
            d.update(runtime=self.runtime, batch=self.batch, threads=self.threads)
        return d


def parse_budget(text: str, runtime: str = "ort-cpu", batch: int = 1, threads: int = 1) -> Budget:
    """Parse ``KIND=VALUE``.

    Example:
        >>> parse_budget("macs=0.25")
        Budget(kind='macs', value=0.25, runtime='ort-cpu', batch=1, threads=1)
    """
    kind, sep, raw = str(text).partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise UsageError(f"--budget must be params=F, macs=F or latency=MS, got {text!r}")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--budget {kind}= needs a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--budget {kind}= must be a positive number, got {raw!r}")
    if kind != "latency" and value > 1:
        raise UsageError(f"--budget {kind}={raw} is the fraction kept: give 0 < F <= 1")
    if kind == "latency" and runtime not in LATENCY_RUNTIMES:
        raise UsageError(f"--budget-runtime must be one of {', '.join(LATENCY_RUNTIMES)} for a latency budget, "
                         f"got {runtime!r}")
    if batch < 1 or threads < 1:
        raise UsageError("--budget-batch and --budget-threads must be >= 1")
    return Budget(kind, value, runtime, batch, threads)


def search_budget(text: str | None, granularity: str, runtime: str = "ort-cpu", batch: int = 1,
                  threads: int = 1) -> Budget | None:
    """The Budget a search selects against, or None when it is a count: no ``--budget``, or
    ``params=`` at weight granularity (exactly ``--sparsity 1-F``)."""
    if text is None:
        return None
    budget = parse_budget(text, runtime, batch, threads)
    return None if budget.kind == "params" and granularity == "weight" else budget
