"""RedisStore against real Redis: layout, batches, the load guard, hostile bytes, secrets."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from cachewise import MISSING, Cache, RedisStore
from cachewise._types import Key
from cachewise.codecs import SignedPickleCodec
from cachewise.errors import (
    ClosedError,
    CodecError,
    ConfigurationError,
    InvalidKeyError,
    StoreError,
)
from cachewise.stores.base import LoadGuarded, LoadTicket
from tests.helpers import FlakySource
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

SECRET = b"redis-store-test-secret-0123456789"


def purge(client: redis.Redis, namespace: str) -> None:
    """Delete every key of a test namespace (values, versions, leases)."""
    for wire in client.scan_iter(match=namespace + ":*", count=1000):
        client.unlink(wire)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(redis_url: str, unique_name: str, raw: redis.Redis) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, namespace=unique_name)
    yield s
    s.close()
    purge(raw, unique_name)


@pytest.fixture
def twin(redis_url: str, unique_name: str) -> Iterator[RedisStore]:
    """A second store on the same namespace: what another process sees."""
    s = RedisStore(redis_url, namespace=unique_name)
    yield s
    s.close()


# -- layout and basics --------------------------------------------------------------------


def test_round_trip_and_typed_keys_in_one_hash_tag(store: RedisStore, raw: redis.Redis) -> None:
    store.set(1, "int one")
    store.set("1", "str one")
    store.set(("a:b", "c"), "t1")
    store.set(("a", "b:c"), "t2")
    assert store.get(1) == "int one"
    assert store.get("1") == "str one"
    assert store.get(("a:b", "c")) == "t1"
    assert store.get(("a", "b:c")) == "t2"
    ns = store.namespace
    assert raw.exists(f"{ns}:{{i1}}:v".encode(), f"{ns}:{{s1}}:v".encode()) == 2
    # The value, its version and its lease share the hash tag, hence the Cluster slot.
    slots = {key_slot(store.wire_key(("a:b", "c"), part)) for part in "vnl"}
    assert len(slots) == 1
    assert key_slot(store.wire_key(("a:b", "c"))) != key_slot(store.wire_key(("a", "b:c")))


def test_control_characters_never_reach_the_wire(store: RedisStore, raw: redis.Redis) -> None:
    store.set("line\r\nbreak\x00 {tag}", 1)
    wires = list(raw.scan_iter(match=store.namespace + ":*"))
    assert wires
    for wire in wires:
        text = wire.decode()
        assert all(ch.isprintable() and not ch.isspace() for ch in text)
        assert text.count("{") == 1
        assert text.count("}") == 1
    assert store.get("line\r\nbreak\x00 {tag}") == 1


def test_none_is_a_value_and_absent_is_missing(store: RedisStore) -> None:
    store.set("n", None)
    assert store.get("n") is None
    assert store.get("absent") is MISSING


def test_ttl_is_redis_ttl(store: RedisStore) -> None:
    store.set("t", 1, ttl=30)
    store.set("forever", 1)
    left = store.ttl_left("t")
    assert left is not None
    assert 0 < left <= 30
    assert store.ttl_left("forever") is None


def test_default_ttl_applies(redis_url: str, unique_name: str, raw: redis.Redis) -> None:
    s = RedisStore(redis_url, namespace=unique_name, ttl=60)
    try:
        s.set("k", 1)
        left = s.ttl_left("k")
        assert left is not None
        assert 0 < left <= 60
        s.set("k", 1, ttl=5)
        left = s.ttl_left("k")
        assert left is not None
        assert left <= 5
    finally:
        s.close()
        purge(raw, unique_name)


class CountingClient(redis.Redis):
    """A real client that counts the commands it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def test_batches_are_one_round_trip_each(
    redis_url: str, unique_name: str, raw: redis.Redis
) -> None:
    client = CountingClient(connection_pool=redis.ConnectionPool.from_url(redis_url))
    s = RedisStore(namespace=unique_name, client=client)
    try:
        s.set_many({i: {"n": i} for i in range(100)})
        s.delete("warm")  # loads the delete script too
        client.sent.clear()
        s.set_many({i: {"n": i} for i in range(100)})
        found = s.get_many(range(100))
        assert s.delete_many(range(50)) == 50
        assert len(found) == 100
        assert found[7] == {"n": 7}
        assert client.sent == ["EVALSHA", "MGET", "EVALSHA"]
    finally:
        s.close()
        client.close()
        client.connection_pool.disconnect()
        purge(raw, unique_name)


