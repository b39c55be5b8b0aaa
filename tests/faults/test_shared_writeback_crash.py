"""Crash tests of the shared write-back (``WriteBack(journal="redis")``) with real processes.

- Two flusher processes on one namespace; one is SIGKILLed inside a batch (keys claimed,
  source not written; or in the middle of isolating a row the table refuses; or source
  written, marks not cleared): its claims expire, the keys are taken over, every
  acknowledged write reaches PostgreSQL, and the refused write ends up parked.
- A writer SIGKILLed right after its last acknowledgement, nothing flushed: another
  process reads every write (read-your-writes across processes) and flushes it.
- A Redis started with ``--appendonly yes --appendfsync always`` is SIGKILLed while
  writes are acknowledged and restarted: nothing acknowledged is lost.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewise import Cache, RedisStore, SQLSource, WriteBack
from cachewise._types import Key
from cachewise.errors import FlushError, StoreError
from tests.faults._tables import create_table, drop_table, read_rows
from tests.servers import RedisServer

CHILD = Path(__file__).with_name("_shared_child.py")
CLAIM_TTL = 1.0  # as in the child


class History:
    """What writers attempted and had acknowledged, per key (a key's values only grow)."""

    def __init__(self) -> None:
        self.attempted: dict[int, set[int]] = {}
        self.acked: dict[int, int] = {}

    def add(self, tag: str, key: int, value: int) -> None:
        if tag == "W":
            self.attempted.setdefault(key, set()).add(value)
        elif tag == "A":
            self.acked[key] = max(self.acked.get(key, value), value)

    def read(self, log: Path) -> None:
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in "WA":
                self.add(parts[0], int(parts[1]), int(parts[2]))

    def problems(self, rows: dict[int, int]) -> list[str]:
        found = []
        for key in sorted(set(self.attempted) | set(rows)):
            last = self.acked.get(key)
            if key not in rows:
                if last is not None:
                    found.append(f"key {key} missing; last acknowledged {last}")
            elif rows[key] not in self.attempted.get(key, set()):
                found.append(f"key {key} holds {rows[key]}, never written")
            elif last is not None and rows[key] < last:
                found.append(f"key {key} holds {rows[key]}, older than acknowledged {last}")
        return found


def _drop_namespace(url: str, namespace: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("sqlite")]
)
def db(request: pytest.FixtureRequest, unique_name: str, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty table named ``unique_name`` (PostgreSQL and SQLite)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/shared.db"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    create_table(url, unique_name)
    yield url
    if request.param == "postgres":
        drop_table(url, unique_name)


@pytest.fixture
def namespace(redis_url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    _drop_namespace(redis_url, unique_name)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    errors = log.with_suffix(".err")
    with errors.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(CHILD), *args], stderr=err)
    _wait_for(log, "READY", proc)
    return proc


