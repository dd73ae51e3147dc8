"""Fixed-bucket histograms, cheap enough to observe on the per-message path (pure).

`Histogram.observe` is one bisect and two adds. The feeds time every update frame
with one (exchange -> receive latency), the writer every batch; metrics.py renders
them at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Exchange -> receive latency in whole milliseconds (timestampms has no finer grain).
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
# One writer batch, in seconds.
WRITE_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Fixed buckets, plain counts: cheap enough to observe every frame.

    `observe(v)` puts `v` in the first bucket whose bound is >= v (Prometheus' `le`)
    and adds it to the sum; negative values (clocks apart) count in the first bucket
    and add nothing to the sum. `scale` converts to the exposed unit (ms -> s: 0.001).
    Only the event-loop thread may observe, so no lock is needed.
    """

    __slots__ = ("bounds", "counts", "scale", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS_MS, scale: float = 0.001) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum: float = 0
        self.scale = scale

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        if value > 0:
            self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, cumulative count)], ending with ("+Inf", count), bounds in the exposed unit."""
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append((_float_text(bound * self.scale), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out


def _float_text(value: float) -> str:
    return repr(round(value, 9))
