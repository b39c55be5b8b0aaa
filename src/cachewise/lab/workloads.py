"""Seeded workload generators: key popularity, read/write mix, bursts and value sizes.

A workload is a plain list of operations computed up front from a seed, so every
strategy of a case runs the very same operations in the same order. Each operation
carries the version the history expects: a write carries the version it creates, a
read the version of the last write acknowledged before it. The runner checks every
value a read returns against that version, which is how stale reads are counted.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Literal

OpKind = Literal["read", "write", "direct", "burst", "race"]


@dataclass(frozen=True)
class Op:
    """One operation of a workload.

    ``read``: the application reads ``key`` through its strategy. ``write``: it writes
    ``version`` of ``key``. ``direct``: another system reads the database directly
    (not through the cache). ``burst``: ``fan_out`` readers read ``key`` at once.
    ``race``: a read of ``key`` whose database query is still running when a write of
    ``version`` is acknowledged (two users, one record).
    """

    kind: OpKind
    table: str
    key: str
    version: int
    """Write/race: the version written. Read/direct/burst: the version expected."""
    size: int = 0
    group: str = ""
    fan_out: int = 1


@dataclass
class Workload:
    """The operations of one run plus the rows the database holds before it starts."""

    tables: tuple[str, ...]
    seed_rows: dict[str, list[Op]] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    flush_every: int = 500
    """Write-back persists every ``flush_every`` operations: the workload's clock."""

    @property
    def writes(self) -> int:
        """Writes in the workload (race operations include one write)."""
        return sum(1 for op in self.ops if op.kind in ("write", "race"))

    @property
    def reads(self) -> int:
        """Reads the application makes through its strategy (bursts count each reader)."""
        return sum(op.fan_out if op.kind == "burst" else 1 for op in self.ops if op.kind != "write")


class Zipf:
    """Draw ranks 0..n-1 with probability proportional to 1 / (rank + 1) ** s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if n < 1:
            raise ValueError(f"Zipf needs n >= 1, got {n}")
        weights = [1.0 / (rank + 1) ** s for rank in range(n)]
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]
        self._rng = rng
        # Popular keys are spread over the key space, not the first n ids.
        self._order = list(range(n))
        rng.shuffle(self._order)

    def draw(self) -> int:
        """One key index, popular ones more often."""
        point = self._rng.random() * self._total
        return self._order[min(bisect.bisect_left(self._cumulative, point), len(self._order) - 1)]


def value_size(rng: random.Random, mean: int) -> int:
    """A value size around ``mean`` bytes with a long tail (log-normal, sigma 0.5)."""
    mu = math.log(max(mean, 1)) - 0.125
    return max(1, min(int(rng.lognormvariate(mu, 0.5)), mean * 8))


class History:
    """Builds operations while tracking each key's acknowledged version."""

    def __init__(self, tables: tuple[str, ...], flush_every: int) -> None:
        self.workload = Workload(tables=tables, flush_every=flush_every)
        self._versions: dict[tuple[str, str], int] = {}

    def version(self, table: str, key: str) -> int:
        """The last version written of ``key`` (0: never written)."""
        return self._versions.get((table, key), 0)

    def seed(self, table: str, key: str, size: int, group: str = "", version: int = 1) -> None:
        """A row the database holds before the run (at ``version``, 1 unless said)."""
        self._versions[(table, key)] = version
        op = Op("write", table, key, version, size, group)
        self.workload.seed_rows.setdefault(table, []).append(op)

    def write(self, table: str, key: str, size: int, group: str = "") -> Op:
        """Append a write of the next version of ``key``."""
        version = self.version(table, key) + 1
        self._versions[(table, key)] = version
        op = Op("write", table, key, version, size, group)
        self.workload.ops.append(op)
        return op

    def read(self, table: str, key: str, kind: OpKind = "read", fan_out: int = 1) -> Op:
        """Append a read (or direct read, or burst) expecting the current version."""
        op = Op(kind, table, key, self.version(table, key), fan_out=fan_out)
        self.workload.ops.append(op)
        return op

    def race(self, table: str, key: str, size: int) -> Op:
        """Append a read that overlaps a write of the next version of ``key``."""
        version = self.version(table, key) + 1
        self._versions[(table, key)] = version
        op = Op("race", table, key, version, size)
        self.workload.ops.append(op)
        return op
