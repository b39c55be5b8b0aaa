"""The measured metrics as report columns: one list for the terminal and the HTML report.

Every metric an objective can cite has a column, so a "why not" reason always points
at a number the reader can see. The columns a kind's objective decides by come first,
in its priority order: where a narrow terminal stacks the table, they are on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachewise.lab.objective import Objective


@dataclass(frozen=True)
class Column:
    """One metric: its short header, its unit, how a value is shown."""

    metric: str
    header: str
    unit: str = ""

    @property
    def label(self) -> str:
        """The header with its unit, as the terminal shows it (``read p50 µs``)."""
        return f"{self.header} {self.unit}" if self.unit else self.header

    def cell(self, value: float) -> str:
        """``value`` as the report prints it (a percentage, microseconds or a count)."""
        if self.metric == "hit_ratio":
            return f"{value:.0%}"
        if self.unit == "µs":
            return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
        return f"{int(value):,}"


COLUMNS: tuple[Column, ...] = (
    Column("hit_ratio", "hit"),
    Column("source_reads", "src reads"),
    Column("source_writes", "src writes"),
    Column("read_p50_us", "read p50", "µs"),
    Column("read_p99_us", "read p99", "µs"),
    Column("write_p50_us", "write p50", "µs"),
    Column("write_p99_us", "write p99", "µs"),
    Column("stale_reads", "stale"),
    Column("lost_writes", "lost"),
    Column("app_calls", "app calls"),
    Column("cache_ops", "cache ops"),
    Column("evictions", "evict"),
)


def for_objective(objective: Objective) -> list[Column]:
    """Every column, the ones ``objective`` decides by first (in its priority order)."""
    by_metric = {c.metric: c for c in COLUMNS}
    first = list(dict.fromkeys(c.metric for c in objective.criteria))
    return [by_metric[m] for m in first] + [c for c in COLUMNS if c.metric not in first]
