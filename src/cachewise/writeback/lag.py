"""Write-back lag: how long acknowledged writes wait for the source, pure and without I/O.

The lag of a write is the time from its acknowledgement to the commit of the flush that
wrote it, or wrote a later write of its key (which supersedes it). A runtime records
samples as flushes commit; :meth:`LagWindow.summary` gives p50, p99 and max over the
samples of the last ``window`` seconds (at most ``size`` of them, newest kept).

Two kinds of sample feed it. *Write* samples are individual writes' lags (the in-process
runtime samples every 16th write by sequence number, an unbiased sample of writes) and
make the percentiles. *Bound* samples are each flushed batch's oldest write: the largest
lag in it, so ``max`` is exact even between write samples (and the percentiles fall back
to them when no write sample is in the window). A runtime that cannot follow single
writes (the shared one: other processes write) records one write sample per flushed key
instead, its oldest covered write: its percentiles are per flushed key.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

SAMPLE_EVERY: Final = 16
"""The in-process runtime follows writes whose sequence is a multiple of this."""

PENDING_LIMIT: Final = 10_000
"""Followed writes not yet flushed, at most: an outage stops sampling, not memory."""


@dataclass(frozen=True, slots=True)
class LagSummary:
    """Write-back lag over the recent window, in seconds (0.0 without samples)."""

    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    samples: int = 0


def _quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of a sorted, non-empty list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class LagWindow:
    """Recent lag samples; not thread-safe (a runtime adds and reads under its lock)."""

    def __init__(self, window: float = 60.0, size: int = 4096) -> None:
        self.window = window
        self._writes: deque[tuple[float, float]] = deque(maxlen=size)
        self._bounds: deque[tuple[float, float]] = deque(maxlen=size)

    def add(self, committed: float, lag: float) -> None:
        """One write's lag, its flush committed at ``committed``."""
        self._writes.append((committed, lag))

    def add_bound(self, committed: float, lag: float) -> None:
        """The oldest write a flushed key covered: the largest lag of its flush."""
        self._bounds.append((committed, lag))

    def summary(self, now: float) -> LagSummary:
        """p50, p99 and max of the samples committed in the last ``window`` seconds."""
        horizon = now - self.window
        for samples in (self._writes, self._bounds):
            while samples and samples[0][0] < horizon:
                samples.popleft()
        bounds = [lag for _, lag in self._bounds]
        ordered = sorted(lag for _, lag in self._writes) or sorted(bounds)
        if not ordered:
            return LagSummary()
        return LagSummary(
            p50=_quantile(ordered, 0.50),
            p99=_quantile(ordered, 0.99),
            max=max(ordered[-1], max(bounds, default=0.0)),
            samples=len(ordered),
        )
