"""The write-back integrity fixes (issue 11) in AsyncCache, the second driver of the same
flows: refused rows isolated and parked, retried and discarded; writes racing
``close()``; the journal's parked writes; the lag in its stats."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cachewise import MappingSource, MemoryStore, WriteBack
from cachewise._types import Key
from cachewise.aio import AsyncCache
from cachewise.errors import ClosedError, FlushError, RejectedError
from cachewise.writeback.journal import inspect_journal
from cachewise.writeback.lag import SAMPLE_EVERY

pytestmark = pytest.mark.anyio


class Picky(MappingSource):
    """A dict that refuses negative values, as a CHECK constraint would."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = True

    def save_many(self, items: Mapping[Key, Any]) -> None:
        if self.refuse and any(v < 0 for v in items.values()):
            raise RejectedError("value must be >= 0")
        super().save_many(items)


async def test_refused_rows_are_parked_and_the_others_written(tmp_path: Path) -> None:
    source = Picky()
    cache = AsyncCache(
        MemoryStore(), source, write=WriteBack(flush_interval=3600, journal=tmp_path / "j")
    )
    try:
        await cache.write_many({1: 1, 2: -2, 3: 3, 4: -4})
        with pytest.raises(FlushError, match="refused the writes of 2 keys") as info:
            await cache.flush()
        assert set(info.value.rejected) == {2, 4}
        assert source.data == {1: 1, 3: 3}
        assert {k: p.value for k, p in (await cache.rejected()).items()} == {2: -2, 4: -4}
        assert cache.stats.rejected == 2
        assert await cache.read(2) is None  # the refused value is not served
        source.refuse = False
        assert await cache.retry_rejected([2]) == 1
        assert await cache.flush() == 1
        assert source.data[2] == -2
        assert await cache.discard_rejected() == 1
        assert await cache.rejected() == {}
    finally:
        await cache.close()
    assert not [r for r in inspect_journal(tmp_path / "j").records if r.rejected]


async def _writer(cache: AsyncCache, n: int, acked: list[Key], refused: list[Key]) -> None:
    for i in range(10_000):
        try:
            await cache.write((n, i), i)
        except ClosedError:
            refused.append((n, i))
            return
        acked.append((n, i))
        await asyncio.sleep(0)


async def test_every_async_write_racing_close_is_flushed_or_refused() -> None:
    for _ in range(20):
        source = MappingSource()
        cache = AsyncCache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
        acked: list[Key] = []
        refused: list[Key] = []
        tasks = [asyncio.create_task(_writer(cache, n, acked, refused)) for n in range(8)]
        await asyncio.sleep(0.005)
        await cache.close()
        await asyncio.gather(*tasks)
        assert set(acked) <= set(source.data)
        assert not set(refused) & set(source.data)


async def test_the_async_stats_report_the_lag() -> None:
    cache = AsyncCache(MemoryStore(), MappingSource(), write=WriteBack(flush_interval=3600))
    try:
        for i in range(2 * SAMPLE_EVERY):
            await cache.write(i, i)
        await cache.flush()
        stats = cache.stats
        assert 0.0 < stats.lag_p50 <= stats.lag_p99 <= stats.lag_max
    finally:
        await cache.close()
