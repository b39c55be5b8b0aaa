"""Invalidation buses: wire format, LocalBus, RedisBus, PostgresBus and the NOTIFY trigger."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import MISSING, MemoryStore, RedisStore, TieredStore, connect
from cachewise._pgbouncer import free_port
from cachewise.errors import ClosedError, ConfigurationError, StoreError
from cachewise.invalidation import (
    Invalidation,
    InvalidationBus,
    LocalBus,
    PostgresBus,
    RedisBus,
    decode_message,
    encode_message,
    install_notify_trigger,
    remove_notify_trigger,
)
from cachewise.pool import direct_url


class Inbox:
    """A subscriber that keeps what it is told."""

    def __init__(self) -> None:
        self.messages: list[Invalidation] = []
        self._lock = threading.Lock()

    def __call__(self, message: Invalidation) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self) -> list[Any]:
        with self._lock:
            return [k for m in self.messages if m.keys is not None for k in m.keys]

    def wait(self, check: Callable[[Inbox], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not check(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


ODD_KEYS: list[Any] = [
    1,
    "1",
    b"1",
    ("a:b", "c"),
    ("a", "b:c"),
    "line\nbreak",
    "é%(,)",
    (),
    -(2**70),
]


# -- wire format and LocalBus -------------------------------------------------------------


def test_message_round_trips_keys_and_origin() -> None:
    message = decode_message(encode_message(ODD_KEYS, "me"))
    assert message == Invalidation(keys=tuple(ODD_KEYS), origin="me")
    assert [type(k) for k in message.keys or ()] == [type(k) for k in ODD_KEYS]
    assert decode_message(encode_message(None, "me")) == Invalidation(keys=None, origin="me")
    assert decode_message(encode_message([], "me")) == Invalidation(keys=(), origin="me")
    with pytest.raises(ConfigurationError):
        encode_message([1], "two\nlines")


def test_local_bus_delivers_to_every_subscriber_despite_a_broken_one() -> None:
    bus = LocalBus()
    first, last = Inbox(), Inbox()

    def broken(_: Invalidation) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(first)
    bus.subscribe(broken)
    bus.subscribe(last)
    bus.publish([1, "x"], origin="o")
    assert first.messages == last.messages == [Invalidation(keys=(1, "x"), origin="o")]
    assert isinstance(bus, InvalidationBus)
    bus.close()
    with pytest.raises(ClosedError):
        bus.publish([1])
    with pytest.raises(ConfigurationError):
        bus.subscribe("not callable")  # type: ignore[arg-type]


# -- RedisBus -----------------------------------------------------------------------------


@pytest.fixture
def redis_buses(redis_url: str, unique_name: str) -> Iterator[tuple[RedisBus, RedisBus]]:
    a = RedisBus(redis_url, channel=f"{unique_name}:inv")
    b = RedisBus(redis_url, channel=f"{unique_name}:inv")
    yield a, b
    a.close()
    b.close()


@pytest.mark.redis
def test_redis_bus_carries_typed_keys_between_connections(
    redis_buses: tuple[RedisBus, RedisBus],
) -> None:
    a, b = redis_buses
    assert a.live
    assert b.live
    inbox = Inbox()
    b.subscribe(inbox)
    a.publish(ODD_KEYS, origin="a")
    a.publish(None, origin="a")
    assert inbox.wait(lambda i: len(i.messages) == 2)
    assert inbox.messages[0] == Invalidation(keys=tuple(ODD_KEYS), origin="a")
    assert inbox.messages[1] == Invalidation(keys=None, origin="a")
    assert isinstance(a, InvalidationBus)


@pytest.mark.redis
def test_redis_bus_close_stops_its_listener(redis_url: str, unique_name: str) -> None:
    bus = RedisBus(redis_url, channel=unique_name)
    thread = bus._thread
    bus.close()
    bus.close()
    assert not thread.is_alive()
    assert not bus.live
    with pytest.raises(ClosedError):
        bus.publish([1])


def test_redis_bus_that_cannot_subscribe_raises_store_error() -> None:
    with pytest.raises(StoreError, match="could not subscribe"):
        RedisBus(f"redis://:pw-secret@127.0.0.1:{free_port()}/0", ready_timeout=0.5)


# -- PostgresBus and the trigger ----------------------------------------------------------


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    eng = connect(postgres_url)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_bus(postgres_url: str, unique_name: str) -> Iterator[PostgresBus]:
    bus = PostgresBus(postgres_url, channel=unique_name)
    yield bus
    bus.close()


@pytest.mark.postgres
def test_postgres_bus_publishes_and_receives(pg_bus: PostgresBus) -> None:
    inbox = Inbox()
    pg_bus.subscribe(inbox)
    pg_bus.publish(ODD_KEYS, origin="p")
    assert inbox.wait(lambda i: Invalidation(keys=tuple(ODD_KEYS), origin="p") in i.messages)


@pytest.mark.postgres
def test_postgres_bus_splits_large_messages_under_the_notify_limit(pg_bus: PostgresBus) -> None:
    inbox = Inbox()
    pg_bus.subscribe(inbox)
    keys = [f"key-{i:05d}-" + "x" * 40 for i in range(1000)]  # ~50 kB of keys
    pg_bus.publish(keys, origin="p")
    assert inbox.wait(lambda i: len(i.received()) == len(keys))
    assert inbox.received() == keys
    assert len(inbox.messages) > 1


@pytest.mark.postgres
def test_trigger_publishes_raw_sql_writes(
    engine: sa.Engine, postgres_url: str, unique_name: str, pg_bus: PostgresBus
) -> None:
    table = unique_name
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id integer PRIMARY KEY, name text)"))
    try:
        install_notify_trigger(engine, table, key="id", channel=unique_name)
        install_notify_trigger(postgres_url, table, key="id", channel=unique_name)  # idempotent
        inbox = Inbox()
        pg_bus.subscribe(inbox)
        with engine.begin() as conn:  # writes that bypass cachewise entirely
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')"))
            conn.execute(sa.text(f"UPDATE {table} SET id = 3 WHERE id = 2"))
            conn.execute(sa.text(f"DELETE FROM {table} WHERE id = 1"))
        # PostgreSQL folds identical notifications of one transaction into one.
        assert inbox.wait(lambda i: sorted(i.received()) == [1, 2, 3])
        assert {m.origin for m in inbox.messages} == {"db"}
        with pytest.raises(ConfigurationError):
            install_notify_trigger(engine, table, key="nope", channel=unique_name)
        with pytest.raises(ConfigurationError):
            install_notify_trigger(engine, table, channel="Bad-Channel")
    finally:
        remove_notify_trigger(engine, table)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))


@pytest.mark.postgres
def test_trigger_encodes_text_bytes_and_composite_keys_like_python(
    engine: sa.Engine, unique_name: str, pg_bus: PostgresBus
) -> None:
    table = unique_name
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (tenant text, id bigint, blob bytea, "
                "PRIMARY KEY (tenant, id))"
            )
        )
    odd = "a b,(c)%é{}\n\u202e😀"
    try:
        inbox = Inbox()
        pg_bus.subscribe(inbox)
        install_notify_trigger(engine, table, key=("tenant", "id"), channel=unique_name)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {table} VALUES (:t, :i, :b)"),
                {"t": odd, "i": -5, "b": b"\x00a(,)"},
            )
        assert inbox.wait(lambda i: i.received() == [(odd, -5)])
        install_notify_trigger(engine, table, key="blob", channel=unique_name)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {table}"))
        assert inbox.wait(lambda i: i.received()[1:] == [b"\x00a(,)"])
    finally:
        remove_notify_trigger(engine, table)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))


@pytest.mark.postgres
@pytest.mark.redis
def test_raw_sql_update_drops_tiered_l1_through_the_postgres_bus(
    engine: sa.Engine, redis_url: str, unique_name: str, pg_bus: PostgresBus
) -> None:
    table = unique_name
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id integer PRIMARY KEY, name text)"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (7, 'old')"))
    store = TieredStore(MemoryStore(), RedisStore(redis_url, namespace=unique_name), pg_bus)
    try:
        install_notify_trigger(engine, table, key="id", channel=unique_name)
        store.set(7, {"id": 7, "name": "old"})
        assert store.l1.get(7) == {"id": 7, "name": "old"}
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {table} SET name = 'new' WHERE id = 7"))
        deadline = time.monotonic() + 10
        while store.l1.get(7) is not MISSING:
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        store.l2.clear()
        store.close()
        remove_notify_trigger(engine, table)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))


@pytest.mark.postgres
def test_postgres_bus_reconnects_and_tells_subscribers(
    engine: sa.Engine, pg_bus: PostgresBus, unique_name: str
) -> None:
    inbox = Inbox()
    pg_bus.subscribe(inbox)
    with engine.begin() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query = :q AND pid <> pg_backend_pid()"
            ),
            {"q": f'LISTEN "{unique_name}"'},
        ).scalar()
    assert killed == 1
    assert inbox.wait(lambda i: [m.live for m in i.messages if m.keys is None][:2] == [False, True])
    assert pg_bus.live
    assert pg_bus.reconnects >= 1
    pg_bus.publish([5], origin="p")
    assert inbox.wait(lambda i: 5 in i.received())


def test_postgres_bus_refuses_bad_channels_and_urls() -> None:
    with pytest.raises(ConfigurationError):
        PostgresBus("postgresql://localhost/db", channel="Has Space")
    with pytest.raises(ConfigurationError):
        PostgresBus("mysql+pymysql://root@localhost/test")


@pytest.mark.postgres
def test_postgres_bus_behind_pgbouncer_listens_on_postgresql_itself(
    pgbouncer_url: str, unique_name: str
) -> None:
    # LISTEN through a transaction pooler would lose its session: the bus must take the
    # URL's direct address, and a connect() engine's, not PgBouncer's.
    direct_port = str(direct_url(pgbouncer_url).port)
    engine = connect(pgbouncer_url)
    buses = [
        PostgresBus(pgbouncer_url, channel=unique_name),
        PostgresBus(engine, channel=unique_name),
    ]
    try:
        inbox = Inbox()
        buses[0].subscribe(inbox)
        for bus in buses:
            assert f":{direct_port}/" in repr(bus)
            assert "pgbouncer" not in repr(bus)
        buses[1].publish([1, "two"], origin="p")
        assert inbox.wait(lambda i: Invalidation(keys=(1, "two"), origin="p") in i.messages)
    finally:
        for bus in buses:
            bus.close()
        engine.dispose()


def test_postgres_bus_refuses_a_pgbouncer_url_without_a_direct_address() -> None:
    with pytest.raises(ConfigurationError, match="direct"):
        PostgresBus("postgresql://app:pw-secret@127.0.0.1:6432/db?pgbouncer=true")
