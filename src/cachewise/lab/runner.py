"""Runs every candidate strategy of a case on the same workload and measures each.

One run = fresh tables with the seed rows, a fresh shared store, one ``App`` per
table, the workload's operations in order (bursts and races use real threads), a
write-back flush every ``flush_every`` operations, then the counts. Lost writes come
from ``crash.py``: a child process is SIGKILLed mid-run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from cachewise.lab import crash
from cachewise.lab.assemble import (
    Environment,
    build_apps,
    make_sources,
    make_store,
    strategies_for,
)
from cachewise.lab.database import create_tables, drop_tables, row, table_names
from cachewise.lab.metrics import CountingSource, PausePoint, Recorder, is_stale
from cachewise.lab.objective import Decision, cost, decide
from cachewise.lab.scenario import Case, Kind, Scenario
from cachewise.lab.strategies import App
from cachewise.lab.workloads import Op

Progress = Callable[[], None]


def run_strategy(
    env: Environment, scenario: Scenario, kind: Kind, strategy: str, *, journal: bool = False
) -> dict[str, float]:
    """Run ``strategy`` on the kind's table over the whole workload; return its metrics.

    With ``journal=True`` (write-back) the loss is also measured with a journal,
    fsync="always", as ``journal_lost_writes``.
    """
    # The crash children run alongside this run (its own database file for SQLite).
    crashes: list[crash.Pending] = []
    if env.kill:
        crashes.append(crash.start(env, scenario, kind, strategy))
        if journal:
            crashes.append(crash.start(env, scenario, kind, strategy, journal=True))
    try:
        metrics = _measure(env, scenario, kind, strategy)
    except BaseException:
        for pending in crashes:
            pending.abort()
        raise
    losses = [pending.finish() for pending in crashes]
    if losses:
        metrics["lost_writes"] = losses[0]
    if len(losses) > 1:
        metrics["journal_lost_writes"] = losses[1]
    return metrics


def _measure(env: Environment, scenario: Scenario, kind: Kind, strategy: str) -> dict[str, float]:
    workload = scenario.workload
    engine = env.database.engine()
    names = table_names(workload.tables)
    store = make_store(env, scenario)
    apps: dict[str, App] = {}
    try:
        create_tables(engine, names, workload.seed_rows)
        plan = strategies_for(kind, scenario, strategy)
        counted = make_sources(engine, names, scenario, plan)
        apps = build_apps(scenario, plan, store, counted)
        rec = Recorder()
        fan_out = max((op.fan_out for op in workload.ops), default=1)
        with ThreadPoolExecutor(max_workers=max(2, fan_out)) as pool:
            for index, op in enumerate(workload.ops, 1):
                execute(op, apps, counted, rec, pool)
                if index % workload.flush_every == 0:
                    for app in apps.values():
                        app.flush()
        for app in apps.values():
            app.close()
        apps = {}
        cache_loads = sum(c.reads for c in counted.values())
        evictions = getattr(store, "evictions", 0)
        metrics: dict[str, float] = {
            "hit_ratio": 1.0 - cache_loads / rec.cache_reads if rec.cache_reads else 0.0,
            "source_reads": cache_loads,
            "source_writes": sum(c.writes for c in counted.values()),
            "read_p50_us": rec.latency_us(kind.table, 0.50)[0],
            "read_p99_us": rec.latency_us(kind.table, 0.99)[0],
            "write_p50_us": rec.latency_us(kind.table, 0.50)[1],
            "write_p99_us": rec.latency_us(kind.table, 0.99)[1],
            "stale_reads": rec.stale_reads,
            "lost_writes": 0,
            "app_calls": rec.app_calls,
            "cache_ops": store.ops.value,
            "evictions": evictions,
        }
    finally:
        # Each step runs even if one before it fails (a store whose server went away must
        # not leave the database's tables and connections behind).
        with ExitStack() as cleanup:
            cleanup.callback(engine.dispose)
            cleanup.callback(drop_tables, engine, names)
            cleanup.callback(store.shutdown)
            for app in apps.values():
                cleanup.callback(app.close)
    return metrics


def execute(
    op: Op,
    apps: dict[str, App],
    counted: dict[str, CountingSource],
    rec: Recorder,
    pool: ThreadPoolExecutor,
) -> None:
    """Carry out one operation of the workload, recording what it costs."""
    app = apps[op.table]
    clock = time.perf_counter_ns
    if op.kind == "write":
        start = clock()
        calls = app.write(op.key, row(op))
        rec.write(op.table, clock() - start, calls)
    elif op.kind == "read":
        start = clock()
        value, calls = app.read(op.key)
        rec.read(op.table, clock() - start, is_stale(value, op.version), calls)
    elif op.kind == "direct":
        # Another system reads the database itself (not through the cache).
        if is_stale(_plain(counted[op.table].inner.load(op.key)), op.version):
            rec.stale()
    elif op.kind == "burst":
        _burst(op, app, rec, pool)
    else:
        _race(op, app, counted[op.table], rec, pool)


def _plain(value: Any) -> Any:
    return value if isinstance(value, dict) else None


def _burst(op: Op, app: App, rec: Recorder, pool: ThreadPoolExecutor) -> None:
    """``fan_out`` readers (sub-sites) read the same key at the same moment."""
    barrier = threading.Barrier(op.fan_out)

    def reader() -> None:
        barrier.wait(10.0)
        start = time.perf_counter_ns()
        value, calls = app.read(op.key)
        rec.read(op.table, time.perf_counter_ns() - start, is_stale(value, op.version), calls)

    for future in [pool.submit(reader) for _ in range(op.fan_out)]:
        future.result()


def _race(
    op: Op, app: App, source: CountingSource, rec: Recorder, pool: ThreadPoolExecutor
) -> None:
    """A read whose query returns the old row just before a write of ``op`` is acknowledged.

    If the read is served by the cache it finishes first and the write follows. Then the
    next reads show whether the cache was left holding the old row.
    """
    pause = PausePoint(op.key)
    source.pause = pause

    def reader() -> tuple[Any, int]:
        return app.read(op.key)

    future = pool.submit(reader)
    while not pause.loaded.wait(0.001) and not future.done():
        pass
    source.pause = None
    wstart = time.perf_counter_ns()
    calls = app.write(op.key, row(op))
    rec.write(op.table, time.perf_counter_ns() - wstart, calls)
    pause.release.set()
    value, rcalls = future.result()
    # Overlapping the write, the old version or the new one are both correct answers.
    # Its latency includes the wait for the write, so it is left out of the percentiles.
    rec.read(op.table, None, is_stale(value, op.version - 1), rcalls)


@dataclass
class KindResult:
    """One data kind of a case: every strategy's metrics and the decision."""

    kind: Kind
    results: dict[str, dict[str, float]]
    decision: Decision
    cost: str
    workshop_cost: str | None
    journal_lost: dict[str, int]
    """Write-back strategies re-measured with a journal (fsync="always"): lost writes."""


