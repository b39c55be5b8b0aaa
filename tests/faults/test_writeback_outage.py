"""Source outage: our own PostgreSQL stops mid-run; write-back holds, pushes back, then drains.

While the database is down, writes keep being accepted (journaled) up to ``max_dirty``
dirty keys; past that a new key blocks (``on_full="block"``) or raises CacheFullError
(``on_full="raise"``); updates of keys already dirty are still accepted. When the
database is back, the backlog drains and every acknowledged write is in the table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cachewise import Cache, MemoryStore, Retry, SQLSource, WriteBack
from cachewise.errors import CacheFullError
from cachewise.writeback.journal import inspect_journal
from tests.servers import PostgresServer, need_pg_bin

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    need_pg_bin()
    pg = PostgresServer()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


@pytest.fixture
def table(server: PostgresServer, unique_name: str) -> str:
    """A fresh table on our own server (which the previous test may have left stopped)."""
    if server.pid() is None:
        server.start()
    engine = sa.create_engine(server.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {unique_name} (id integer PRIMARY KEY, v text)"))
    finally:
        engine.dispose()
    return unique_name


def _rows(url: str, table: str) -> dict[int, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT id, v FROM {table}"))
            return {int(r[0]): str(r[1]) for r in result}
    finally:
        engine.dispose()


def _policy(journal: Path, max_dirty: int, on_full: str) -> WriteBack:
    return WriteBack(
        journal=journal,
        fsync="always",
        flush_interval=0.05,
        max_dirty=max_dirty,
        on_full=on_full,  # type: ignore[arg-type]
        block_timeout=120.0,
        retry=Retry(initial=0.05, maximum=0.3),
    )


def test_outage_accepts_up_to_max_dirty_then_blocks_then_drains(
    server: PostgresServer, table: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    cache = Cache(
        MemoryStore(), SQLSource(server.url, table=table), write=_policy(journal, 150, "block")
    )
    try:
        for i in range(50):
            cache.write(i, {"id": i, "v": f"before-{i}"})
        cache.flush()
        assert cache.stats.dirty == 0

        server.stop("immediate")  # a crash of the database, not a polite shutdown
        for i in range(150):  # 50 known keys and 100 new ones: exactly max_dirty dirty keys
            cache.write(i, {"id": i, "v": f"during-{i}"})
        for _ in range(3):
            cache.write(7, {"id": 7, "v": "during-7-again"})  # a dirty key: no new room needed
        failures = cache.stats.flush_failures
        assert _wait_for(lambda: cache.stats.flush_failures >= failures + 2)
        stats = cache.stats
        assert stats.dirty == 150
        assert stats.oldest_dirty_age > 0.0

        blocked = threading.Thread(target=cache.write, args=(150, {"id": 150, "v": "waited"}))
        blocked.start()
        failures = cache.stats.flush_failures
        assert _wait_for(lambda: cache.stats.flush_failures >= failures + 3)
        assert blocked.is_alive()  # backpressure: the new key waits for room
        assert cache.stats.dirty == 150

        server.start()
        blocked.join(60)
        assert not blocked.is_alive()
        assert _wait_for(lambda: cache.stats.dirty == 0)
    finally:
        cache.close()
    rows = _rows(server.url, table)
    expected = {i: f"during-{i}" for i in range(150)}
    expected[7] = "during-7-again"
    expected[150] = "waited"
    assert rows == expected
    report = inspect_journal(journal)
    assert all(r.flushed for r in report.records)


def test_outage_with_on_full_raise_refuses_new_keys_and_loses_nothing(
    server: PostgresServer, table: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    cache = Cache(
        MemoryStore(), SQLSource(server.url, table=table), write=_policy(journal, 40, "raise")
    )
    try:
        server.stop("immediate")
        for i in range(40):
            cache.write(i, {"id": i, "v": f"v{i}"})
        with pytest.raises(CacheFullError):
            cache.write(40, {"id": 40, "v": "no room"})
        cache.write(3, {"id": 3, "v": "v3-updated"})  # an update of a dirty key still fits
        assert 40 not in cache.dirty_keys()
        server.start()
        assert _wait_for(lambda: cache.stats.dirty == 0)
        cache.write(40, {"id": 40, "v": "room again"})
    finally:
        cache.close()
    rows = _rows(server.url, table)
    assert rows[3] == "v3-updated"
    assert rows[40] == "room again"
    assert len(rows) == 41


def test_the_age_grows_in_an_outage_and_falls_back_with_the_first_flush_after_it(
    server: PostgresServer, table: str
) -> None:
    """Issue 19 end to end: a hot key rewritten all the time, a real database stopped and
    started. The age grows while nothing flushes; the first flush after the restart
    brings it back to the writes made since that flush began, and the lag shows the
    outage."""
    policy = WriteBack(flush_interval=0.05, retry=Retry(initial=0.05, maximum=0.3))
    cache = Cache(MemoryStore(), SQLSource(server.url, table=table), write=policy)
    stop = threading.Event()

    def hot_writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            cache.write(1, {"id": 1, "v": f"hot-{n}"})
            cache.write(2 + n % 50, {"id": 2 + n % 50, "v": f"cold-{n}"})
            time.sleep(0.002)

    writer = threading.Thread(target=hot_writer)
    writer.start()
    try:
        assert _wait_for(lambda: cache.stats.flushes >= 3)
        server.stop("immediate")
        assert _wait_for(lambda: cache.stats.oldest_dirty_age >= 2.0)  # it grows
        before = cache.stats
        began = time.monotonic()
        server.start()
        assert _wait_for(lambda: cache.stats.flushes > before.flushes)  # the first flush
        after = cache.stats
        since_restart = time.monotonic() - began
        # The hot key stays dirty (rewritten during every flush), but the writes the
        # flush committed no longer count: at most what was written since it began
        # (a flush may take its batch a moment before the restart: half the outage's
        # age as margin). Without the fix it counts from the first write of the outage.
        assert after.oldest_dirty_age <= since_restart + before.oldest_dirty_age / 2
        assert after.oldest_dirty_age < before.oldest_dirty_age + since_restart
        assert after.lag_max >= before.oldest_dirty_age  # the outage, seen in the lag
    finally:
        stop.set()
        writer.join(30)
        cache.close()
    rows = _rows(server.url, table)
    assert rows[1].startswith("hot-")
