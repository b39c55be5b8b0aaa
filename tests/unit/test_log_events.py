"""Log events: the logger tree, structured fields, and each repeated event logged once.

A saturated pool logs one WARNING for many timeouts (counted in its fields); a failed
background refresh names its cache and error class; every logger is under ``cachewise``.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from cachewise import (
    Aggregate,
    Cache,
    Every,
    MappingSource,
    MemoryStore,
    ReadThrough,
    Retry,
    SQLSource,
    WriteBack,
    connect,
)
from cachewise._events import LOGGERS, event
from cachewise.aio import AsyncCache
from cachewise.errors import FlushError, PoolTimeout
from tests.helpers import FlakySource, events, wait_for


def test_every_logger_is_in_the_cachewise_tree_and_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "logging.md").read_text()
    for name in LOGGERS:
        assert name == "cachewise" or name.startswith("cachewise.")
        assert f"`{name}`" in docs


def test_fields_are_record_attributes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cachewise")
    event(logging.getLogger("cachewise.pool"), logging.INFO, "probe", "x %d", 1, pool="p", n=2)
    (record,) = events(caplog, "probe")
    assert (record.getMessage(), record.pool, record.n) == ("x 1", "p", 2)  # type: ignore[attr-defined]


def test_a_saturated_pool_logs_once_for_many_timeouts(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cachewise")
    engine = connect(sqlite_url, pool_size=1, max_overflow=0, timeout=0.01)
    try:
        with engine.connect():
            for _ in range(3):
                with pytest.raises(PoolTimeout), engine.connect():
                    pass
    finally:
        engine.dispose()
    (record,) = events(caplog, "pool_timeout")
    assert record.levelno == logging.WARNING
    assert record.name == "cachewise.pool"
    assert record.timeouts == 1  # type: ignore[attr-defined]
    assert record.pool == sqlite_url  # type: ignore[attr-defined]


def test_a_failed_background_refresh_names_its_cache_and_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cachewise")
    data = {"k": 1}
    source = MappingSource(data)
    store = MemoryStore(ttl=60)
    cache = Cache(store, source, read=ReadThrough(refresh_ahead=59.999), name="refreshing")
    try:
        assert cache.read("k") == 1

        def broken(key: object) -> object:
            raise ConnectionError("down")

        cache._refresh("k", broken)
    finally:
        cache.close()
    (record,) = events(caplog, "refresh_failed")
    assert record.levelno == logging.WARNING
    assert (record.cache, record.error) == ("refreshing", "ConnectionError")  # type: ignore[attr-defined]


def test_failing_scheduled_refreshes_are_logged_once_then_their_end(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cachewise.aggregates")
    engine = connect(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE src (id INT PRIMARY KEY, grp TEXT, amount INT)"))
        conn.execute(sa.text("INSERT INTO src VALUES (1, 'a', 1)"))
    query = "SELECT grp, SUM(amount) AS total FROM src GROUP BY grp"
    agg = Aggregate(engine, "totals", query, key="grp", refresh=Every(0.05))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE src RENAME TO gone"))
        assert wait_for(lambda: len(events(caplog, "aggregate_refresh_retry_failed")) >= 2)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE gone RENAME TO src"))
        assert wait_for(lambda: len(events(caplog, "aggregate_refresh_recovered")) == 1)
    finally:
        agg.close()
        engine.dispose()
    (failed,) = events(caplog, "aggregate_refresh_failed")
    assert failed.levelno == logging.WARNING
    assert failed.aggregate == "totals"  # type: ignore[attr-defined]
    retries = events(caplog, "aggregate_refresh_retry_failed")
    assert {r.levelno for r in retries} == {logging.DEBUG}
    (recovered,) = events(caplog, "aggregate_refresh_recovered")
    assert recovered.attempts == 1 + len(retries)  # type: ignore[attr-defined]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [failed]


def _logged_events() -> set[str]:
    """Every event name the package passes to ``_events.event`` (read from the source)."""
    names: set[str] = set()
    for path in (Path(__file__).parents[2] / "src" / "cachewise").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) < 3:
                continue
            func = node.func
            if not (isinstance(func, ast.Name) and func.id in {"event", "log_event"}):
                continue
            name = node.args[2]
            options = [name.body, name.orelse] if isinstance(name, ast.IfExp) else [name]
            names.update(str(o.value) for o in options if isinstance(o, ast.Constant))
    return names


def test_every_event_is_listed_in_the_docs() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "logging.md").read_text()
    listed = set(re.findall(r"^\| `([a-z_]+)` \| `cachewise", docs, re.MULTILINE))
    logged = _logged_events()
    assert len(logged) >= 25
    assert logged == listed


@pytest.mark.anyio
async def test_the_async_flusher_logs_an_outage_once_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cachewise.writeback")
    source = FlakySource({})
    policy = WriteBack(flush_interval=0.02, retry=Retry(initial=0.02, maximum=0.05))
    cache = AsyncCache(MemoryStore(), source, write=policy, name="async-orders")
    try:
        source.down = True
        await cache.write(1, "one")
        await cache.write(2, "two")
        for _ in range(3000):
            if len(events(caplog, "flush_retry_failed")) >= 3:
                break
            await asyncio.sleep(0.01)
        source.down = False
        for _ in range(3000):
            if events(caplog, "flush_recovered"):
                break
            await asyncio.sleep(0.01)
    finally:
        await cache.close()
    (failed,) = events(caplog, "flush_failed")
    assert (failed.levelno, failed.cache, failed.keys) == (logging.WARNING, "async-orders", 2)  # type: ignore[attr-defined]
    retries = events(caplog, "flush_retry_failed")
    assert len(retries) >= 3
    assert {r.levelno for r in retries} == {logging.DEBUG}
    (recovered,) = events(caplog, "flush_recovered")
    assert recovered.attempts == 1 + len(retries)  # type: ignore[attr-defined]
    assert recovered.keys == 2  # type: ignore[attr-defined]
    assert source.data == {1: "one", 2: "two"}


def test_a_refused_row_is_one_structured_line_when_it_is_parked(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cachewise")
    engine = connect(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INT CHECK (qty >= 0))")
        )
    source = SQLSource(engine, table="items")
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600), name="stock")
    try:
        cache.write_many({1: {"id": 1, "qty": 1}, 2: {"id": 2, "qty": -1}})
        with pytest.raises(FlushError):
            cache.flush()
        cache.write(3, {"id": 3, "qty": 3})
        assert cache.flush() == 1  # the parked key is not retried, nor logged again
    finally:
        cache.close()
        engine.dispose()
    (record,) = events(caplog, "row_refused")
    assert record.levelno == logging.ERROR
    assert (record.cache, record.key) == ("stock", "2")  # type: ignore[attr-defined]
    assert "CHECK constraint failed" in record.reason  # type: ignore[attr-defined]