@dataclass
class CaseResult:
    """A case measured: its parameters, kinds, notes (what was skipped) and duration."""

    name: str
    title: str
    story: str
    workshop_says: str
    params: dict[str, Any]
    kinds: list[KindResult]
    notes: list[str]
    seconds: float


def steps(case: Case) -> int:
    """Progress steps of a case: one per strategy run."""
    return sum(len(kind.candidates) for kind in case.kinds)


def run_case(
    case: Case,
    env: Environment,
    *,
    quick: bool = False,
    overrides: dict[str, str] | None = None,
    seed: int = 7,
    progress: Progress = lambda: None,
) -> CaseResult:
    """Build the case's workload from ``seed`` and measure every candidate strategy."""
    started = time.perf_counter()
    params = case.params(quick, overrides or {})
    scenario = case.build(params, random.Random(f"{case.name}:{seed}"))
    notes: list[str] = []
    if env.redis_url is not None:
        notes.append("store: Redis (capacity is Redis's own maxmemory, not cache_entries)")
    elif env.memcached_url is not None:
        notes.append("store: memcached (capacity is memcached's own -m, not cache_entries)")
    journal = env.kill and crash.journal_available()
    if env.kill and not journal:
        notes.append("write-back journal not installed: journaled loss not measured")
    kinds = []
    for kind in case.kinds:
        results: dict[str, dict[str, float]] = {}
        journal_lost: dict[str, int] = {}
        for strategy in kind.candidates:
            with_journal = journal and strategy == "read-through+write-back"
            results[strategy] = run_strategy(env, scenario, kind, strategy, journal=with_journal)
            if with_journal:
                journal_lost[strategy] = int(results[strategy].pop("journal_lost_writes"))
            progress()
        decision = decide(results, kind.objective, list(kind.candidates))
        runner_up = decision.runner_up
        kinds.append(
            KindResult(
                kind=kind,
                results=results,
                decision=decision,
                cost=cost(results, kind.objective, decision.winner, runner_up) if runner_up else "",
                workshop_cost=None
                if kind.workshop == decision.winner or kind.workshop not in results
                else cost(results, kind.objective, decision.winner, kind.workshop),
                journal_lost=journal_lost,
            )
        )
    return CaseResult(
        name=case.name,
        title=case.title,
        story=case.story,
        workshop_says=case.workshop_says,
        params=params,
        kinds=kinds,
        notes=notes,
        seconds=time.perf_counter() - started,
    )