def _wait_for(log: Path, marker: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """The first log line starting with ``marker``; fails if the child exits first."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        for line in text.splitlines():
            if line.startswith(marker):
                return line
        if proc.poll() is not None or time.monotonic() > deadline:
            err = log.with_suffix(".err").read_text()[-3000:]
            raise AssertionError(f"child never logged {marker!r} (exit {proc.poll()}): {err}")
        time.sleep(0.01)


def _shared_cache(redis_url: str, namespace: str, db_url: str, table: str) -> Cache:
    policy = WriteBack(journal="redis", flush_interval=3600, flush_timeout=CLAIM_TTL)
    store = RedisStore(redis_url, namespace=namespace, ttl=300)
    return Cache(store, SQLSource(db_url, table=table), write=policy)


def _drain(cache: Cache, timeout: float = 20.0) -> int:
    """Flush until nothing is dirty (claims of dead flushers expire meanwhile)."""
    written = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            written += cache.flush()
        except FlushError as exc:
            if not exc.rejected:
                raise  # refused rows are parked; anything else is a failure
        if not cache.stats.dirty:
            return written
        assert time.monotonic() < deadline, f"still dirty: {cache.dirty_keys()}"
        time.sleep(0.05)


REFUSED = 1000
"""A key written with a value the table's CHECK refuses before the flusher starts."""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["claimed", "isolate", "saved"])
def test_a_flusher_killed_mid_batch_loses_no_acknowledged_write(
    redis_url: str, postgres_url: str, namespace: str, unique_name: str, point: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    table = unique_name
    create_table(postgres_url, table, check=True)
    setup = _shared_cache(redis_url, namespace, postgres_url, table)  # closed at the end:
    extra = (2000, 2001, 2002)  # closing flushes; the flusher takes them with the refused
    batch: dict[Key, Any] = {k: {"id": k, "v": k} for k in extra}
    setup.write_many({REFUSED: {"id": REFUSED, "v": -1}, **batch})
    common = [redis_url, namespace, postgres_url, table]
    flusher_log, writer_log = tmp_path / "flusher.log", tmp_path / "writer.log"
    flusher = _start(["flusher", *common, str(flusher_log), point], flusher_log)
    writer = None
    try:
        writer = _start(["writer", *common, str(writer_log), "400", "close"], writer_log)
        paused = _wait_for(flusher_log, "P ", flusher)
        flusher.kill()  # SIGKILL inside the batch, its claims still held
        flusher.wait()
        assert writer.wait(timeout=60) == 0, writer_log.with_suffix(".err").read_text()
        _wait_for(writer_log, "DONE", writer)
        held = [int(k) for k in paused.split()[1:]]
        assert held, "the killed flusher held no keys: the test proved nothing"
        history = History()
        history.read(writer_log)
        assert len(history.acked) == 40
        with _shared_cache(redis_url, namespace, postgres_url, table) as cache:
            # Read-your-writes from another process: every key reads as its last write.
            assert {k: cache.read(k)["v"] for k in history.acked} == history.acked
            _drain(cache)
            parked = {k: p.value for k, p in cache.rejected().items()}
        rows = read_rows(postgres_url, table)
        assert {k: rows.pop(k) for k in extra} == {k: k for k in extra}
        assert not history.problems(rows), history.problems(rows)[:5]
        assert rows == history.acked  # the writer finished: every key at its last write
        assert parked == {REFUSED: {"id": REFUSED, "v": -1}}  # refused, never dropped
    finally:
        for proc in (flusher, writer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        setup.close()
        drop_table(postgres_url, table)


def test_a_killed_writers_acknowledged_writes_are_read_and_flushed_elsewhere(
    redis_url: str, namespace: str, db: str, unique_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "writer.log"
    proc = _start(["writer", redis_url, namespace, db, unique_name, str(log), "120", "die"], log)
    assert proc.wait(timeout=60) == -9
    _wait_for(log, "DYING", proc)
    history = History()
    history.read(log)
    assert len(history.acked) == 40
    assert read_rows(db, unique_name) == {}  # nothing was flushed before the writer died
    with _shared_cache(redis_url, namespace, db, unique_name) as cache:
        assert cache.stats.dirty == 40
        assert {k: cache.read(k)["v"] for k in history.acked} == history.acked
        assert _drain(cache) == 40
    assert read_rows(db, unique_name) == history.acked


def _write_until_redis_dies(server: RedisServer, namespace: str, db_url: str) -> History:
    """Four threads write through the shared write-back until Redis is SIGKILLed under them."""
    cache = _shared_cache(server.url, namespace, db_url, "rows")
    history = History()
    lock = threading.Lock()
    acked = threading.Semaphore(0)

    def write(thread: int) -> None:
        mine = [k for k in range(40) if k % 4 == thread]
        n = 0
        while True:
            n += 1
            key = mine[n % len(mine)]
            value = n * 1000 + key
            with lock:
                history.add("W", key, value)
            try:
                cache.write(key, {"id": key, "v": value})
            except StoreError:
                return  # Redis is gone: this write was never acknowledged
            with lock:
                history.add("A", key, value)
            acked.release()

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for _ in range(300):  # kill Redis while the writers are in full swing
        assert acked.acquire(timeout=30)
    server.kill()
    for t in threads:
        t.join(timeout=30)
    with pytest.raises(StoreError):
        cache.close()  # its final flush cannot reach Redis
    assert len(history.acked) == 40
    assert read_rows(db_url, "rows") == {}
    return history


@pytest.mark.slow
def test_redis_sigkill_with_aof_always_loses_nothing_acknowledged(
    unique_name: str, sqlite_url: str
) -> None:
    server = RedisServer(appendonly=True, appendfsync="always")
    server.start()
    try:
        create_table(sqlite_url, "rows")
        history = _write_until_redis_dies(server, unique_name, sqlite_url)
        server.start()  # replays the AOF
        with _shared_cache(server.url, unique_name, sqlite_url, "rows") as again:
            for key, last in history.acked.items():
                value = again.read(key)["v"]
                assert value >= last, f"key {key}: {value} older than acknowledged {last}"
            assert _drain(again) == 40
        rows = read_rows(sqlite_url, "rows")
        assert not history.problems(rows), history.problems(rows)[:5]
    finally:
        server.close()


def test_without_persistence_a_redis_crash_loses_the_dirty_set(
    unique_name: str, sqlite_url: str
) -> None:
    """The control: the same crash with AOF off loses every unflushed write (so the
    test above would see a loss if there were one)."""
    server = RedisServer(appendonly=False)
    server.start()
    try:
        create_table(sqlite_url, "rows")
        history = _write_until_redis_dies(server, unique_name, sqlite_url)
        server.start()
        with _shared_cache(server.url, unique_name, sqlite_url, "rows") as again:
            assert again.stats.dirty == 0
            assert _drain(again) == 0
        rows = read_rows(sqlite_url, "rows")
        assert len(history.problems(rows)) == 40
    finally:
        server.close()
