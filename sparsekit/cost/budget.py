"""What a ticket may cost: ``--budget params=F | macs=F | latency=MS`` (or the plain ``--sparsity``).

* ``params=F``: keep a fraction F of the prunable weights. At weight granularity this is exactly
  ``--sparsity 1-F``; at channel granularity it counts the weights left after structured removal
  (the rows of removed channels and the input columns their consumers lose), where ``--sparsity``
  keeps its meaning of a fraction of channels removed.
* ``macs=F``: keep a fraction F of the dense model's multiply-accumulates per sample (whole model:
  Conv/Linear layers after removal plus the constant MACs of other matrix products). Channel
  granularity (a weight mask does not change what a dense runtime executes).
* ``latency=MS``: the ticket should run in MS milliseconds per batch on ``--budget-runtime`` at
  ``--budget-batch`` with ``--budget-threads``. Channel granularity on a dense runtime (ort-cpu,
  torch-cpu, openvino-cpu: the ticket converted to structured form, per-layer table of time vs kept
  widths, sparsekit/bench/latency_table.py); weight granularity on ``sparse-cpu`` (the masked ticket
  on the engine, per-layer table of time vs density, sparsekit/bench/engine_table.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsekit.errors import UsageError

KINDS = ("params", "macs", "latency")
#: dense runtimes a channel ticket's latency table can be measured on (sparsekit/bench/latency_table.py)
CHANNEL_LATENCY_RUNTIMES = ("ort-cpu", "torch-cpu", "openvino-cpu")
#: the sparse engine an unstructured ticket's latency table is measured on (sparsekit/bench/engine_table.py)
WEIGHT_LATENCY_RUNTIMES = ("sparse-cpu",)
LATENCY_RUNTIMES = CHANNEL_LATENCY_RUNTIMES + WEIGHT_LATENCY_RUNTIMES


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


def check_granularity(budget: Budget | None, granularity: str) -> None:
    """Refuse a budget the granularity cannot spend: MACs and dense-runtime latency remove whole
    channels (a weight mask does not change what a dense runtime executes); sparse-cpu latency
    times unstructured tickets."""
    if budget is None:
        return
    if granularity != "channel" and (budget.kind == "macs" or
                                      (budget.kind == "latency" and budget.runtime not in WEIGHT_LATENCY_RUNTIMES)):
        on = f" on {budget.runtime}" if budget.kind == "latency" else ""
        raise UsageError(f"--budget {budget.kind}={budget.value:g}{on} removes whole channels: it needs --granularity "
                         "channel (a weight mask does not change what a dense runtime executes"
                         + ("; --budget-runtime sparse-cpu times unstructured tickets)" if on else ")"))
    if granularity == "channel" and budget.kind == "latency" and budget.runtime in WEIGHT_LATENCY_RUNTIMES:
        raise UsageError(f"--budget-runtime {budget.runtime} times unstructured tickets: use --granularity weight "
                         f"(channel tickets: --budget-runtime {', '.join(CHANNEL_LATENCY_RUNTIMES)})")


def for_search(budget: Budget | None, granularity: str) -> Budget | None:
    """The Budget a search selects against, or None when it is a count: no budget, or ``params=`` at
    weight granularity (exactly ``--sparsity 1-F``)."""
    return None if budget is None or (budget.kind == "params" and granularity == "weight") else budget


def search_budget(text: str | None, granularity: str, runtime: str = "ort-cpu", batch: int = 1,
                  threads: int = 1) -> Budget | None:
    """``for_search`` of the budget ``text`` (None: no ``--budget``)."""
    return None if text is None else for_search(parse_budget(text, runtime, batch, threads), granularity)


def is_weight_latency(budget: Budget | None, granularity: str) -> bool:
    """True for a latency budget on the sparse engine at weight granularity."""
    return (budget is not None and budget.kind == "latency" and granularity == "weight"
            and budget.runtime in WEIGHT_LATENCY_RUNTIMES)
