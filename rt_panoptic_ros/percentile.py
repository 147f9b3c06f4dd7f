"""One percentile rule for every latency the package reports: the node's diagnostics, the
benchmarks and the demo (``latency_p50_ms``, ``p90_ms``, ...), so that their numbers compare."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank rule: the smallest value with at
    least ``q`` % of the values at or below it (an actual sample, never interpolated).

    Returns:
        ``nan`` for no values.

    Example:
        >>> percentile(range(1, 11), 90), percentile(range(1, 11), 50), percentile([], 50)
        (9, 5, nan)
    """
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = math.ceil(q * len(ordered) / 100)  # q * n first: exact for whole percentages
    return ordered[min(len(ordered), max(1, rank)) - 1]
