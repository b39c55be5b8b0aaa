"""AsyncSQLSource on real SQLite, PostgreSQL (directly or through PgBouncer) and MariaDB.

Run through PgBouncer with ``CACHEWISE_VIA_PGBOUNCER=1`` (the ``postgres_url`` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import MemoryStore, SQLSource, WriteBack, connect
from cachewise._types import Key
from cachewise.aio import AsyncCache, AsyncSQLSource
from cachewise.aio.sql import connect_async
from cachewise.errors import ConfigurationError, InvalidKeyError, SourceError

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def table(db_url: str, unique_name: str) -> Iterator[str]:
    engine = connect(db_url, pool_size=0)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {unique_name} (id INTEGER PRIMARY KEY, name VARCHAR(40), "
                "price NUMERIC(10, 2))"
            )
        )
        conn.execute(sa.text(f"INSERT INTO {unique_name} VALUES (1, 'tea', 3.50)"))
    yield unique_name
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {unique_name}"))
    engine.dispose()


@pytest.fixture
async def source(db_url: str, table: str) -> AsyncIterator[AsyncSQLSource]:
    src = AsyncSQLSource(db_url, table=table)
    yield src
    await src.close()


async def test_load_save_remove_match_the_sync_source(
    source: AsyncSQLSource, db_url: str, table: str
) -> None:
    assert await source.load(1) == {"id": 1, "name": "tea", "price": Decimal("3.50")}
    assert await source.load(99) is not None  # MISSING is falsy but not None
    assert not await source.load(99)
    rows: dict[Key, Any] = {n: {"name": f"p{n}", "price": Decimal(n)} for n in range(2, 300)}
    await source.save_many(rows)
    await source.save_many(rows)  # idempotent
    with SQLSource(db_url, table=table) as sync:
        assert sync.load_many(range(1, 300)) == await source.load_many(range(1, 300))
    await source.remove_many(range(2, 150))
    await source.remove(1)
    assert sorted(await source.load_many(range(1, 300))) == list(range(150, 300))


async def test_bad_rows_and_keys_change_nothing(source: AsyncSQLSource) -> None:
    with pytest.raises(ConfigurationError):
        await source.save_many({2: {"name": "ok"}, 3: {"no_such_column": 1}})
    with pytest.raises(InvalidKeyError):
        await source.load((1, 2))
    assert not await source.load(2)


async def test_a_wrong_table_is_a_configuration_error(db_url: str, table: str) -> None:
    src = AsyncSQLSource(db_url, table="no_such_table_here")  # the database exists
    with pytest.raises(ConfigurationError, match="no table"):
        await src.load(1)
    await src.close()


async def test_read_through_misses_from_many_tasks_load_once(source: AsyncSQLSource) -> None:
    cache = AsyncCache(MemoryStore(), source)
    results = await asyncio.gather(*(cache.read(1) for _ in range(200)))
    assert {r["name"] for r in results} == {"tea"}
    assert cache.stats.source_reads == 1
    assert cache.stats.loads == 1


async def test_write_back_flushes_in_batches(source: AsyncSQLSource) -> None:
    cache = AsyncCache(MemoryStore(), source, write=WriteBack(flush_interval=3600, max_batch=50))
    for n in range(2, 202):
        await cache.write(n, {"id": n, "name": f"row {n}", "price": Decimal(1)})
    await cache.delete(1)
    assert await cache.flush() == 201
    assert cache.stats.flushes == 5  # 201 keys in batches of 50
    assert len(await source.load_many(range(1, 300))) == 200
    await cache.close()


async def test_errors_never_name_the_password(postgres_url: str, unique_name: str) -> None:
    url = sa.make_url(postgres_url.split("?", maxsplit=1)[0]).set(password="s3cret-pw", port=1)
    src = AsyncSQLSource(url, table=unique_name)
    with pytest.raises(SourceError) as caught:
        await src.load(1)
    assert "s3cret-pw" not in repr(src)
    error: BaseException | None = caught.value
    while error is not None:
        assert "s3cret-pw" not in str(error)
        error = error.__cause__ or error.__context__
    await src.close()


async def test_an_engine_passed_in_is_left_open(db_url: str, table: str) -> None:
    engine = connect_async(db_url)
    src = AsyncSQLSource(engine, table=table)
    assert (await src.load(1))["name"] == "tea"
    await src.close()
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    await engine.dispose()


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(ConfigurationError, match="does not exist"):
        AsyncSQLSource(f"sqlite:///{missing}", table="products")
    assert not missing.exists()


def test_arguments_are_checked_before_connecting() -> None:
    with pytest.raises(ConfigurationError):
        AsyncSQLSource("sqlite+aiosqlite://", table="")
    with pytest.raises(ConfigurationError):
        AsyncSQLSource("sqlite+aiosqlite://", key=("id", "id"))
    with pytest.raises(ConfigurationError):
        AsyncSQLSource(object())  # type: ignore[arg-type]


async def test_async_postgres_bus_talks_to_the_sync_bus(
    postgres_url: str, unique_name: str
) -> None:
    from cachewise.aio import AsyncPostgresBus
    from cachewise.invalidation import Invalidation, PostgresBus

    seen_async: list[Invalidation] = []
    seen_sync: list[Invalidation] = []
    abus = AsyncPostgresBus(postgres_url, unique_name)
    abus.subscribe(seen_async.append)
    assert await abus.wait_live(10)
    bus = PostgresBus(postgres_url, unique_name)
    bus.subscribe(seen_sync.append)
    try:
        bus.publish([7, "x"], origin="sync")
        for _ in range(1000):
            if any(m.origin == "sync" for m in seen_async):
                break
            await asyncio.sleep(0.01)
        assert next(m for m in seen_async if m.origin == "sync").keys == (7, "x")
        await abus.publish([("t", 1)], origin="async")
        for _ in range(1000):
            if any(m.origin == "async" for m in seen_sync):
                break
            await asyncio.sleep(0.01)
        assert next(m for m in seen_sync if m.origin == "async").keys == (("t", 1),)
    finally:
        bus.close()
        await abus.close()
