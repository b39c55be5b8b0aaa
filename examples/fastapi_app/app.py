r"""Products in PostgreSQL behind a read-through AsyncTieredStore; view counts by write-back.

Run it (one process per worker, each with its own caches, opened in the lifespan)::

    DATABASE_URL=postgresql+psycopg://root@127.0.0.1:5432/test \\
    REDIS_URL=redis://127.0.0.1:6379/0 JOURNAL=/var/lib/shop/views.journal \\
    uvicorn examples.fastapi_app.app:app

- ``GET /products/{id}``: read-through (L1 memory, L2 Redis shared by every worker,
  the database on a miss; one load per key however many requests miss at once), and
  one view counted by write-back (a dict write; flushed in batches every second).
- ``PUT /products/{id}``: write-through: the database, then Redis, then every
  worker's L1 copy is dropped through Redis pub/sub.
- ``GET /products/{id}/views``: the view count, read-your-writes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from cachewise import MemoryStore, ReadThrough, WriteBack, WriteThrough
from cachewise.aio import AsyncCache, AsyncRedisStore, AsyncSQLSource, AsyncTieredStore


@dataclass(frozen=True)
class Settings:
    """Where the service's data lives."""

    database_url: str
    redis_url: str
    journal: str
    products_table: str = "products"
    views_table: str = "product_views"
    namespace: str = "shop"

    @classmethod
    def from_environment(cls) -> Settings:
        """The settings from DATABASE_URL, REDIS_URL and JOURNAL."""
        return cls(
            database_url=os.environ["DATABASE_URL"],
            redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            journal=os.environ.get("JOURNAL", "views.journal"),
        )


@dataclass
class Caches:
    """The caches of one worker process, opened and closed by the app's lifespan."""

    products: AsyncCache
    views: AsyncCache
    counting: asyncio.Lock
    """Counts are read-modify-write: one update at a time in this worker."""


def create_app(settings: Settings) -> FastAPI:
    """The service, with its caches opened in the lifespan (one set per worker)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tiers = AsyncTieredStore(
            MemoryStore(max_entries=10_000, ttl=60),
            AsyncRedisStore(settings.redis_url, namespace=settings.namespace, ttl=300),
        )
        products = AsyncCache(
            tiers,
            AsyncSQLSource(settings.database_url, table=settings.products_table),
            read=ReadThrough(),
            write=WriteThrough(),
            name="products",
        )
        views = AsyncCache(
            MemoryStore(max_entries=100_000),
            AsyncSQLSource(settings.database_url, table=settings.views_table, key="product_id"),
            read=ReadThrough(),
            write=WriteBack(flush_interval=1.0, journal=settings.journal, fsync="everysec"),
            name="views",
        )
        await tiers.wait_live(5.0)  # L1 serves once invalidations can reach it
        app.state.caches = Caches(products, views, asyncio.Lock())
        try:
            yield
        finally:
            await views.close()  # flushes the counted views
            await products.close()

    app = FastAPI(lifespan=lifespan)

    def caches(request: Request) -> Caches:
        found: Caches = request.app.state.caches
        return found

    @app.get("/products/{product_id}")
    async def get_product(product_id: int, request: Request) -> dict[str, Any]:
        c = caches(request)
        product = await c.products.read(product_id)
        if product is None:
            raise HTTPException(status_code=404, detail="no such product")
        async with c.counting:
            row = await c.views.read(product_id) or {"product_id": product_id, "views": 0}
            await c.views.write(product_id, {**row, "views": row["views"] + 1})
        return dict(product)

    @app.put("/products/{product_id}")
    async def put_product(
        product_id: int, body: dict[str, Any], request: Request
    ) -> dict[str, Any]:
        product = {**body, "id": product_id}
        await caches(request).products.write(product_id, product)
        return product

    @app.get("/products/{product_id}/views")
    async def get_views(product_id: int, request: Request) -> dict[str, int]:
        row = await caches(request).views.read(product_id)
        return {"product_id": product_id, "views": 0 if row is None else int(row["views"])}

    return app


def __getattr__(name: str) -> Any:
    """``app``: the service configured from the environment (for ``uvicorn ...:app``)."""
    if name == "app":
        return create_app(Settings.from_environment())
    raise AttributeError(name)
