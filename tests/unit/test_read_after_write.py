"""A read issued after ``write()`` (or ``invalidate()``) returned never gets an older value.

Single flight lets readers of a missed key share one load. A load that started before
a write may have read the source before the write changed it: it must not hand its
value to a read that started after the write returned (issue 11 item 14). Each test
holds the first load inside its loader with a gate, so the interleaving is exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from cachewise import (
    MISSING,
    Cache,
    CacheAside,
    MappingSource,
    MemoryStore,
    ReadThrough,
    WriteAround,
)
from cachewise._types import Key


class GatedSource(MappingSource):
    """A source whose first load reads its value, then waits for ``release``."""

    def __init__(self, data: dict[Key, Any]) -> None:
        super().__init__(data)
        self.loading = threading.Event()
        self.release = threading.Event()
        self.loads = 0
        self._gated = False
        self._count = threading.Lock()

    def load(self, key: Key) -> Any:
        value = super().load(key)  # read before the write: the value a late reader must not get
        with self._count:
            self.loads += 1
            first, self._gated = not self._gated, True
        if first:
            self.loading.set()
            assert self.release.wait(30), "the test never released the first load"
        return value

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        with self._count:
            self.loads += 1
        return super().load_many(keys)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


@pytest.mark.parametrize("read_many", [False, True], ids=["read", "read_many"])
def test_write_around_a_read_after_the_write_starts_its_own_load(read_many: bool) -> None:
    source = GatedSource({"k": "old"})
    cache = Cache(MemoryStore(), source, read=ReadThrough(), write=WriteAround())
    early, early_out = _in_thread(lambda: cache.read("k"))
    assert source.loading.wait(30)  # the early load has read "old" and is held
    cache.write("k", "new")  # returns: the source has "new"
    if read_many:
        late, late_out = _in_thread(lambda: cache.read_many(["k"]).get("k"))
    else:
        late, late_out = _in_thread(lambda: cache.read("k"))
    late.join(30)
    assert not late.is_alive(), "the late read joined the load that started before the write"
    assert late_out == ["new"]
    source.release.set()
    early.join(30)
    assert early_out in (["old"], ["new"])  # it overlapped the write: either is right
    assert cache.read("k") == "new"  # and "old" was never cached
    assert source.loads == 2


def test_cache_aside_a_read_after_invalidate_starts_its_own_load() -> None:
    database: dict[Key, str] = {"k": "old"}
    gate_open = threading.Event()
    in_loader = threading.Event()
    calls: list[Any] = []

    def loader(key: Key) -> Any:
        value = database.get(key, MISSING)  # read first, as a slow query would
        calls.append(value)
        if len(calls) == 1:
            in_loader.set()
            assert gate_open.wait(30)
        return value

    cache = Cache(MemoryStore(), read=CacheAside())
    early, _ = _in_thread(lambda: cache.read("k", loader=loader))
    assert in_loader.wait(30)
    database["k"] = "new"  # the application writes its database...
    cache.invalidate("k")  # ...then tells the cache
    late, late_out = _in_thread(lambda: cache.read("k", loader=loader))
    late.join(30)
    assert not late.is_alive(), "the late read joined the load that started before the write"
    assert late_out == ["new"]
    gate_open.set()
    early.join(30)
    assert cache.read("k", loader=loader) == "new"
    assert calls == ["old", "new"]


def test_readers_that_arrive_before_the_write_still_share_the_first_load() -> None:
    source = GatedSource({"k": "old"})
    cache = Cache(MemoryStore(), source, write=WriteAround())
    first, first_out = _in_thread(lambda: cache.read("k"))
    assert source.loading.wait(30)
    second, second_out = _in_thread(lambda: cache.read("k"))
    _wait_until(lambda: cache.stats.misses == 2)  # the second reader is waiting on the first
    source.release.set()
    first.join(30)
    second.join(30)
    assert first_out == second_out == ["old"]
    assert source.loads == 1  # single flight is intact
