"""Log events on Redis: an undecodable dirty row once per key; a bus outage once, then live.

The shared write-back meets a dirty mark whose value cannot be decoded on every flush
and read: it is counted each time and logged once. Our own Redis is SIGKILLed under a
RedisBus and started again: one WARNING when the bus goes down, the reconnect attempts
at DEBUG, one INFO when it is subscribed again.
"""

from __future__ import annotations

import logging

import pytest
import redis

from cachewise import Cache, MappingSource, RedisStore, WriteBack
from cachewise.codecs import encode_key
from cachewise.invalidation import RedisBus
from tests.helpers import events, wait_for
from tests.servers import RedisServer


def test_an_undecodable_dirty_row_is_logged_once_per_key(
    redis_url: str, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = redis_namespace
    caplog.set_level(logging.WARNING, logger="cachewise")
    source = MappingSource({})
    cache = Cache(
        RedisStore(redis_url, namespace=namespace),
        source,
        write=WriteBack(journal="redis", flush_interval=3600.0),
        name=namespace,
    )
    raw = redis.Redis.from_url(redis_url)
    try:
        cache.write_many({"bad": 1, "good": 2})
        raw.hset(f"{namespace}:{{{encode_key('bad')}}}:d", "p", b"\xc1 not msgpack")
        for _ in range(3):
            cache.flush()
        cache.read("bad")  # the read path meets the same row: no second line
        assert source.data == {"good": 2}
        assert cache._flusher.undecodable.value >= 3  # type: ignore[union-attr]
        (record,) = events(caplog, "undecodable_row")
        assert record.levelno == logging.WARNING
        assert record.name == "cachewise.writeback"
        assert record.cache == namespace  # type: ignore[attr-defined]
        assert record.key == encode_key("bad")  # type: ignore[attr-defined]
    finally:
        raw.delete(f"{namespace}:{{{encode_key('bad')}}}:d")  # let close() finish clean
        raw.close()
        cache.close()


@pytest.mark.slow
def test_a_bus_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cachewise.invalidation")
    server = RedisServer()
    try:
        server.start()
        bus = RedisBus(server.url, channel="cw-log-test")
        try:
            server.kill()
            assert wait_for(lambda: not bus.live)
            assert wait_for(lambda: len(events(caplog, "bus_reconnect_failed")) >= 2)
            server.start()
            assert wait_for(lambda: bus.live)
            assert wait_for(lambda: len(events(caplog, "bus_live")) == 1)
        finally:
            bus.close()
    finally:
        server.close()
    (down,) = events(caplog, "bus_down")
    assert down.levelno == logging.WARNING
    assert {r.levelno for r in events(caplog, "bus_reconnect_failed")} == {logging.DEBUG}
    (live,) = events(caplog, "bus_live")
    assert live.levelno == logging.INFO
    assert live.seconds > 0  # type: ignore[attr-defined]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [down]
