"""Redis holds the longest duration cachewise accepts: TTLs and leases at the limit work."""

from __future__ import annotations

import redis

from cachewise import RedisStore
from cachewise._types import MAX_SECONDS


def test_a_ttl_and_a_lease_at_the_limit_are_kept_by_redis(redis_url: str, unique_name: str) -> None:
    store = RedisStore(redis_url, namespace=unique_name, ttl=MAX_SECONDS, lease_ttl=MAX_SECONDS)
    raw = redis.Redis.from_url(redis_url)
    try:
        store.set(1, "tea")
        store.set(2, "cake", ttl=MAX_SECONDS)
        assert store.get(1) == "tea"
        assert store.get(2) == "cake"
        # Redis kept the expiry (not refused it, not turned it into "no expiry").
        assert raw.pttl(store.wire_key(1)) > (MAX_SECONDS - 60) * 1000
        ticket = store.begin_load(3)
        assert ticket is not None
        assert store.end_load(3, ticket, "scone", None)
        assert store.get(3) == "scone"
    finally:
        store.close()
        for wire in raw.scan_iter(match=unique_name + ":*"):
            raw.unlink(wire)
        raw.close()
