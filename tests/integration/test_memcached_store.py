"""MemcachedStore against a real memcached we start: keys, TTLs, limits, the CAS load guard."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client

from cachewise import MISSING, Cache, MemcachedStore, ReadThrough
from cachewise._types import Key
from cachewise.codecs import decode_key
from cachewise.errors import ConfigurationError, StoreError
from cachewise.stores.base import CompareAndSet, LoadGuarded, LoadTicket, TTLAware
from cachewise.stores.memcached import MAX_KEY, RELATIVE_LIMIT, exptime, memcached_key
from tests.helpers import FlakySource
from tests.servers import MemcachedServer

pytestmark = pytest.mark.memcached


@pytest.fixture
def store(memcached_url: str, unique_name: str) -> Iterator[MemcachedStore]:
    s = MemcachedStore(memcached_url, namespace=unique_name)
    yield s
    s.close()
    cleaner = MemcachedStore(memcached_url, namespace=unique_name)  # tests may close s
    cleaner.clear()
    cleaner.close()


@pytest.fixture
def twin(memcached_url: str, unique_name: str) -> Iterator[MemcachedStore]:
    """A second store on the same namespace: what another process sees."""
    s = MemcachedStore(memcached_url, namespace=unique_name)
    yield s
    s.close()


@pytest.fixture
def raw(memcached_url: str) -> Iterator[Client]:
    host, port = memcached_url.removeprefix("memcached://").split(":")
    client = Client((host, int(port)))
    yield client
    client.close()


# -- keys: typed, injective, printable ASCII, within 250 bytes ------------------------------

TRICKY_KEYS: list[Key] = [
    1, "1", b"1", (1,), ("a:b", "c"), ("a", "b:c"), "with space", "tab\there", "nl\n",
    "清", "%u6E05", "\u3000", "\x85", "a" * 300, "a" * 301, ("a" * 200, "b" * 200),
    b"\x00\xff" * 200, "#" + "0" * 64, "",
]  # fmt: skip


def test_keys_are_injective_ascii_without_whitespace_and_within_the_limit() -> None:
    wires = [memcached_key("ns", k) for k in TRICKY_KEYS]
    assert len(set(wires)) == len(wires)
    for wire in wires:
        assert len(wire) <= MAX_KEY
        assert all(0x21 <= byte <= 0x7E for byte in wire), wire
        assert wire.startswith(b"ns:")


def test_short_keys_decode_back_and_long_keys_are_hashed() -> None:
    keys: list[Key] = ["清 x", ("a", 1, b"\x00"), "\u3000"]
    for key in keys:
        assert decode_key(memcached_key("ns", key)[3:].decode()) == key
    long_wire = memcached_key("ns", "a" * 300)
    assert long_wire.startswith(b"ns:#")
    assert len(long_wire) == len("ns:#") + 64


def test_every_tricky_key_round_trips_through_memcached(store: MemcachedStore) -> None:
    for i, key in enumerate(TRICKY_KEYS):
        store.set(key, i)
    assert [store.get(k) for k in TRICKY_KEYS] == list(range(len(TRICKY_KEYS)))


def test_namespace_with_colon_or_space_is_refused(memcached_url: str) -> None:
    for bad in ["a:b", "a b", "", "x" * 151]:
        with pytest.raises(ConfigurationError):
            MemcachedStore(memcached_url, namespace=bad)


@pytest.mark.parametrize("url", ["redis://x", "memcached://a:1,b:2", "memcached://h:notaport"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        MemcachedStore(url)


# -- TTLs ---------------------------------------------------------------------------------


def test_exptime_never_rounds_down_and_turns_absolute_past_30_days() -> None:
    assert exptime(None, 1000.0) == 0
    assert exptime(0.2, 1000.0) == 2  # never 0 (that would mean "forever")
    assert exptime(RELATIVE_LIMIT - 1, 1000.0) == RELATIVE_LIMIT
    assert exptime(RELATIVE_LIMIT + 5, 1000.0) == 1000 + RELATIVE_LIMIT + 5 + 1


def test_ttl_beyond_30_days_keeps_the_value(store: MemcachedStore) -> None:
    # Sent as a relative time, memcached would read 40 days as a date in 1970: gone at once.
    store.set("far", "future", ttl=40 * 24 * 3600)
    store.set_many({"far2": 2}, ttl=40 * 24 * 3600)
    assert store.get("far") == "future"
    assert store.get("far2") == 2
    left = store.ttl_left("far")
    assert left is not None
    assert 39 * 24 * 3600 < left <= 40 * 24 * 3600


def test_ttl_left_reports_the_envelope_expiry(store: MemcachedStore) -> None:
    assert isinstance(store, TTLAware)
    store.set("k", 1, ttl=100)
    store.set("forever", 1)
    left = store.ttl_left("k")
    assert left is not None
    assert 0 < left <= 100
    assert store.ttl_left("forever") is None
    assert store.ttl_left("absent") is None


def test_default_ttl_applies(memcached_url: str, unique_name: str) -> None:
    store = MemcachedStore(memcached_url, namespace=unique_name, ttl=50)
    try:
        store.set("k", 1)
        left = store.ttl_left("k")
        assert left is not None
        assert 0 < left <= 50
    finally:
        store.clear()
        store.close()


# -- limits and failures --------------------------------------------------------------------


def test_value_over_the_item_limit_is_refused_before_any_change(store: MemcachedStore) -> None:
    store.set("k", "small")
    with pytest.raises(StoreError, match="item size limit"):
        store.set("k", b"x" * (store.item_limit() + 1))
    assert store.get("k") == "small"


def test_clear_drops_only_its_namespace(memcached_url: str, unique_name: str) -> None:
    mine = MemcachedStore(memcached_url, namespace=unique_name)
    other = MemcachedStore(memcached_url, namespace=unique_name + "x")
    try:
        # Enough other items that the server's key dump is a long, many-chunk reply.
        other.set_many(dict.fromkeys(range(5000), "x" * 100))
        mine.set_many({"a": 1, "b": 2, "a" * 300: 3})
        other.set("a", "theirs")
        mine.clear()
        assert mine.get_many(["a", "b", "a" * 300]) == {}
        assert other.get("a") == "theirs"
        assert len(other.get_many(range(5000))) == 5000
    finally:
        other.clear()
        mine.close()
        other.close()


def test_server_down_is_a_store_error_with_its_cause() -> None:
    server = MemcachedServer()
    server.start()
    store = MemcachedStore(server.url, namespace="down", timeout=2)
    try:
        store.set("k", 1)
        server.kill()
        with pytest.raises(StoreError, match="memcached get failed") as info:
            store.get("k")
        assert info.value.__cause__ is not None
    finally:
        store.close()
        server.close()


def test_delete_many_counts_only_live_values(store: MemcachedStore) -> None:
    store.set("live", 1)
    store.set("gone", 1, ttl=0.05)
    threading.Event().wait(0.1)
    assert store.delete_many(["live", "gone", "absent"]) == 1


# -- the CAS load guard ---------------------------------------------------------------------


def test_store_is_guarded_and_has_compare_and_set(store: MemcachedStore) -> None:
    assert isinstance(store, LoadGuarded)
    assert isinstance(store, CompareAndSet)


def test_load_stores_when_nothing_changed(store: MemcachedStore) -> None:
    ticket = store.begin_load("k")
    assert ticket.value is MISSING
    assert store.get("k") is MISSING  # the lease is never a value
    assert store.end_load("k", ticket, "loaded", None) is True
    assert store.get("k") == "loaded"


@pytest.mark.parametrize("interference", ["set", "delete", "set_many", "delete_many"])
def test_cache_aside_race_old_value_never_left_cached(
    store: MemcachedStore, twin: MemcachedStore, interference: str
) -> None:
    ticket = store.begin_load("k")  # the reader missed and reads "old" from the database
    if interference == "set":
        twin.set("k", "new")
    elif interference == "set_many":
        twin.set_many({"k": "new"})
    elif interference == "delete":
        twin.delete("k")
    else:
        twin.delete_many(["k"])
    assert store.end_load("k", ticket, "old", None) is False
    expected = "new" if interference.startswith("set") else MISSING
    assert twin.get("k") == expected


def test_loader_that_found_nothing_releases_the_lease(
    store: MemcachedStore, twin: MemcachedStore, raw: Client
) -> None:
    ticket = store.begin_load("k")
    assert raw.get(store.wire_key("k")) is not None  # the lease item
    assert store.end_load("k", ticket, MISSING, None) is False
    assert raw.get(store.wire_key("k")) is None


def test_waiter_gets_the_lease_holders_value(store: MemcachedStore, twin: MemcachedStore) -> None:
    ticket = store.begin_load("k")
    got: list[LoadTicket] = []
    waiter = threading.Thread(target=lambda: got.append(twin.begin_load("k")))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()  # waiting for the lease holder, not loading
    assert store.end_load("k", ticket, {"v": 1}, None) is True
    waiter.join(10)
    assert got[0].value == {"v": 1}


def test_crashed_lease_holder_is_outwaited(memcached_url: str, unique_name: str) -> None:
    dead = MemcachedStore(memcached_url, namespace=unique_name, lease_ttl=0.3)
    alive = MemcachedStore(memcached_url, namespace=unique_name, lease_wait=0.3)
    try:
        dead.begin_load("k")  # takes the lease and never ends the load
        ticket = alive.begin_load("k")  # waits lease_wait, then loads guarded by that lease
        assert ticket.value is MISSING
        assert alive.end_load("k", ticket, "mine", None) is True
        assert alive.get("k") == "mine"
    finally:
        alive.clear()
        dead.close()
        alive.close()


def test_slow_reader_in_one_process_never_caches_old_value_after_write_in_another(
    store: MemcachedStore, twin: MemcachedStore
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
        assert result == ["old"]
        assert twin.get("k") == "new"
    finally:
        reader.close()
        writer.close()


def test_many_processes_missing_one_key_load_it_once(memcached_url: str, unique_name: str) -> None:
    source = FlakySource({"k": "v"})
    gate = threading.Event()
    source.gate = gate
    stores = [MemcachedStore(memcached_url, namespace=unique_name) for _ in range(4)]
    caches = [Cache(s, source=source, read=ReadThrough()) for s in stores]
    try:
        results: list[Any] = []
        threads = [threading.Thread(target=lambda c=c: results.append(c.read("k"))) for c in caches]
        for t in threads:
            t.start()
        while source.calls.get("load", 0) == 0:
            threading.Event().wait(0.005)
        threading.Event().wait(0.2)  # the others reach the lease and wait on it
        gate.set()
        for t in threads:
            t.join(10)
        assert results == ["v"] * 4
        assert source.calls["load"] == 1
    finally:
        stores[0].clear()
        for c in caches:
            c.close()


def test_memcached_page_examples_run(memcached_url: str, unique_name: str) -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "memcached.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        code = block.replace("memcached://127.0.0.1:11211", memcached_url)
        code = code.replace('namespace="shop"', f"namespace={unique_name!r}")
        exec(compile(code, str(page), "exec"), {"__name__": "docs_example"})
    cleaner = MemcachedStore(memcached_url, namespace=unique_name)
    cleaner.clear()
    cleaner.close()
