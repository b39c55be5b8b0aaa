"""asyncio: AsyncCache against cashews, aiocache, async-lru and a bare psycopg_pool.

Interleaved round by round in one process and one event loop; the median of the
rounds is reported, with ratios against the peer measured in the same round:

- ``hit``: ``await cache.read(k)`` on a hit (MemoryStore, TTL and stats on) against
  cashews ``mem://`` ``get``, aiocache ``SimpleMemoryCache.get`` and an async-lru
  function, over the same keys (all hits);
- ``miss``: a read-through miss on PostgreSQL through ``AsyncSQLSource`` against a
  primary-key ``SELECT`` on a ``psycopg_pool.AsyncConnectionPool`` (same table);
- ``writes``: write-back accepted writes per second against async write-through, on
  PostgreSQL;
- ``stampede``: 1,000 tasks missing the same key at once, and how many loads ran;
- ``mariadb``: the same primary-key read through asyncmy and through aiomysql.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

NAME = "aio"
PG = os.environ.get("DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
MYSQL = os.environ.get("MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
ROWS = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=100_000, help="hits per round")
    parser.add_argument("--misses", type=int, default=500, help="misses per round")
    parser.add_argument("--writes", type=int, default=300, help="write-through writes per round")
    parser.add_argument("--rounds", type=int, default=7)


async def _timed(fn: Callable[[Any], Awaitable[Any]], keys: list[Any]) -> float:
    start = time.perf_counter()
    for key in keys:
        await fn(key)
    return time.perf_counter() - start


def _median_ns(samples: list[float], ops: int) -> float:
    return statistics.median(samples) / ops * 1e9


async def hits(args: argparse.Namespace) -> dict[str, Any]:
    import aiocache
    from async_lru import alru_cache
    from cashews import Cache as Cashews

    from cachewise import MemoryStore
    from cachewise.aio import AsyncCache

    keys = [n % 5000 for n in range(args.ops)]
    ours = AsyncCache(MemoryStore(max_entries=10_000, ttl=3600))
    cashews = Cashews()
    cashews.setup("mem://?size=10000")
    simple = aiocache.SimpleMemoryCache()
    for key in range(5000):
        await ours.write(key, {"id": key})
        await cashews.set(str(key), {"id": key}, expire=3600)
        await simple.set(key, {"id": key}, ttl=3600)

    @alru_cache(maxsize=10_000, ttl=3600)
    async def lru(key: int) -> dict[str, int]:
        return {"id": key}

    for key in range(5000):
        await lru(key)

    async def cashews_get(key: int) -> Any:
        return await cashews.get(str(key))

    candidates: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "cachewise AsyncCache.read": ours.read,
        "cashews mem:// get": cashews_get,
        "aiocache SimpleMemoryCache.get": simple.get,
        "async-lru": lru,
    }
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_no in range(args.rounds):
        for name in names[round_no % len(names) :] + names[: round_no % len(names)]:
            timings[name].append(await _timed(candidates[name], keys))
    assert ours.stats.hits >= args.ops * args.rounds
    ns = {name: _median_ns(t, len(keys)) for name, t in timings.items()}
    ours_ns = ns["cachewise AsyncCache.read"]
    return {
        "ns_per_hit": {k: round(v, 1) for k, v in ns.items()},
        "vs_cashews": round(ours_ns / ns["cashews mem:// get"], 3),
        "vs_async_lru": round(ours_ns / ns["async-lru"], 3),
        "vs_aiocache": round(ours_ns / ns["aiocache SimpleMemoryCache.get"], 3),
    }


def _make_table(url: str) -> str:
    import sqlalchemy as sa

    from cachewise import connect

    name = f"cw_bench_{uuid.uuid4().hex[:8]}"
    engine = connect(url, pool_size=0)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(40))"))
        rows = [{"id": n, "name": f"item {n}"} for n in range(ROWS)]
        conn.execute(sa.text(f"INSERT INTO {name} (id, name) VALUES (:id, :name)"), rows)
    engine.dispose()
    return name


def _drop_table(url: str, name: str) -> None:
    import sqlalchemy as sa

    from cachewise import connect

    engine = connect(url, pool_size=0)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {name}"))
    engine.dispose()


async def misses(args: argparse.Namespace, table: str) -> dict[str, Any]:
    from psycopg_pool import AsyncConnectionPool

    from cachewise import MemoryStore
    from cachewise.aio import AsyncCache, AsyncSQLSource

    source = AsyncSQLSource(PG, table=table)
    conninfo = PG.replace("postgresql+psycopg://", "postgresql://")
    pool = AsyncConnectionPool(conninfo, min_size=5, max_size=5, open=False)
    await pool.open()
    await pool.wait()
    select = f"SELECT id, name FROM {table} WHERE id = %s"

    async def peer(key: int) -> Any:
        async with pool.connection() as conn:
            cursor = await conn.execute(select, (key,))
            return await cursor.fetchone()

    await source.load(0)  # reflect once, outside the timing
    keys = list(range(args.misses))
    ours_t: list[float] = []
    peer_t: list[float] = []
    for round_no in range(args.rounds):
        cache = AsyncCache(MemoryStore(max_entries=ROWS), source)
        order = [("ours", cache.read), ("peer", peer)]
        if round_no % 2:
            order.reverse()
        for name, fn in order:
            (ours_t if name == "ours" else peer_t).append(await _timed(fn, keys))
        assert cache.stats.loads == len(keys)
    await pool.close()
    ours_us = _median_ns(ours_t, len(keys)) / 1000
    peer_us = _median_ns(peer_t, len(keys)) / 1000
    result = {
        "read_through_miss_us": round(ours_us, 1),
        "psycopg_pool_select_us": round(peer_us, 1),
        "ratio": round(ours_us / peer_us, 3),
    }
    await stampede(source, result)
    await source.close()
    return result


async def stampede(source: Any, result: dict[str, Any]) -> None:
    from cachewise import MemoryStore
    from cachewise.aio import AsyncCache

    cache = AsyncCache(MemoryStore(), source)
    values = await asyncio.gather(*(cache.read(7) for _ in range(1000)))
    assert all(v == values[0] for v in values)
    result["stampede_1000_tasks_loads"] = cache.stats.loads


async def writes(args: argparse.Namespace, table: str) -> dict[str, Any]:
    from cachewise import MemoryStore, WriteBack
    from cachewise.aio import AsyncCache, AsyncSQLSource

    source = AsyncSQLSource(PG, table=table)
    back_t: list[float] = []
    through_t: list[float] = []
    back_ops = args.writes * 100
    for _ in range(args.rounds):
        through = AsyncCache(MemoryStore(max_entries=ROWS * 2), source)
        keys = [n % ROWS for n in range(args.writes)]
        start = time.perf_counter()
        for key in keys:
            await through.write(key, {"id": key, "name": "through"})
        through_t.append(time.perf_counter() - start)
        back = AsyncCache(
            MemoryStore(max_entries=ROWS * 2),
            AsyncSQLSource(PG, table=table),  # closed with its cache
            write=WriteBack(flush_interval=0.5, max_dirty=1_000_000),
        )
        start = time.perf_counter()
        for n in range(back_ops):
            key = n % ROWS
            await back.write(key, {"id": key, "name": f"back {n}"})
        back_t.append(time.perf_counter() - start)
        await back.close()  # flushes what it accepted (not timed: that is the point)
    await source.close()
    through_per_s = args.writes / statistics.median(through_t)
    back_per_s = back_ops / statistics.median(back_t)
    return {
        "write_back_accepted_per_s": round(back_per_s),
        "write_through_per_s": round(through_per_s),
        "ratio": round(back_per_s / through_per_s, 1),
    }


async def mariadb(args: argparse.Namespace) -> dict[str, Any]:
    from cachewise.aio import AsyncSQLSource

    table = _make_table(MYSQL)
    try:
        sources = {
            driver: AsyncSQLSource(MYSQL.replace("+pymysql", f"+{driver}"), table=table)
            for driver in ("asyncmy", "aiomysql")
        }
        keys = list(range(args.misses))
        timings: dict[str, list[float]] = {d: [] for d in sources}
        for src in sources.values():
            await src.load(0)
        for round_no in range(args.rounds):
            order = list(sources) if round_no % 2 == 0 else list(reversed(sources))
            for driver in order:
                timings[driver].append(await _timed(sources[driver].load, keys))
            for driver in order:
                batch = sources[driver]

                async def load_batch(k: int, src: Any = batch) -> Any:
                    return await src.load_many(range(k, k + 50))

                timings[driver][-1] += await _timed(load_batch, keys[:50])
        for src in sources.values():
            await src.close()
    finally:
        _drop_table(MYSQL, table)
    us = {d: _median_ns(t, len(keys)) / 1000 for d, t in timings.items()}
    return {"us_per_read": {d: round(v, 1) for d, v in us.items()}}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    out["hit"] = await hits(args)
    table = _make_table(PG)
    try:
        out["miss"] = await misses(args, table)
        out["writes"] = await writes(args, table)
    finally:
        _drop_table(PG, table)
    out["mariadb"] = await mariadb(args)
    out["load_average_after"] = os.getloadavg()[0]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = asyncio.run(_main(args))
    for section, values in result.items():
        print(f"{section}: {values}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    run(parser.parse_args())
