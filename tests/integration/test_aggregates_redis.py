"""Aggregates whose cached rows live in Redis: shared by every process reading them."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cachewise import Aggregate, RedisStore, connect

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_two_readers_share_rows_in_redis_and_follow_a_refresh(
    postgres_url: str, redis_url: str, unique_name: str
) -> None:
    engine = connect(postgres_url)
    src, name = f"{unique_name}_src", f"{unique_name}_agg"
    stores = [RedisStore(redis_url, namespace=unique_name) for _ in range(2)]
    query = (
        f"SELECT g, date_trunc('hour', t) AS h, SUM(a) AS s FROM {src} "
        "GROUP BY g, date_trunc('hour', t)"
    )
    hour = dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TABLE {src} (id INT PRIMARY KEY, g TEXT, a NUMERIC, t TIMESTAMPTZ)"
                )
            )
            conn.execute(
                sa.text(f"INSERT INTO {src} VALUES (1, 'x', 1.5, :t), (2, 'y', 2, :t)"), {"t": hour}
            )
        with (
            Aggregate(engine, name, query, key=("g", "h"), store=stores[0]) as one,
            Aggregate(
                engine, name, query, key=("g", "h"), store=stores[1], check_interval=0.05
            ) as two,
        ):
            assert one.read(("x", hour))["s"] == Decimal("1.5")
            assert two.read(("x", hour))["s"] == Decimal("1.5")
            assert (two.stats.hits, two.stats.loads) == (1, 0)  # loaded by the other reader
            with engine.begin() as conn:
                conn.execute(sa.text(f"UPDATE {src} SET a = 9 WHERE id = 1"))
            one.refresh()
            assert one.read(("x", hour))["s"] == Decimal("9")
            deadline = time.monotonic() + 10
            while two.read(("x", hour))["s"] != Decimal("9") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert two.read(("x", hour))["s"] == Decimal("9")
            one.drop()
    finally:
        for store in stores:
            store.clear()
            store.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {src} CASCADE"))
            conn.execute(sa.text("DELETE FROM cachewise_aggregates WHERE name = :n"), {"n": name})
        engine.dispose()
