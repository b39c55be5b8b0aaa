"""Every read policy × write policy × source, checked against invariants after each run.

A seeded random workload of reads, writes and deletes runs through the cache while a
model records what was acknowledged. After each run: no acknowledged write is lost
(the source equals the model once write-back has flushed), write-through never lets
the cache run ahead of the source, and write-back's source equals its cache after
``flush()``. Sources: a dict, SQLite and PostgreSQL (the local server).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import (
    MISSING,
    Cache,
    CacheAside,
    MappingSource,
    MemoryStore,
    ReadThrough,
    SQLSource,
    WriteAround,
    WriteBack,
    WriteThrough,
)
from cachewise.policies import ReadPolicy, WritePolicy
from cachewise.pool import connect
from cachewise.sources.base import Source

KEYS = 30


@dataclass(frozen=True)
class Strategy:
    name: str
    read: Callable[[], ReadPolicy]
    write: Callable[[], WritePolicy | None]


STRATEGIES = [
    Strategy("cache-aside", CacheAside, lambda: None),
    Strategy("cache-aside+write-through", CacheAside, WriteThrough),
    Strategy("cache-aside+write-around", CacheAside, WriteAround),
    Strategy("read-through+write-through", ReadThrough, WriteThrough),
    Strategy("read-through+write-back", ReadThrough, lambda: WriteBack(flush_interval=0.05)),
    Strategy("read-through+write-around", ReadThrough, WriteAround),
    Strategy(
        "read-through+write-around-textbook", ReadThrough, lambda: WriteAround(invalidate=False)
    ),
]


def _row(key: int, version: int) -> dict[str, Any]:
    return {"id": key, "name": f"item-{key}-v{version}", "qty": version}


def _mapping_source(request: pytest.FixtureRequest) -> Iterator[Source]:
    yield MappingSource()


def _sql_source(url: str, table: str) -> Generator[Source, None, None]:
    engine = connect(url)
    meta = sa.MetaData()
    sa.Table(
        table,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100)),
        sa.Column("qty", sa.Integer),
    )
    meta.create_all(engine)
    source = SQLSource(engine, table=table, key="id")
    try:
        yield source
    finally:
        source.close()
        meta.drop_all(engine)
        engine.dispose()


def _sqlite_source(request: pytest.FixtureRequest) -> Iterator[Source]:
    url = request.getfixturevalue("sqlite_url")
    yield from _sql_source(url, "products")


def _postgres_source(request: pytest.FixtureRequest) -> Iterator[Source]:
    url = request.getfixturevalue("postgres_url")
    yield from _sql_source(url, request.getfixturevalue("unique_name"))


SOURCES = {
    "dict": _mapping_source,
    "sqlite": _sqlite_source,
    "postgres": pytest.param(_postgres_source, marks=pytest.mark.postgres),
}


@pytest.fixture(params=list(SOURCES.values()), ids=list(SOURCES))
def source(request: pytest.FixtureRequest) -> Iterator[Source]:
    yield from request.param(request)


def _source_state(source: Source) -> dict[int, Any]:
    return dict(source.load_many(range(KEYS)))  # type: ignore[arg-type]


def _run(
    cache: Cache,
    source: Source,
    strategy: Strategy,
    seed: int,
    ops: int,
    acked: dict[int, Any],
    lock: threading.Lock,
) -> None:
    rng = random.Random(seed)
    aside_read = isinstance(cache.read_policy, CacheAside)
    for step in range(ops):
        key = rng.randrange(KEYS)
        roll = rng.random()
        if roll < 0.5:
            value = cache.read(key, loader=source.load if aside_read else None)
            assert value is None or value["id"] == key
        elif roll < 0.9:
            row = _row(key, seed * 100_000 + step)
            with lock:  # the model and the write move together, so "last acked" is exact
                if strategy.write() is None:
                    source.save(key, row)  # cache-aside: the app writes the DB ...
                    cache.invalidate(key)  # ... and invalidates
                else:
                    cache.write(key, row)
                acked[key] = row
        else:
            with lock:
                if strategy.write() is None:
                    source.remove(key)
                    cache.invalidate(key)
                else:
                    cache.delete(key)
                acked[key] = MISSING


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_invariants_hold(strategy: Strategy, source: Source) -> None:
    cache = Cache(MemoryStore(max_entries=20), source, read=strategy.read(), write=strategy.write())
    acked: dict[int, Any] = {}
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_run, args=(cache, source, strategy, seed, 150, acked, lock))
        for seed in range(1, 5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.flush()
    expected = {k: v for k, v in acked.items() if v is not MISSING}
    in_source = _source_state(source)
    # no acknowledged write lost (and no deleted row resurrected)
    assert {k: in_source.get(k) for k in acked} == {k: expected.get(k) for k in acked}
    cached = cache.store.get_many(range(KEYS))
    if isinstance(cache.write_policy, (WriteThrough, WriteBack)):
        # the cache never holds a value the source does not (never ahead, never stale)
        assert {k: in_source.get(k) for k in cached} == cached  # type: ignore[arg-type]
    if strategy.name != "read-through+write-around-textbook":
        # every strategy but the textbook write-around reads back what was acknowledged
        for key in range(KEYS):
            value = cache.read(key, loader=source.load)
            assert value == expected.get(key)
    cache.close()


def test_stats_include_the_source_pool(sqlite_url: str) -> None:
    source_iter = _sql_source(sqlite_url, "products")
    source = next(source_iter)
    try:
        with Cache(MemoryStore(), source) as cache:
            cache.write(1, _row(1, 1))
            cache.read_many([1, 2])
            pool = cache.stats.pool
            assert pool is not None
            assert pool.acquires >= 2
            assert cache.stats.as_dict()["pool"]["acquires"] == pool.acquires
        assert Cache(MemoryStore(), MappingSource()).stats.pool is None
    finally:
        source_iter.close()
