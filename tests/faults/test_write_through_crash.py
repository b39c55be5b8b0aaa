"""Write-through and write-around with Redis: a SIGKILL at any point leaves a miss, never stale.

Issue 11 item 11: the cache used to save to the source, then SET Redis; a crash between
the commit and the SET left the old value in Redis for good (no TTL by default). Each
case caches the row ``v=1`` in Redis, then a child process writes ``v=2`` (or deletes
the row) through a real SQLite table and a real Redis, and SIGKILLs itself at a named
point around the database commit (``_through_child.py``). Afterwards whatever Redis
holds for the key must be a miss or exactly the row in the database.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewise import MISSING, Cache, RedisStore, SQLSource, WriteBack
from cachewise.errors import StoreError
from tests.faults._tables import create_table, read_rows

CHILD = Path(__file__).with_name("_through_child.py")
ROOT = Path(__file__).resolve().parents[2]
POINTS = ["before-save", "after-commit", "after-write"]


@pytest.fixture
def world(redis_url: str, unique_name: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A SQLite table holding {1: v=1}, Redis caching that row, and the names to reach both."""
    db_url = f"sqlite:///{tmp_path / 'shop.db'}"
    create_table(db_url, "items")
    source = SQLSource(db_url, table="items")
    source.save(1, {"id": 1, "v": 1})
    store = RedisStore(redis_url, namespace=unique_name)
    cache = Cache(store, source)
    assert cache.read(1) == {"id": 1, "v": 1}
    assert store.get(1) == {"id": 1, "v": 1}  # the old row is cached, with no TTL
    yield {"db": db_url, "redis": redis_url, "ns": unique_name, "store": store, "cache": cache}
    cache.close()
    raw = redis.Redis.from_url(redis_url)
    for wire in raw.scan_iter(match=unique_name + ":*", count=1000):
        raw.unlink(wire)
    raw.close()