def test_clear_drops_only_its_namespace(
    store: RedisStore, redis_url: str, raw: redis.Redis
) -> None:
    other = RedisStore(redis_url, namespace=store.namespace + "x")
    try:
        store.set_many({i: i for i in range(2500)})  # more than one SCAN batch
        other.set("keep", 1)
        store.clear()
        assert store.get_many(range(2500)) == {}
        assert other.get("keep") == 1
    finally:
        other.clear()
        other.close()
        purge(raw, store.namespace + "x")


def test_every_set_and_delete_bumps_the_version(store: RedisStore, raw: redis.Redis) -> None:
    version = store.wire_key("k", "n")
    store.set("k", 1)
    store.set("k", 2)
    store.delete("k")
    store.set_many({"k": 3})
    assert int(raw.get(version) or 0) == 4


def test_bad_input_fails_before_any_change(store: RedisStore) -> None:
    with pytest.raises(InvalidKeyError):
        store.set(1.5, 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        store.set("k", 1, ttl=-1)
    with pytest.raises(CodecError):
        store.set_many({"a": 1, "b": object()})
    assert store.get_many(["a", "b"]) == {}
    for bad in ("", "a b", "x{y}", "tab\t"):
        with pytest.raises(ConfigurationError):
            RedisStore(namespace=bad)
    with pytest.raises(ConfigurationError):
        RedisStore("http://localhost")


def test_closed_store_refuses_work(redis_url: str, unique_name: str) -> None:
    s = RedisStore(redis_url, namespace=unique_name)
    s.close()
    s.close()
    with pytest.raises(ClosedError):
        s.get("k")
    with pytest.raises(ClosedError):
        s.set("k", 1)


# -- the load guard -----------------------------------------------------------------------


def test_store_is_load_guarded(store: RedisStore) -> None:
    assert isinstance(store, LoadGuarded)


def test_load_stores_when_nothing_changed(store: RedisStore) -> None:
    ticket = store.begin_load("k")
    assert ticket.value is MISSING
    assert store.end_load("k", ticket, "loaded", None) is True
    assert store.get("k") == "loaded"


@pytest.mark.parametrize("interference", ["set", "delete", "set_many", "delete_many"])
def test_cache_aside_race_old_value_never_left_cached(
    store: RedisStore, twin: RedisStore, interference: str
) -> None:
    # reader: miss, begin_load, reads "old" from the database ... (paused here)
    store.set("k", "cached-before")
    store.delete("k")
    ticket = store.begin_load("k")
    old_from_db = "old"
    # writer (another process): updates the database, then the cache
    if interference == "set":
        twin.set("k", "new")
    elif interference == "set_many":
        twin.set_many({"k": "new"})
    elif interference == "delete":
        twin.delete("k")
    else:
        twin.delete_many(["k"])
    # reader resumes: tries to cache what it read
    assert store.end_load("k", ticket, old_from_db, None) is False
    expected = "new" if interference.startswith("set") else MISSING
    assert store.get("k") == expected
    assert twin.get("k") == expected


def test_batch_load_guard_stores_only_unchanged_keys(store: RedisStore, twin: RedisStore) -> None:
    store.set("present", "cached")
    tickets = store.begin_load_many(["present", "a", "b", "c", "absent"])
    assert tickets["present"].value == "cached"
    # loaded from the database: a, b, c (old), absent is not there
    twin.set("b", "new-b")  # another process writes b ...
    twin.delete("c")  # ... and invalidates c while the batch loads
    loaded: dict[Key, Any] = {"a": "old-a", "b": "old-b", "c": "old-c", "absent": MISSING}
    stored = store.end_load_many(tickets, loaded, None)
    assert sorted(stored) == ["a"]
    assert store.get_many(["a", "b", "c", "absent"]) == {"a": "old-a", "b": "new-b"}


def test_loader_that_found_nothing_releases_the_lease(store: RedisStore, twin: RedisStore) -> None:
    ticket = store.begin_load("k")
    assert store.end_load("k", ticket, MISSING, None) is False
    other = twin.begin_load("k")  # would wait lease_wait if the lease were still held
    assert other.token is not None
    assert other.token.lease != b""
    twin.end_load("k", other, MISSING, None)


def test_waiter_gets_the_lease_holders_value(store: RedisStore, twin: RedisStore) -> None:
    ticket = store.begin_load("k")
    got: list[LoadTicket] = []
    waiter = threading.Thread(target=lambda: got.append(twin.begin_load("k")))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()  # waiting for the lease holder, not loading
    assert store.end_load("k", ticket, {"v": 1}, None) is True
    waiter.join(10)
    assert got[0].value == {"v": 1}


def test_crashed_lease_holder_is_replaced_after_the_lease_ttl(
    redis_url: str, unique_name: str, raw: redis.Redis
) -> None:
    dead = RedisStore(redis_url, namespace=unique_name, lease_ttl=0.3)
    alive = RedisStore(redis_url, namespace=unique_name, lease_ttl=0.3, lease_wait=10)
    try:
        dead.begin_load("k")  # takes the lease and never ends the load
        ticket = alive.begin_load("k")  # waits, then takes the expired lease
        assert ticket.value is MISSING
        assert ticket.token.lease != b""
        assert raw.get(alive.wire_key("k", "l")) == ticket.token.lease
        assert alive.end_load("k", ticket, "mine", None) is True
        assert raw.get(alive.wire_key("k", "l")) is None
    finally:
        dead.close()
        alive.close()
        purge(raw, unique_name)


def test_read_through_cache_end_to_end_caches_once(store: RedisStore, twin: RedisStore) -> None:
    source = FlakySource({"k": {"v": 1}})
    with Cache(store, source=source) as cache:
        assert cache.read("k") == {"v": 1}
        assert cache.read("k") == {"v": 1}
    assert source.calls["load"] == 1
    assert twin.get("k") == {"v": 1}


def test_slow_reader_in_one_cache_never_caches_old_value_after_write_in_another(
    store: RedisStore, twin: RedisStore
) -> None:
    source = FlakySource({"k": "old"})
    gate = threading.Event()
    source.gate = gate
    reader = Cache(store, source=source)
    writer = Cache(twin, source=source)
    try:
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(reader.read("k")))
        t.start()
        while source.calls.get("load", 0) == 0:
            threading.Event().wait(0.005)
        source.gate = None
        writer.write("k", "new")  # write-through: database, then the shared cache
        gate.set()
        t.join(10)
        assert result == ["old"]  # the reader saw what it read ...
        assert twin.get("k") == "new"  # ... but did not leave it cached
    finally:
        reader.close()
        writer.close()


