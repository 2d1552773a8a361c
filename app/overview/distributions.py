"""Quantiles of a histogram's buckets, as Prometheus's histogram_quantile reads them: linear
within the bucket the rank falls in, the top bound for the bucket above it. Pure."""

from __future__ import annotations

from collections.abc import Sequence


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The `q` quantile of observations counted per bucket (`counts[i]` in
    (bounds[i - 1], bounds[i]], the last one above every bound); None with none."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])
