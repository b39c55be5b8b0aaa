"""SQL miss path: ``Cache`` over ``SQLSource`` on PostgreSQL against psycopg_pool doing the same.

Three measures, each against the raw query a user would write on a ``psycopg_pool``
``ConnectionPool`` of the same size (5), in the same process and rounds:

* a ``Cache.read(k)`` miss (read-through ``SQLSource.load``) against a primary-key
  ``SELECT`` of the same row (``with pool.connection() as conn: conn.execute(...)``);
* ``Cache.read_many`` of 100 misses against one ``SELECT ... WHERE id = ANY(%s)``;
* a write-through ``Cache.write`` against a raw single-row upsert and its commit.

``SQLSource (Core path)`` is the same source on an engine whose statements a no-op
``before_cursor_execute`` listener watches, which keeps it on SQLAlchemy's Core path
(the path before the fast lane, and the one every other dialect takes).
Contenders are interleaved round by round (the order rotates); each round every
contender runs ``--ops`` requests on fresh keys (a new cache per round, so every read
misses); reported: the median over rounds of wall-clock µs per request, and the
ratio to the peer. ``--profile`` prints a cProfile summary of each cachewise path.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

NAME = "sqlmiss"
ROWS = 20_000
PG = os.environ.get("DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")

Request = Callable[[int], object]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=300, help="requests per contender per round")
    parser.add_argument("--batches", type=int, default=20, help="read_many calls per round")
    parser.add_argument("--profile", action="store_true", help="print a profile per path")


def _conninfo() -> str:
    return PG.replace("postgresql+psycopg://", "postgresql://")


def _make_table(name: str) -> None:
    import psycopg

    with psycopg.connect(_conninfo(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (id integer PRIMARY KEY, name text NOT NULL,"
            " price numeric(12, 2) NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {name} SELECT g, 'item ' || g, g %% 1000 / 10.0"
            " FROM generate_series(0, %s) AS g",
            (ROWS - 1,),
        )
        conn.execute(f"ANALYZE {name}")


def _drop_table(name: str) -> None:
    import psycopg

    with psycopg.connect(_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _rounds(
    contenders: dict[str, Callable[[int], Callable[[], None]]], rounds: int
) -> dict[str, list[float]]:
    """Seconds per round of each contender; ``contenders[name](round)`` builds the run."""
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            run = contenders[name](round_no)
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _profile(label: str, run: Callable[[], None]) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    return f"--- {label}\n" + out.getvalue()


class _Contenders:
    """Builds each contender's run for a round: fresh keys, a fresh cache."""

    def __init__(self, table: str, lane: Any, core: Any, pool: Any, args: Any) -> None:
        self.lane, self.core, self.pool = lane, core, pool
        self.ops, self.batches, self.rounds = args.ops, args.batches, args.rounds
        self.select = f"SELECT id, name, price FROM {table} WHERE id = %s"
        self.select_many = f"SELECT id, name, price FROM {table} WHERE id = ANY(%s)"
        self.upsert = (
            f"INSERT INTO {table} (id, name, price) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, price = excluded.price"
        )

    def keys_of(self, slot: int, round_no: int) -> list[int]:
        """Keys no earlier round of the contender in ``slot`` used (fresh misses)."""
        start = (slot * self.ops * (self.rounds + 2) + round_no * self.ops) % (ROWS - self.ops)
        return list(range(start, start + self.ops))

    def batch_keys(self, slot: int, round_no: int) -> list[list[int]]:
        width = self.batches * 100
        base = (slot * (self.rounds + 2) + round_no) * width % (ROWS - width)
        return [list(range(base + b * 100, base + b * 100 + 100)) for b in range(self.batches)]

    def cache(self, source: Any) -> Any:
        from cachewise import Cache, MemoryStore

        return Cache(MemoryStore(max_entries=ROWS), source)

    def reads(self, source: Any, slot: int) -> Callable[[int], Callable[[], None]]:
        def build(round_no: int) -> Callable[[], None]:
            keys, read = self.keys_of(slot, round_no), self.cache(source).read

            def go() -> None:
                for key in keys:
                    read(key)

            return go

        return build

    def peer_reads(self, round_no: int) -> Callable[[], None]:
        keys, pool, select = self.keys_of(2, round_no), self.pool, self.select

        def go() -> None:
            for key in keys:
                with pool.connection() as conn:
                    conn.execute(select, (key,)).fetchone()

        return go

    def many(self, source: Any, slot: int) -> Callable[[int], Callable[[], None]]:
        def build(round_no: int) -> Callable[[], None]:
            groups, cache = self.batch_keys(slot, round_no), self.cache(source)

            def go() -> None:
                for keys in groups:
                    assert len(cache.read_many(keys)) == 100

            return go

        return build

    def peer_many(self, round_no: int) -> Callable[[], None]:
        groups, pool, select = self.batch_keys(2, round_no), self.pool, self.select_many

        def go() -> None:
            for keys in groups:
                with pool.connection() as conn:
                    assert len(conn.execute(select, (keys,)).fetchall()) == 100

        return go

    def writes(self, source: Any, slot: int) -> Callable[[int], Callable[[], None]]:
        def build(round_no: int) -> Callable[[], None]:
            keys, write = self.keys_of(slot, round_no), self.cache(source).write

            def go() -> None:
                for key in keys:
                    write(key, {"id": key, "name": f"w{round_no}", "price": key % 7})

            return go

        return build

    def peer_writes(self, round_no: int) -> Callable[[], None]:
        keys, pool, upsert = self.keys_of(2, round_no), self.pool, self.upsert

        def go() -> None:
            for key in keys:
                with pool.connection() as conn:
                    conn.execute(upsert, (key, f"w{round_no}", key % 7))

        return go

    def measures(self) -> dict[str, tuple[dict[str, Callable[[int], Callable[[], None]]], int]]:
        lane, core = self.lane, self.core
        return {
            "read miss": (
                {"ours": self.reads(lane, 0), "core": self.reads(core, 1), "peer": self.peer_reads},
                self.ops,
            ),
            "read_many of 100 misses": (
                {"ours": self.many(lane, 0), "core": self.many(core, 1), "peer": self.peer_many},
                self.batches,
            ),
            "write-through write": (
                {
                    "ours": self.writes(lane, 0),
                    "core": self.writes(core, 1),
                    "peer": self.peer_writes,
                },
                self.ops,
            ),
        }