def _child(
    world: dict[str, Any], store: str, policy: str, op: str, point: str
) -> subprocess.Popen[str]:
    argv = [world["db"], "items", world["redis"], world["ns"], store, policy, op, point]
    return subprocess.Popen(
        [sys.executable, str(CHILD), *argv],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _never_stale(world: dict[str, Any]) -> None:
    """Redis holds nothing for key 1, or exactly the database's row; a read agrees."""
    rows = read_rows(world["db"], "items")
    expected = {"id": 1, "v": rows[1]} if 1 in rows else MISSING
    fresh = RedisStore(world["redis"], namespace=world["ns"])
    try:
        cached = fresh.get(1)
        assert cached is MISSING or cached == expected, (cached, rows)
        reader = Cache(fresh, SQLSource(world["db"], table="items"))
        assert reader.read(1, MISSING) == expected
        reader.close()
    finally:
        fresh.close()


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("op", ["write", "delete"])
@pytest.mark.parametrize("policy", ["through", "around"])
@pytest.mark.parametrize("store", ["redis", "tiered"])
def test_a_writer_killed_at_any_point_leaves_a_miss_never_the_old_value(
    world: dict[str, Any], store: str, policy: str, op: str, point: str
) -> None:
    child = _child(world, store, policy, op, point)
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, (out, err)
    rows = read_rows(world["db"], "items")
    committed = point != "before-save"
    if op == "write":
        assert rows == {1: 2 if committed else 1}
    else:
        assert rows == ({} if committed else {1: 1})
    _never_stale(world)


@pytest.mark.parametrize("store", ["redis", "tiered"])
def test_a_read_while_the_writer_is_held_never_caches_the_old_row(
    world: dict[str, Any], store: str
) -> None:
    """Another process reads between the writer's drop and its commit, then the writer dies.

    The reader loads the old row from the database (the write is not committed yet);
    it must not cache it, or the old row would outlive the writer's crash.
    """
    child = _child(world, store, "through", "write", "held")
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline().strip() == "HELD"
    assert world["cache"].read(1) == {"id": 1, "v": 1}  # loaded from the database
    assert world["store"].get(1) is MISSING  # ...and not cached: the key is held
    child.stdin.write("go\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, (out, err)
    assert read_rows(world["db"], "items") == {1: 2}
    _never_stale(world)


def _killed(code: str, *argv: str) -> None:
    """Run ``code`` in a child process that must end killed by SIGKILL (it kills itself)."""
    child = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr)


WRITE_BACK_CHILD = """
import os, signal, sys
from cachewise import Cache, RedisStore, SQLSource, WriteBack
from cachewise.writeback import journal as journal_mod

db, redis_url, namespace, journal = sys.argv[1:5]
cache = Cache(
    RedisStore(redis_url, namespace=namespace),
    SQLSource(db, table="items"),
    write=WriteBack(flush_interval=3600, journal=journal, fsync="always"),
)

def die(point):
    if point == "append.synced":  # journaled, not yet acknowledged nor cached
        os.kill(os.getpid(), signal.SIGKILL)

journal_mod.fault_hook = die
cache.write(1, {"id": 1, "v": 2})
print("NOT KILLED", flush=True)
"""


def test_write_back_replay_never_serves_the_value_redis_kept_from_before_the_crash(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Killed between journaling a write and caching it, with the old row cached.

    After the restart the journal replays the write as dirty; a read must return it,
    never the old row (read-your-writes across the crash).
    """
    journal = str(tmp_path / "journal")
    _killed(WRITE_BACK_CHILD, world["db"], world["redis"], world["ns"], journal)
    # Before, the old row was left in Redis; the write's hold now drops it first.
    assert world["store"].get(1) in (MISSING, {"id": 1, "v": 1})
    again = Cache(
        RedisStore(world["redis"], namespace=world["ns"]),
        SQLSource(world["db"], table="items"),
        write=WriteBack(flush_interval=3600, journal=journal),
    )
    try:
        assert again.dirty_keys() == [1]
        assert again.read(1) == {"id": 1, "v": 2}
        again.flush()
        assert read_rows(world["db"], "items") == {1: 2}
        assert again.read(1) == {"id": 1, "v": 2}
    finally:
        again.close()


NO_JOURNAL_CHILD = """
import os, signal, sys
from cachewise import Cache, RedisStore, SQLSource, WriteBack

db, redis_url, namespace = sys.argv[1:4]
cache = Cache(
    RedisStore(redis_url, namespace=namespace),
    SQLSource(db, table="items"),
    write=WriteBack(flush_interval=3600),  # no journal: dirty writes live in memory only
)
cache.write(1, {"id": 1, "v": 2})
assert cache.read(1) == {"id": 1, "v": 2}  # read-your-writes, from the dirty set
os.kill(os.getpid(), signal.SIGKILL)  # before any flush: the write is lost, as documented
"""


def test_write_back_without_a_journal_never_leaves_redis_ahead_of_the_source(
    world: dict[str, Any],
) -> None:
    """A crash loses the unflushed write (the documented cost of journal=None)...

    ...but Redis must not keep serving it: the source never got it and never will.
    """
    _killed(NO_JOURNAL_CHILD, world["db"], world["redis"], world["ns"])
    assert read_rows(world["db"], "items") == {1: 1}  # lost, as journal=None says
    _never_stale(world)


def test_write_back_over_redis_while_redis_is_down_refuses_the_write(tmp_path: Path) -> None:
    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    db_url = f"sqlite:///{tmp_path / 'shop.db'}"
    create_table(db_url, "items")
    source = SQLSource(db_url, table="items")
    cache = Cache(
        RedisStore(server.url, namespace="shop", timeout=1.0),
        source,
        write=WriteBack(flush_interval=3600, journal=str(tmp_path / "journal")),
    )
    try:
        cache.write(1, {"id": 1, "v": 1})
        server.kill()
        with pytest.raises(StoreError):
            cache.write(1, {"id": 1, "v": 2})
        with pytest.raises(StoreError):
            cache.delete(1)
        assert cache.read(1, "unreadable") != {"id": 1, "v": 2}  # never acknowledged
    except StoreError:
        pass  # the read itself may fail while Redis is down
    finally:
        dirty = cache.dirty_keys()
        server.start()
        cache.close()
        server.close()
    assert dirty == [1]  # the first write only
    assert read_rows(db_url, "items") == {1: 1}


def test_a_row_the_source_would_refuse_is_refused_before_the_cached_copy_is_dropped(
    world: dict[str, Any],
) -> None:
    """The bracket's hold drops the cached copy: what the source refuses must fail first."""
    from cachewise.errors import InvalidValueError

    cache = world["cache"]
    with pytest.raises(InvalidValueError):
        cache.write(1, {"id": 1, "no_such_column": 2})
    with pytest.raises(InvalidValueError):
        cache.write_many({1: {"id": 1, "v": 2}, 2: "not a row"})
    assert world["store"].get(1) == {"id": 1, "v": 1}  # still cached: nothing changed
    assert read_rows(world["db"], "items") == {1: 1}
