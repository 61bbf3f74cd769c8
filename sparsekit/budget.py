"""Moved to ``sparsekit.cost.budget`` (this module re-exports it so old imports keep working)."""

from sparsekit.cost.budget import (  # noqa: F401
    CHANNEL_LATENCY_RUNTIMES,
    KINDS,
    LATENCY_RUNTIMES,
    WEIGHT_LATENCY_RUNTIMES,
    Budget,
    check_granularity,
    for_search,
    is_weight_latency,
    parse_budget,
    search_budget,
)