def _figures(seconds: dict[str, list[float]], per_round: int) -> dict[str, float]:
    us = {n: statistics.median(s) / per_round * 1e6 for n, s in seconds.items()}
    ratios = [o / p for o, p in zip(seconds["ours"], seconds["peer"], strict=True)]
    return {
        "cachewise_us": round(us["ours"], 1),
        "core_path_us": round(us["core"], 1),
        "psycopg_pool_us": round(us["peer"], 1),
        "ratio": round(us["ours"] / us["peer"], 3),
        "ratio_per_round_median": round(statistics.median(ratios), 3),
        "core_ratio": round(us["core"] / us["peer"], 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa
    from psycopg_pool import ConnectionPool

    from cachewise import SQLSource, connect

    table = f"cw_sqlmiss_{uuid.uuid4().hex[:8]}"
    _make_table(table)
    lane_engine = connect(PG, pool_size=5)
    core_engine = connect(PG, pool_size=5)
    sa.event.listen(core_engine, "before_cursor_execute", lambda *a: None)
    pool = ConnectionPool(_conninfo(), min_size=5, max_size=5, open=True)
    pool.wait()
    lane = SQLSource(lane_engine, table)
    core = SQLSource(core_engine, table)
    result: dict[str, Any] = {
        "rows": ROWS,
        "ops": args.ops,
        "batches": args.batches,
        "rounds": args.rounds,
    }
    try:
        lane.load(0), core.load(0), lane.load_many([0, 1]), core.load_many([0, 1])  # warm
        measures = _Contenders(table, lane, core, pool, args).measures()
        print(f"{'measure':26} {'cachewise':>11} {'Core path':>11} {'psycopg_pool':>13} ratio")
        for label, (contenders, per_round) in measures.items():
            row = result[label] = _figures(_rounds(contenders, args.rounds), per_round)
            print(
                f"{label:26} {row['cachewise_us']:9.1f}µs {row['core_path_us']:9.1f}µs "
                f"{row['psycopg_pool_us']:11.1f}µs {row['ratio']:.2f}× "
                f"(per round {row['ratio_per_round_median']:.2f}×, Core {row['core_ratio']:.2f}×)"
            )
        if args.profile:
            for label, (contenders, _) in measures.items():
                for who in ("ours", "core"):
                    print(_profile(f"{label}, {who}", contenders[who](args.rounds + 1)))
    finally:
        lane.close()
        core.close()
        lane_engine.dispose()
        core_engine.dispose()
        pool.close()
        _drop_table(table)
    return result
