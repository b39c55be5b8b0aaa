"""cachewise.contrib.django: the backend's own promises, and ModelSource under every strategy.

Django's own cache suite runs against the backend in ``tests/django_cache_suite.py``
(a CI step per LOCATION kind); these tests cover what that suite does not: signing,
copies, configuration errors, inline async, and the ORM as a Source.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from tests.django_app import settings as test_settings

test_settings.configure()

from django.db import models  # noqa: E402

from cachewise import (  # noqa: E402
    MISSING,
    Cache,
    MemoryStore,
    ReadThrough,
    WriteAround,
    WriteBack,
    WriteThrough,
)
from cachewise._types import Key  # noqa: E402
from cachewise.contrib.django import CacheBackend, ModelSource, UnpicklableValueError  # noqa: E402
from cachewise.errors import (  # noqa: E402
    ConfigurationError,
    FlushError,
    InvalidKeyError,
    InvalidValueError,
    RejectedError,
)
from cachewise.pool import direct_url  # noqa: E402
from cachewise.sources import ValidatingSource  # noqa: E402


def backend(location: str, **options: Any) -> CacheBackend:
    return CacheBackend(location, {"OPTIONS": options})


@pytest.fixture
def memory(unique_name: str) -> Iterator[CacheBackend]:
    cache = backend(f"memory://{unique_name}")
    yield cache
    cache.clear()


@pytest.fixture
def on_redis(redis_url: str, unique_name: str) -> Iterator[CacheBackend]:
    cache = backend(redis_url, namespace=unique_name)
    yield cache
    cache.clear()


@pytest.fixture
def on_memcached(memcached_url: str, unique_name: str) -> Iterator[CacheBackend]:
    cache = backend(memcached_url, namespace=unique_name)
    yield cache
    cache.clear()


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "options", "match"),
    [
        ("ftp://x", {}, "scheme"),
        ("nowhere", {}, "LOCATION must be"),
        ("memory://", {"tiered": True}, "needs a redis"),
        ("memcached://127.0.0.1:1", {"tiered": True}, "needs a redis"),
        ("memory://", {"CULL_FREQUENCY": 3}, "does not cull"),
        ("memory://", {"colour": "red"}, "unknown OPTIONS"),
        ("memory://", {"max_entries": 0}, "max_entries"),
        ("redis://:hunter2@127.0.0.1:1/0", {"timeout": -1}, "timeout"),
    ],
)
def test_bad_location_or_options_are_refused(
    location: str, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        backend(location, **options)
    assert "hunter2" not in str(info.value)


def test_repr_hides_the_password(redis_url: str, unique_name: str) -> None:
    url = redis_url.replace("redis://", "redis://:hunter2@", 1)
    cache = backend(url, namespace=unique_name)
    assert "hunter2" not in repr(cache)


def test_backends_with_the_same_settings_share_one_store(unique_name: str) -> None:
    # Django makes a backend object per thread; they must see one cache.
    first, second = backend(f"memory://{unique_name}"), backend(f"memory://{unique_name}")
    assert first.store is second.store
    assert backend(f"memory://{unique_name}-b").store is not first.store


# -- values ----------------------------------------------------------------------------------


def test_memory_keeps_copies_not_references(memory: CacheBackend) -> None:
    value = {"items": [1, 2]}
    memory.set("k", value)
    value["items"].append(3)
    got = memory.get("k")
    assert got == {"items": [1, 2]}
    got["items"].append(4)
    assert memory.get("k") == {"items": [1, 2]}


def test_unpicklable_value_is_a_codec_error_and_a_pickling_error(memory: CacheBackend) -> None:
    with pytest.raises(UnpicklableValueError) as info:
        memory.set("k", threading.Lock())
    assert isinstance(info.value, pickle.PicklingError)
    assert memory.get("k") is None


class _Evil:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


def test_planted_pickle_in_redis_is_a_miss_and_never_runs(
    on_redis: CacheBackend, tmp_path: Path
) -> None:
    import redis

    made = on_redis.make_key("k")
    wire = on_redis.store.wire_key(made)  # type: ignore[attr-defined]
    marker = tmp_path / "pwned"
    client = redis.Redis.from_url(on_redis.spec.location)
    try:
        client.set(wire, pickle.dumps(_Evil(marker)))
        assert on_redis.get("k", "default") == "default"
        assert not marker.exists()
        on_redis.set("k", {"ok": 1})
        assert client.get(wire) != pickle.dumps({"ok": 1})  # signed, not bare pickle
        assert on_redis.get("k") == {"ok": 1}
    finally:
        client.close()


def test_signatures_depend_on_the_secret(redis_url: str, unique_name: str) -> None:
    ours = backend(redis_url, namespace=unique_name, signing_key="one-secret-0123456789")
    theirs = backend(redis_url, namespace=unique_name, signing_key="another-secret-012345")
    try:
        ours.set("k", 1)
        assert theirs.get("k", "rejected") == "rejected"
    finally:
        ours.clear()


# -- atomic operations across backend objects ------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "on_redis", "on_memcached"])
def test_concurrent_incr_loses_nothing(kind: str, request: pytest.FixtureRequest) -> None:
    cache: CacheBackend = request.getfixturevalue(kind)
    twin = CacheBackend(cache.spec.location, {"OPTIONS": _options(cache)})
    cache.set("n", 0)

    def bump(c: CacheBackend) -> None:
        for _ in range(50):
            c.incr("n")

    threads = [threading.Thread(target=bump, args=(c,)) for c in (cache, twin, cache, twin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("n") == 200


def _options(cache: CacheBackend) -> dict[str, Any]:
    return {} if cache.spec.kind == "memory" else {"namespace": cache.spec.namespace}


@pytest.mark.parametrize("kind", ["memory", "on_redis", "on_memcached"])
def test_incr_keeps_the_expiry_and_refuses_non_numbers(
    kind: str, request: pytest.FixtureRequest
) -> None:
    cache: CacheBackend = request.getfixturevalue(kind)
    cache.set("n", 1, timeout=100)
    cache.incr("n", 5)
    left = cache.store.ttl_left(cache.make_key("n"))  # type: ignore[attr-defined]
    assert left is not None
    assert 0 < left <= 100
    cache.set("s", "text")
    with pytest.raises(TypeError):
        cache.incr("s")
    with pytest.raises(ValueError, match="not found"):
        cache.incr("absent")


# -- async ------------------------------------------------------------------------------------


def test_memory_async_methods_run_inline_without_suspending(memory: CacheBackend) -> None:
    def run_inline(coro: Any) -> Any:
        with pytest.raises(StopIteration) as done:  # finished on the first step: no thread hop
            coro.send(None)
        return done.value.value

    run_inline(memory.aset("k", 41))
    assert run_inline(memory.aincr("k")) == 42
    assert run_inline(memory.aget("k")) == 42
    assert run_inline(memory.aget_many(["k", "x"])) == {"k": 42}
    assert run_inline(memory.aadd("k", 0)) is False
    assert run_inline(memory.adelete("k")) is True
    assert run_inline(memory.aget_or_set("k", 7)) == 7


def test_tiered_and_memcached_async_methods_fall_back_to_a_thread(
    redis_url: str, on_memcached: CacheBackend, unique_name: str
) -> None:
    from django.core.cache.backends.base import BaseCache

    tiered = backend(redis_url, namespace=unique_name, tiered=True)

    async def roundtrip(cache: CacheBackend) -> Any:
        await cache.aset("k", {"v": 1})
        return await cache.aget("k")

    try:
        for cache in (tiered, on_memcached):
            assert cache.aget.__func__ is BaseCache.aget  # Django's sync_to_async
            assert asyncio.run(roundtrip(cache)) == {"v": 1}
    finally:
        tiered.clear()


# -- ModelSource ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", pytest.param("mysql", marks=pytest.mark.mysql)])
def product(request: pytest.FixtureRequest, unique_name: str) -> Iterator[tuple[type[Any], str]]:
    using = "default"
    if request.param == "mysql":
        using = "my"
        test_settings.add_database(using, request.getfixturevalue("mysql_url"))
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        if "pgbouncer=true" in url:  # Django's psycopg prepares: not in transaction mode
            url = direct_url(url).render_as_string(hide_password=False)
        url = url.split("?", 1)[0]  # through Pgpool-II: session pooling suits Django
        using = "pg"
        test_settings.add_database(using, url)
    model = test_settings.make_model(unique_name, using=using)
    model._default_manager.using(using).create(sku="tea", name="Tea", price=Decimal("3.10"))
    yield model, using
    test_settings.drop_model(model, using=using)


def test_model_source_loads_dicts_and_misses(product: tuple[type[Any], str]) -> None:
    model, using = product
    source = ModelSource(model, key="sku", using=using)
    row = source.load("tea")
    assert row["name"] == "Tea"
    assert row["price"] == Decimal("3.10")
    assert source.load("absent") is MISSING
    assert set(source.load_many(["tea", "absent"])) == {"tea"}


def test_model_source_save_many_is_an_idempotent_upsert(product: tuple[type[Any], str]) -> None:
    model, using = product
    source = ModelSource(model, key="sku", using=using)
    batch: dict[Key, Any] = {
        "tea": {"name": "Green tea", "price": Decimal("4.00"), "views": 0},
        "cake": {"name": "Cake", "price": Decimal("2.50"), "views": 0},
    }
    source.save_many(batch)
    source.save_many(batch)  # a write-back replay: same state
    rows = {r["sku"]: r for r in model._default_manager.using(using).values()}
    assert set(rows) == {"tea", "cake"}
    assert rows["tea"]["name"] == "Green tea"
    source.remove_many(["cake", "absent"])
    assert source.load("cake") is MISSING


def test_model_source_refuses_bad_values_before_any_change(product: tuple[type[Any], str]) -> None:
    model, using = product
    source = ModelSource(model, key="sku", using=using)
    bad: dict[Key, Any] = {"new": {"name": "x", "price": 1, "views": 0}, "bad": {"colour": 1}}
    with pytest.raises(ConfigurationError, match="no field"):
        source.save_many(bad)
    with pytest.raises(ConfigurationError, match="differs"):
        source.save("x", {"sku": "y", "name": "n", "price": 1})
    assert source.load("new") is MISSING
    with pytest.raises(ConfigurationError, match="not unique"):
        ModelSource(model, key="name")
    with pytest.raises(ConfigurationError):
        ModelSource(models.Model)  # abstract


@pytest.mark.parametrize(
    "write", [WriteThrough(), WriteBack(flush_interval=60), WriteAround()], ids=type
)
def test_every_strategy_works_with_the_orm(product: tuple[type[Any], str], write: Any) -> None:
    model, using = product
    source = ModelSource(model, key="sku", using=using)
    with Cache(MemoryStore(), source, read=ReadThrough(), write=write) as cache:
        assert cache.read("tea")["name"] == "Tea"
        new = {**cache.read("tea"), "views": 5}
        cache.write("tea", new)
        assert cache.read("tea")["views"] == 5  # read-your-writes, whatever the policy
        cache.flush()
        stored = model._default_manager.using(using).get(sku="tea")
        assert stored.views == 5
        assert cache.stats.source_writes >= 1


def test_django_page_examples_run(unique_name: str, redis_url: str) -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "django.md"
    text = page.read_text().replace("redis://127.0.0.1:6379/0", redis_url)
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 3
    model = test_settings.make_model(unique_name)
    model._default_manager.create(sku="tea", name="Tea", price=Decimal("3.10"))
    try:
        for block in blocks:
            scope = {"__name__": "docs_example", "Product": model}
            exec(compile(block, str(page), "exec"), scope)
    finally:
        test_settings.drop_model(model)


# -- ModelSource: refused rows ----------------------------------------------------------------


def _good(sku: str, **fields: Any) -> dict[str, Any]:
    return {"sku": sku, "name": sku.title(), "price": Decimal("1.00"), "views": 0, **fields}


def test_model_source_validates_without_the_database(product: tuple[type[Any], str]) -> None:
    model, using = product
    source = ModelSource(model, key="sku", using=using)
    assert isinstance(source, ValidatingSource)
    source.validate("cake", _good("cake"))
    source.validate("cake", {"views": 3})  # a partial row: only what it carries
    source.validate("cake", MISSING)
    with pytest.raises(InvalidValueError, match="name"):
        source.validate("cake", _good("cake", name="x" * 101))
    with pytest.raises(InvalidValueError, match="price"):
        source.validate("cake", _good("cake", price=Decimal("123456789.00")))
    with pytest.raises(InvalidValueError, match="null"):
        source.validate("cake", _good("cake", name=None))
    with pytest.raises(InvalidValueError, match="no field"):
        source.validate("cake", {"colour": "red"})
    with pytest.raises(InvalidValueError, match="differs"):
        source.validate("cake", _good("pie"))
    with pytest.raises(InvalidKeyError):
        source.validate("k" * 41, MISSING)


def test_model_source_classifies_refused_rows_as_rejected(product: tuple[type[Any], str]) -> None:
    model, using = product
    by_sku = ModelSource(model, key="sku", using=using)
    with pytest.raises(RejectedError, match="name"):  # model validation (SQLite: no length)
        by_sku.save_many({"cake": _good("cake"), "pie": _good("pie", name="x" * 101)})
    by_id = ModelSource(model, using=using)
    tea = model._default_manager.using(using).get(sku="tea")
    with pytest.raises(RejectedError, match="IntegrityError"):  # the database: UNIQUE(sku)
        by_id.save_many({tea.pk + 1: _good("tea", name="Thief")})
    rows = list(model._default_manager.using(using).values("sku", "name"))
    assert rows == [{"sku": "tea", "name": "Tea"}]  # nothing changed


def test_write_back_parks_refused_model_rows_and_writes_the_rest(
    product: tuple[type[Any], str],
) -> None:
    model, using = product
    source = ModelSource(model, using=using)
    tea = model._default_manager.using(using).get(sku="tea")
    with Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600)) as cache:
        with pytest.raises(InvalidValueError):  # refused at write(): never acknowledged
            cache.write(tea.pk + 9, _good("long", name="x" * 101))
        cache.write_many(
            {
                tea.pk + 1: _good("cake"),
                tea.pk + 2: _good("tea", name="Thief"),  # UNIQUE(sku): the database says no
                tea.pk + 3: _good("pie"),
            }
        )
        with pytest.raises(FlushError) as info:
            cache.flush()
        assert set(info.value.rejected) == {tea.pk + 2}
        assert set(cache.rejected()) == {tea.pk + 2}
        assert cache.flush() == 0  # parked, not retried
    rows = {r["sku"]: r["name"] for r in model._default_manager.using(using).values()}
    assert rows == {"tea": "Tea", "cake": "Cake", "pie": "Pie"}
