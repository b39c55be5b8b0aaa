"""Bad input gets one clear error before anything changes, for every strategy and store.

Issue 12: on Redis write-through, ``ttl=inf``, ``ttl=1e300`` or an ``IntEnum`` value
changed the source first and then raised ``StoreError``; a 5,000-deep tuple key and a
250-deep value raised ``RecursionError``. Every case here checks the error's type, that
the source saw no call at all, and that the cached value is still the old one. A value
refused only by a codec is accepted where nothing encodes it (an in-process store keeps
any object; write-around never caches it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewise import (
    Cache,
    MemoryStore,
    RedisStore,
    TieredStore,
    WriteAround,
    WriteBack,
    WriteThrough,
)
from cachewise.errors import CodecError, ConfigurationError, InvalidKeyError
from cachewise.policies import WritePolicy
from cachewise.stores.base import Store
from tests.helpers import FlakySource


class Level(enum.IntEnum):
    HIGH = 3


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = (value,)
    return value


# (name, the call, the error, whether only a store with a codec refuses it)
BAD: list[tuple[str, Callable[[Cache], object], type[Exception], bool]] = [
    ("ttl-inf", lambda c: c.write("k", {"v": 2}, ttl=float("inf")), ConfigurationError, False),
    ("ttl-1e300", lambda c: c.write("k", {"v": 2}, ttl=1e300), ConfigurationError, False),
    ("ttl-nan", lambda c: c.write("k", {"v": 2}, ttl=float("nan")), ConfigurationError, False),
    ("ttl-huge-int", lambda c: c.write("k", {"v": 2}, ttl=10**400), ConfigurationError, False),
    (
        "many-ttl-inf",
        lambda c: c.write_many({"k": {"v": 2}}, ttl=float("inf")),
        ConfigurationError,
        False,
    ),
    ("intenum-value", lambda c: c.write("k", {"v": Level.HIGH}), CodecError, True),
    ("many-intenum", lambda c: c.write_many({"j": {"v": 1}, "k": Level.HIGH}), CodecError, True),
    ("deep-value", lambda c: c.write("k", {"v": _deep(250)}), CodecError, True),
    ("deep-key", lambda c: c.write(_deep(5_000), {"v": 2}), InvalidKeyError, False),
    ("deep-key-delete", lambda c: c.delete(_deep(5_000)), InvalidKeyError, False),
    ("float-key", lambda c: c.write(1.0, {"v": 2}), InvalidKeyError, False),  # type: ignore[arg-type]
]

POLICIES: dict[str, Callable[[Path], WritePolicy | None]] = {
    "cache-aside": lambda _: None,
    "write-through": lambda _: WriteThrough(),
    "write-around": lambda _: WriteAround(),
    "write-back": lambda _: WriteBack(flush_interval=3600),
    "write-back-journal": lambda tmp: WriteBack(flush_interval=3600, journal=str(tmp / "j")),
}


@pytest.fixture(params=["memory", "redis", "tiered"])
def make_store(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Callable[[], Store]]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore
        return
    url = request.getfixturevalue("redis_url")

    def make() -> Store:
        l2 = RedisStore(url, namespace=unique_name)
        return l2 if kind == "redis" else TieredStore(MemoryStore(), l2)

    yield make
    raw = redis.Redis.from_url(url)
    for wire in raw.scan_iter(match=unique_name + ":*", count=1000):
        raw.unlink(wire)
    raw.close()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("case", "call", "error", "codec_only"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_the_source_or_the_cache_changes(
    make_store: Callable[[], Store],
    tmp_path: Path,
    policy: str,
    case: str,
    call: Callable[[Cache], object],
    error: type[Exception],
    codec_only: bool,
) -> None:
    store = make_store()
    write = POLICIES[policy](tmp_path)
    source = FlakySource({"k": {"v": 1}})
    cache = Cache(store, source if write is not None else None, write=write)
    try:
        store.set("k", {"v": 1})
        source.calls.clear()
        # The value is encoded if a Redis store caches it, or a journal records it.
        cached_in_redis = not isinstance(store, MemoryStore) and policy != "write-around"
        encoded = cached_in_redis or policy == "write-back-journal"
        if codec_only and not encoded:
            call(cache)  # nothing encodes it here: refused only where it must be
            return
        with pytest.raises(error):
            call(cache)
        assert source.calls == {}, case
        assert source.data == {"k": {"v": 1}}
        assert store.get("k") == {"v": 1}
        assert cache.dirty_keys() == []
    finally:
        cache.close()