# -- hostile bytes ------------------------------------------------------------------------


class _Evil:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("codec_kind", ["msgpack", "signed"])
def test_hostile_bytes_are_misses_and_nothing_executes(
    redis_url: str, unique_name: str, raw: redis.Redis, tmp_path: Path, codec_kind: str
) -> None:
    codec = SignedPickleCodec(SECRET) if codec_kind == "signed" else None
    s = RedisStore(redis_url, namespace=unique_name, codec=codec)
    marker = tmp_path / "executed"
    try:
        s.set("good", {"v": 1})
        s.set("other", {"v": 2})
        good = raw.get(s.wire_key("good"))
        assert isinstance(good, bytes)
        stamp = s.stamp()  # whoever can write Redis can read the epoch: plant with it
        assert good.startswith(stamp)
        planted = {
            "pickle": stamp + pickle.dumps(_Evil(marker)),
            "truncated": good[: len(stamp) + (len(good) - len(stamp)) // 2],
            "copied": raw.get(s.wire_key("other")),
            "garbage": stamp + b"\xc1\xff\x00",
        }
        for name, data in planted.items():
            assert data is not None
            raw.set(s.wire_key(name), data)
        for name in planted:
            if name == "copied" and codec_kind == "msgpack":
                continue  # unsigned values are not bound to their key: a copy is a copy
            assert s.get(name) is MISSING, name
        assert s.get_many(list(planted)) == (
            {"copied": {"v": 2}} if codec_kind == "msgpack" else {}
        )
        expected_rejects = 2 * (len(planted) - (codec_kind == "msgpack"))
        assert s.rejected == expected_rejects
        raw.set(s.wire_key("unstamped"), pickle.dumps(_Evil(marker)))
        assert s.get("unstamped") is MISSING  # no stamp: not even decoded
        assert (s.rejected, s.cold_reads) == (expected_rejects, 1)
        assert not marker.exists()
        # A guarded load over a hostile value loads and overwrites it.
        ticket = s.begin_load("pickle")
        assert ticket.value is MISSING
        assert s.end_load("pickle", ticket, "clean", None) is True
        assert s.get("pickle") == "clean"
        assert s.get("good") == {"v": 1}
        assert not marker.exists()
    finally:
        s.close()
        purge(raw, unique_name)


# -- failures and secrets -----------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


def test_connection_failure_is_store_error_chained(own_redis: RedisServer) -> None:
    s = RedisStore(own_redis.url, namespace="cw", timeout=1.0)
    try:
        s.set("k", 1)
        own_redis.kill()
        with pytest.raises(StoreError) as info:
            s.get("k")
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        with pytest.raises(StoreError):
            s.set("k", 2)
    finally:
        s.close()


def test_fail_open_reads_become_counted_misses(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    s = RedisStore(own_redis.url, namespace="cw", fail_open=True, timeout=1.0)
    source = FlakySource({"k": "from-source"})
    try:
        s.set("k", "cached")
        own_redis.kill()
        assert s.get("k") is MISSING
        assert s.get_many(["k"]) == {}
        assert s.failed_reads == 2
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1  # one warning per interval, not one per failed read
        with pytest.raises(StoreError):
            s.set("k", 1)  # writes still fail loudly
        with Cache(s, source=source) as cache:
            assert cache.read("k") == "from-source"  # read-through fell back to the source
        assert source.calls["load"] == 1
    finally:
        s.close()


PASSWORD = "Sup3r-S3cret-pw"


def _texts(exc: BaseException) -> str:
    out = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(out)


def test_password_never_in_repr_or_errors() -> None:
    server = RedisServer(
        extra=[
            "--requirepass",
            PASSWORD,
            "--user",
            "alice",
            "on",
            f">{PASSWORD}",
            "~*",
            "&*",
            "+@all",
        ]
    )
    server.start()
    try:
        for user in ("", "alice"):
            url = f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0"
            s = RedisStore(url, namespace="cw", timeout=1.0)
            try:
                s.set("k", 1)
                assert s.get("k") == 1
                assert PASSWORD not in repr(s)
                assert "***" in repr(s)
            finally:
                s.close()
        wrong = RedisStore(f"redis://alice:wrong-{PASSWORD}@127.0.0.1:{server.port}/0")
        with pytest.raises(StoreError) as info:
            wrong.get("k")
        assert PASSWORD not in _texts(info.value)
        assert PASSWORD not in repr(wrong)
        wrong.close()
        server.kill()
        down = RedisStore(f"redis://alice:{PASSWORD}@127.0.0.1:{server.port}/0", timeout=0.5)
        with pytest.raises(StoreError) as info:
            down.set("k", 1)
        assert PASSWORD not in _texts(info.value)
        down.close()
        with pytest.raises(ConfigurationError) as bad:
            RedisStore(f"redis://alice:{PASSWORD}@127.0.0.1:notaport/0")
        assert PASSWORD not in _texts(bad.value)
    finally:
        server.close()


def test_tls_with_acl_user_and_password() -> None:
    server = RedisServer(
        tls=True, extra=["--user", "alice", "on", f">{PASSWORD}", "~*", "&*", "+@all"]
    )
    server.start()
    try:
        url = (
            f"rediss://alice:{PASSWORD}@127.0.0.1:{server.port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={server.cert}"
        )
        s = RedisStore(url, namespace="cw", timeout=2.0)
        try:
            s.set("k", {"over": "tls"})
            assert s.get("k") == {"over": "tls"}
            assert PASSWORD not in repr(s)
        finally:
            s.close()
        plain = RedisStore(f"redis://alice:{PASSWORD}@127.0.0.1:{server.port}/0", timeout=1.0)
        with pytest.raises(StoreError) as info:  # plain text to a TLS port: refused
            plain.get("k")
        assert PASSWORD not in _texts(info.value)
        plain.close()
    finally:
        server.close()


def test_cachewise_imports_without_redis_py() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import cachewise\n"
        "from cachewise.invalidation import LocalBus\n"
        "assert 'RedisStore' in cachewise.__all__ and cachewise.MemoryStore\n"
        "LocalBus().publish([1])\n"
        "try:\n"
        "    cachewise.RedisStore\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "lazy"
