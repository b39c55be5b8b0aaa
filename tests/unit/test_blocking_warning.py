"""A sync Cache call that waits on I/O inside a running event loop warns once."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa

from cachewise import Cache, MappingSource, MemoryStore, SQLSource, WriteBack
from cachewise.errors import BlockingCallWarning


def _sqlite_source(tmp_path: Path) -> SQLSource:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT)"))
    engine.dispose()
    return SQLSource(url)


def test_a_blocking_call_in_a_running_loop_warns_once(tmp_path: Path) -> None:
    cache = Cache(MemoryStore(), _sqlite_source(tmp_path))

    async def handler() -> None:
        with pytest.warns(BlockingCallWarning, match=r"AsyncCache \(await cache.read"):
            cache.read(1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cache.read(2)  # once per cache, not per call
            cache.write(3, {"id": 3, "name": "x"})

    asyncio.run(handler())
    cache.close()


def test_writes_and_journals_warn_too(tmp_path: Path) -> None:
    cache = Cache(
        MemoryStore(), MappingSource(), write=WriteBack(journal=tmp_path / "j", fsync="always")
    )

    async def handler() -> None:
        with pytest.warns(BlockingCallWarning, match="Cache.write"):
            cache.write(1, "v")

    asyncio.run(handler())
    cache.close()


def test_no_warning_without_io_or_without_a_loop(tmp_path: Path) -> None:
    memory = Cache(MemoryStore(), MappingSource({1: "a"}))
    blocking = Cache(MemoryStore(), _sqlite_source(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocking.read(1)  # no loop: a plain program may block

        async def handler() -> None:
            memory.read(1)
            memory.write(2, "b")
            memory.read(3)

        asyncio.run(handler())
    memory.close()
    blocking.close()
