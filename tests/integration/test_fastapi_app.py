"""examples/fastapi_app through httpx's ASGI transport, on the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from examples.fastapi_app.app import Caches, Settings, create_app

from cachewise import RedisStore, connect

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(
    postgres_url: str, redis_url: str, unique_name: str, tmp_path: Path
) -> Iterator[Settings]:
    products, views = f"{unique_name}_products", f"{unique_name}_views"
    engine = connect(postgres_url, pool_size=0)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {products} (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(
            sa.text(f"CREATE TABLE {views} (product_id INTEGER PRIMARY KEY, views INTEGER)")
        )
        conn.execute(sa.text(f"INSERT INTO {products} VALUES (1, 'tea'), (2, 'coffee')"))
    yield Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        journal=str(tmp_path / "views.journal"),
        products_table=products,
        views_table=views,
        namespace=unique_name,
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {products}"))
        conn.execute(sa.text(f"DROP TABLE {views}"))
    engine.dispose()
    store = RedisStore(redis_url, namespace=unique_name)
    store.clear()
    store.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Caches]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):  # what uvicorn does at start and stop
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            yield http, app.state.caches


def _views(settings: Settings) -> dict[int, int]:
    engine = connect(settings.database_url, pool_size=0)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT product_id, views FROM {settings.views_table}"))
        found = {int(r[0]): int(r[1]) for r in rows}
    engine.dispose()
    return found


async def test_reads_are_cached_and_views_are_written_back(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            first = await asyncio.gather(*(http.get("/products/1") for _ in range(20)))
            assert {r.json()["name"] for r in first} == {"tea"}
            caches: Caches = app.state.caches
            assert caches.products.stats.source_reads == 1  # one load for 20 requests
            assert (await http.get("/products/1/views")).json()["views"] == 20
            assert _views(settings) == {}  # not yet in the database: write-back
            assert (await http.get("/products/404")).status_code == 404
    assert _views(settings) == {1: 20}  # the lifespan's close flushed them


async def test_put_is_written_through(
    client: tuple[httpx.AsyncClient, Caches], settings: Settings
) -> None:
    http, caches = client
    assert (await http.get("/products/2")).json() == {"id": 2, "name": "coffee"}
    response = await http.put("/products/2", json={"name": "espresso"})
    assert response.status_code == 200
    assert (await http.get("/products/2")).json() == {"id": 2, "name": "espresso"}
    engine = connect(settings.database_url, pool_size=0)
    with engine.connect() as conn:
        name = conn.execute(
            sa.text(f"SELECT name FROM {settings.products_table} WHERE id = 2")
        ).scalar()
    engine.dispose()
    assert name == "espresso"
    assert caches.products.stats.source_writes == 1
