"""Where a latency budget's tables come from.

A latency table is measured on a runtime, so the measuring code lives in ``sparsekit.bench``
(``latency_table``: dense runtimes, time vs kept channel widths; ``engine_table``: sparse-cpu, time vs
layer density). The pipeline calls ``prepare`` once per run and hands the ``LatencySource`` to the
search (``SearchContext.latency``); methods and masking only call its two methods, so they never
import ``sparsekit.bench``.

``PROVIDERS`` names, per runtime, the bench class that measures it; it is imported when a run
asks for that runtime (the way ``sparsekit.__init__`` resolves its public names), which keeps this
package below ``sparsekit.bench`` in the import layers.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from sparsekit.cost.budget import LATENCY_RUNTIMES, Budget
from sparsekit.errors import UsageError

#: runtime -> "module:class" of the LatencySource measuring it
PROVIDERS = {
    "ort-cpu": "sparsekit.bench.latency_table:ChannelLatencySource",
    "torch-cpu": "sparsekit.bench.latency_table:ChannelLatencySource",
    "openvino-cpu": "sparsekit.bench.latency_table:ChannelLatencySource",
    "sparse-cpu": "sparsekit.bench.engine_table:EngineLatencySource",
}


class LatencySource(Protocol):
    """Measured latency models of one budget's runtime, batch and threads."""

    budget: Budget

    def for_units(self, space: Any, model: Any) -> Any:
        """A channel ticket's cost model over a UnitSpace (``expected``/``exact``/``measure(keep)``)."""

    def for_weights(self, model: Any, names: list[str], in_shape: tuple[int, ...]) -> Any:
        """An unstructured ticket's ``EngineLatency`` (calibrated, with ``measure(mask)``)."""


def prepare(budget: Budget, run_dir: str | Path | None = None) -> LatencySource:
    """The LatencySource of ``budget``'s runtime (tables cached in ``run_dir`` or the user cache)."""
    if budget.kind != "latency":
        raise UsageError(f"a {budget.kind} budget has no latency table")
    spec = PROVIDERS.get(budget.runtime)
    if spec is None:
        raise UsageError(f"--budget-runtime must be one of {', '.join(LATENCY_RUNTIMES)} for a latency budget, "
                         f"got {budget.runtime!r}")
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)(budget, run_dir)
