"""A case's priorities as an explicit objective, and the recommendation computed from it.

An objective is an ordered list of criteria, each a measured metric to minimise or
maximise with a tolerance. Candidates are compared lexicographically: at each
criterion, every candidate further than the tolerance from the best still standing is
eliminated; the tolerance is what makes "about as good" a tie that the next criterion
decides (latencies vary run to run, so they get wide tolerances; counts are exact).
The winner is the last one standing; nothing about which strategy should win is
written anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cachewise.errors import ConfigurationError

LABELS: dict[str, str] = {
    "hit_ratio": "hit ratio",
    "source_reads": "source reads",
    "source_writes": "source writes",
    "read_p50_us": "read p50 latency",
    "read_p99_us": "read p99 latency",
    "write_p50_us": "write p50 latency",
    "write_p99_us": "write p99 latency",
    "stale_reads": "stale reads",
    "lost_writes": "lost writes",
    "app_calls": "app calls",
    "cache_ops": "cache sets/deletes",
    "evictions": "evictions",
}


@dataclass(frozen=True)
class Criterion:
    """One priority: a metric, its direction and how close to the best counts as a tie."""

    metric: str
    goal: Literal["min", "max"] = "min"
    rel: float = 0.0
    """Tolerance as a fraction of the best value."""
    abs: float = 0.0
    """Tolerance in the metric's own unit."""

    def __post_init__(self) -> None:
        if self.metric not in LABELS:
            raise ConfigurationError(f"unknown metric {self.metric!r}; one of {sorted(LABELS)}")
        if self.rel < 0 or self.abs < 0:
            raise ConfigurationError("tolerances must be >= 0")

    def ok(self, value: float, best: float) -> bool:
        """Whether ``value`` is within tolerance of ``best``."""
        if self.goal == "min":
            return value <= best * (1.0 + self.rel) + self.abs
        return value >= best * (1.0 - self.rel) - self.abs

    def excess(self, value: float, best: float) -> float:
        """How much worse than ``best``, relative (0 when as good)."""
        gap = value - best if self.goal == "min" else best - value
        return max(0.0, gap) / max(abs(best), 1e-9)

    def describe(self) -> str:
        """E.g. ``source writes (min, ±20%)``."""
        tol = []
        if self.rel:
            tol.append(f"±{self.rel:.0%}")
        if self.abs:
            unit = " µs" if self.metric.endswith("_us") else ""
            tol.append(f"±{self.abs:g}{unit}")
        spec = ", ".join([self.goal, *tol])
        return f"{LABELS[self.metric]} ({spec})"


@dataclass(frozen=True)
class Objective:
    """Ordered criteria plus the sentence the case states them in."""

    criteria: tuple[Criterion, ...]
    summary: str

    def describe(self) -> str:
        """The criteria in priority order."""
        return " > ".join(c.describe() for c in self.criteria)


@dataclass
class Decision:
    """The ranking a measured objective produces, and why."""

    ranking: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    """For each eliminated strategy, the criterion that eliminated it."""

    @property
    def winner(self) -> str:
        """The recommended strategy."""
        return self.ranking[0]

    @property
    def runner_up(self) -> str | None:
        """Second best, if there were two candidates."""
        return self.ranking[1] if len(self.ranking) > 1 else None


Metrics = Mapping[str, Mapping[str, float]]


def decide(results: Metrics, objective: Objective, order: Sequence[str]) -> Decision:
    """Rank the strategies of ``order`` (all measured in ``results``) by ``objective``."""
    if not order:
        raise ConfigurationError("no candidate strategies to decide between")
    alive = list(order)
    stage: dict[str, tuple[int, float]] = {}
    reasons: dict[str, str] = {}
    for index, crit in enumerate(objective.criteria):
        values = {s: float(results[s][crit.metric]) for s in alive}
        best = min(values.values()) if crit.goal == "min" else max(values.values())
        keep = [s for s in alive if crit.ok(values[s], best)]
        for s in alive:
            if s not in keep:
                stage[s] = (index, crit.excess(values[s], best))
                shown = f"{_fmt(crit.metric, values[s])} vs {_fmt(crit.metric, best)}"
                reasons[s] = f"{LABELS[crit.metric]} {shown}"
        alive = keep

    # Remaining ties: the exact counts first (repeatable), then the latencies (noisy).
    ranked = sorted(objective.criteria, key=lambda c: c.metric.endswith("_us"))

    def survivor_key(s: str) -> tuple[float, ...]:
        vals = [(1.0 if c.goal == "min" else -1.0) * float(results[s][c.metric]) for c in ranked]
        return (*vals, float(order.index(s)))

    survivors = sorted(alive, key=survivor_key)
    out = sorted(stage, key=lambda s: (-stage[s][0], stage[s][1], order.index(s)))
    return Decision(ranking=survivors + out, reasons=reasons)


def deciding(
    results: Metrics, objective: Objective, winner: str, other: str
) -> tuple[Criterion, bool] | None:
    """The criterion that put ``winner`` ahead of ``other``, and whether it was decisive.

    Decisive: ``other`` is outside the tolerance there. Otherwise the tie-breaker ``decide``
    used (counts before latencies), flagged not decisive. ``None`` when ``other`` is as
    good on every criterion (the earlier candidate was kept).
    """
    worse: list[Criterion] = []
    for crit in objective.criteria:
        mine = float(results[winner][crit.metric])
        theirs = float(results[other][crit.metric])
        if theirs > mine if crit.goal == "min" else theirs < mine:
            if not crit.ok(theirs, mine):
                return crit, True
            worse.append(crit)
    if not worse:
        return None
    return min(worse, key=lambda c: c.metric.endswith("_us")), False


def cost(results: Metrics, objective: Objective, winner: str, other: str) -> str:
    """What choosing ``other`` instead of ``winner`` costs.

    The criterion that eliminated ``other``; if it survived every criterion, the one
    that broke the tie (counts before latencies, as ``decide`` does).
    """
    found = deciding(results, objective, winner, other)
    if found is None:
        return "ties on every criterion (kept the earlier candidate)"
    crit, decisive = found
    text = _compare(
        crit.metric, float(results[winner][crit.metric]), float(results[other][crit.metric])
    )
    return text if decisive else f"{text} (within tolerance; breaks the tie)"


def _compare(metric: str, mine: float, theirs: float) -> str:
    label = LABELS[metric]
    if metric == "hit_ratio":
        return f"{label} {theirs:.0%} vs {mine:.0%}"
    if mine <= 0:
        return f"{_fmt(metric, theirs)} {label} vs none"
    ratio = theirs / mine
    if ratio >= 1.5:
        return f"{ratio:.1f}× more {label}" if ratio < 10 else f"{ratio:.0f}× more {label}"
    return f"{(ratio - 1.0):+.0%} {label}"


def _fmt(metric: str, value: float) -> str:
    if metric == "hit_ratio":
        return f"{value:.0%}"
    if metric.endswith("_us"):
        return f"{value:.0f} µs"
    return f"{value:g}"


def alternatives(
    results: Metrics, objective: Objective, decision: Decision, family: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The best strategy of each other family (e.g. write policy) and what it costs.

    E.g. ``("read-through+write-through", "2.7× more source writes")``.
    """
    winner = decision.winner
    seen = {family.get(winner, winner)}
    out = []
    for strategy in decision.ranking[1:]:
        name = family.get(strategy, strategy)
        if name in seen:
            continue
        seen.add(name)
        out.append((strategy, cost(results, objective, winner, strategy)))
    return out
