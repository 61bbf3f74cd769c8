"""Latency statistics: percentiles, a bootstrap interval of a p50 ratio, and the verdict it allows.

A speed-up is the ratio of two medians (reference p50 / candidate p50) of per-block median latencies.
Its 95 % interval comes from a two-level bootstrap: resample the measurement PROCESSES with
replacement, then the blocks within each drawn process, so process-to-process variation (where the
allocator put things, which core, the machine's load) widens the interval as it should. A ratio
whose interval contains 1.0 is "no measurable difference", never faster or slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: bootstrap resamples per interval (2,000 keeps the 2.5 % tails stable to about +-1 %)
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95

FASTER, SLOWER, SAME = "faster", "slower", "no measurable difference"


def percentiles_ms(calls_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 of per-call latencies given in seconds, returned in milliseconds."""
    ms = np.asarray(calls_s, dtype=np.float64) * 1e3
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}


def pooled_median(blocks_by_process: Sequence[Sequence[float]]) -> float:
    return float(np.median(np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks_by_process])))


def _resampled_medians(blocks_by_process: Sequence[Sequence[float]], rng: np.random.Generator,
                       n: int) -> np.ndarray:
    """n bootstrap medians: draw len(procs) processes with replacement, then blocks within each."""
    procs = [np.asarray(b, dtype=np.float64) for b in blocks_by_process if len(b)]
    lens = np.array([len(p) for p in procs])
    width = int(lens.max())
    padded = np.full((len(procs), width), np.nan)  # (process, block), NaN past each process's end
    for j, p in enumerate(procs):
        padded[j, : len(p)] = p
    slots = []
    for _ in range(len(procs)):
        pj = rng.integers(0, len(procs), n)                                   # (n,) drawn process
        idx = np.floor(rng.random((n, width)) * lens[pj][:, None]).astype(int)  # (n, width) blocks
        vals = padded[pj[:, None], idx]
        vals[np.arange(width)[None, :] >= lens[pj][:, None]] = np.nan  # a draw has its process's size
        slots.append(vals)
    return np.nanmedian(np.concatenate(slots, axis=1), axis=1)


def ratio_interval(reference: Sequence[Sequence[float]], candidate: Sequence[Sequence[float]],
                   seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """(point, low, high): reference p50 / candidate p50 and its bootstrap interval.

    Each argument holds one list of block medians per measurement process.

    Example:
        >>> ratio_interval([[2.0, 2.1, 1.9]] * 3, [[1.0, 1.05, 0.95]] * 3)[0]
        2.0
    """
    point = pooled_median(reference) / pooled_median(candidate)
    rng = np.random.default_rng(seed)
    ratios = _resampled_medians(reference, rng, resamples) / _resampled_medians(candidate, rng, resamples)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return point, float(low), float(high)


def verdict(low: float | None, high: float | None) -> str | None:
    """faster / slower only when the whole interval is on one side of 1.0."""
    if low is None or high is None:
        return None
    if low > 1.0:
        return FASTER
    if high < 1.0:
        return SLOWER
    return SAME
