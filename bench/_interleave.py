"""Timing shared by the in-process benchmarks: candidates interleaved round by round.

Each round times every candidate over the same keys, starting from a different one
each round so none always runs first (warm caches, turbo states); the bare loop's
cost is subtracted and the median of the rounds is kept.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any


def _time(fn: Callable[[Any], Any], keys: list[Any]) -> float:
    start = time.perf_counter()
    for key in keys:
        fn(key)
    return time.perf_counter() - start


def _loop(keys: list[Any]) -> float:
    start = time.perf_counter()
    for _key in keys:
        pass
    return time.perf_counter() - start


def median_ns(
    fns: Mapping[str, Callable[[Any], Any]], keys: list[Any], rounds: int
) -> dict[str, float]:
    """Nanoseconds per call of each candidate over ``keys``: median of ``rounds``."""
    names = list(fns)
    timings: dict[str, list[float]] = {}
    for round_no in range(rounds):
        base = _loop(keys)
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            elapsed = _time(fns[name], keys) - base
            timings.setdefault(name, []).append(elapsed / len(keys) * 1e9)
    return {name: statistics.median(ns) for name, ns in timings.items()}
