"""How a run is put together: where it runs, its store, and one App per table."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from cachewise.lab.database import Database, DerivedSource, sources
from cachewise.lab.metrics import CountingSource
from cachewise.lab.scenario import Kind, Scenario
from cachewise.lab.stores import LabMemoryStore, memcached_store, redis_store
from cachewise.lab.strategies import App, Strategy


@dataclass
class Environment:
    """Where runs happen: the database, and Redis (``None``: an in-process MemoryStore)."""

    database: Database
    redis_url: str | None = None
    memcached_url: str | None = None
    """``--store memcached://...``: the cache in memcached (``redis_url`` wins if both)."""
    kill: bool = True
    """Measure lost writes by SIGKILLing a child (off only in unit tests of other parts)."""


def make_store(env: Environment, scenario: Scenario, namespace: str | None = None) -> Any:
    """A fresh counting store for one run (Redis: in ``namespace``, unique by default)."""
    if env.redis_url is not None:
        return redis_store(env.redis_url, namespace or f"cwlab-{uuid.uuid4().hex[:12]}")
    if env.memcached_url is not None:
        return memcached_store(env.memcached_url, namespace or f"cwlab-{uuid.uuid4().hex[:12]}")
    return LabMemoryStore(scenario.cache_entries, scenario.eviction)


def strategies_for(kind: Kind, scenario: Scenario, strategy: str) -> dict[str, Strategy]:
    """The strategy of every table while ``strategy`` is tried on the kind's table."""
    out = {}
    for table, spec in scenario.tables.items():
        name = strategy if table == kind.table else kind.fixed.get(table, spec.strategy)
        if name is None:
            name = strategy
        out[table] = Strategy.parse(name)
    return out


def make_sources(
    engine: Engine, names: dict[str, str], scenario: Scenario, plan: dict[str, Strategy]
) -> dict[str, CountingSource]:
    """A counted source per table: its table, or the value derived from another one."""
    out = {}
    for table, source in sources(engine, names).items():
        derived = scenario.tables[table].derived
        if derived is not None and plan[table].name == "cache-aside":
            out[table] = CountingSource(DerivedSource(engine, names[derived[0]], derived[1]))
        else:
            out[table] = CountingSource(source)
    return out


def build_apps(
    scenario: Scenario,
    plan: dict[str, Strategy],
    store: Any,
    counted: dict[str, CountingSource],
    journal: Callable[[str], str | None] = lambda table: None,
) -> dict[str, App]:
    """One App per table, all sharing ``store``."""
    return {
        table: App(
            plan[table],
            store,
            counted[table],
            admit=scenario.tables[table].admit,
            derived=isinstance(counted[table].inner, DerivedSource),
            journal=journal(table) if plan[table].write == "write-back" else None,
            name=f"lab-{table}",
        )
        for table in scenario.tables
    }
