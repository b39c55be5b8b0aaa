"""The lab's decision rule: lexicographic criteria with tolerances, and what a choice costs."""

from __future__ import annotations

import pytest

from cachewise.errors import ConfigurationError
from cachewise.lab.objective import Criterion, Objective, alternatives, cost, decide


def metrics(**values: float) -> dict[str, float]:
    base = {
        "hit_ratio": 0.5,
        "source_reads": 100,
        "source_writes": 100,
        "read_p50_us": 10.0,
        "read_p99_us": 50.0,
        "write_p50_us": 100.0,
        "write_p99_us": 500.0,
        "stale_reads": 0,
        "lost_writes": 0,
        "app_calls": 1000,
        "cache_ops": 100,
        "evictions": 0,
    }
    base.update(values)
    return base


def test_first_criterion_beyond_tolerance_eliminates() -> None:
    results = {"a": metrics(source_writes=4100), "b": metrics(source_writes=100)}
    objective = Objective((Criterion("source_writes", rel=0.2),), "writes")
    decision = decide(results, objective, ["a", "b"])
    assert decision.winner == "b"
    assert decision.runner_up == "a"
    assert "source writes" in decision.reasons["a"]
    assert cost(results, objective, "b", "a") == "41× more source writes"


def test_within_tolerance_the_next_criterion_decides() -> None:
    results = {
        "a": metrics(source_writes=110, lost_writes=5),
        "b": metrics(source_writes=100, lost_writes=0),
        "c": metrics(source_writes=105, lost_writes=0, app_calls=900),
    }
    objective = Objective(
        (Criterion("source_writes", rel=0.2), Criterion("lost_writes"), Criterion("app_calls")),
        "",
    )
    decision = decide(results, objective, ["a", "b", "c"])
    assert decision.ranking == ["c", "b", "a"]
    assert cost(results, objective, "c", "a") == "5 lost writes vs none"


def test_max_goal_prefers_the_higher_value() -> None:
    results = {"a": metrics(hit_ratio=0.9), "b": metrics(hit_ratio=0.4)}
    objective = Objective((Criterion("hit_ratio", goal="max", rel=0.05),), "")
    decision = decide(results, objective, ["b", "a"])
    assert decision.winner == "a"
    assert cost(results, objective, "a", "b") == "hit ratio 40% vs 90%"


def test_remaining_ties_use_exact_counts_before_latency() -> None:
    # b is faster by a hair (noise), a makes fewer application calls (a count).
    results = {
        "a": metrics(read_p50_us=11.0, app_calls=1000),
        "b": metrics(read_p50_us=10.0, app_calls=1010),
    }
    objective = Objective((Criterion("read_p50_us", rel=1.0), Criterion("app_calls", rel=0.05)), "")
    assert decide(results, objective, ["b", "a"]).winner == "a"
    assert cost(results, objective, "a", "b") == (
        "+1% app calls (within tolerance; breaks the tie)"
    )


def test_exact_tie_keeps_the_declared_order_and_says_so() -> None:
    results = {"a": metrics(), "b": metrics()}
    objective = Objective((Criterion("source_reads"),), "")
    decision = decide(results, objective, ["b", "a"])
    assert decision.winner == "b"
    assert "ties on every criterion" in cost(results, objective, "b", "a")


def test_bad_objectives_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        Criterion("speed")
    with pytest.raises(ConfigurationError):
        Criterion("source_reads", rel=-1)
    with pytest.raises(ConfigurationError):
        decide({}, Objective((Criterion("source_reads"),), ""), [])


def test_alternatives_name_the_best_of_each_other_family() -> None:
    results = {
        "rt+wb": metrics(source_writes=10),
        "ca+wb": metrics(source_writes=10, app_calls=1100),
        "rt+wt": metrics(source_writes=410),
        "ca+wt": metrics(source_writes=410, app_calls=1100),
    }
    objective = Objective((Criterion("source_writes", rel=0.2), Criterion("app_calls")), "")
    decision = decide(results, objective, list(results))
    family = {s: s.partition("+")[2] for s in results}
    assert alternatives(results, objective, decision, family) == [
        ("rt+wt", "41× more source writes")
    ]
