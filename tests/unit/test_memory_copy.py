"""MemoryStore keeps references by default; MemoryStore(copy=True) keeps copies."""

from __future__ import annotations

from typing import Any

import pytest

from cachewise import Cache, MappingSource, MemoryStore, ReadThrough, WriteThrough
from cachewise.errors import ConfigurationError


def test_the_default_store_keeps_references() -> None:
    store = MemoryStore()
    tags = ["tea"]
    row = {"id": 1, "tags": tags}
    store.set(1, row)
    tags.append("changed after set")
    assert store.get(1)["tags"] == ["tea", "changed after set"]
    store.get(1)["tags"].clear()
    assert store.get(1)["tags"] == []


def test_a_copying_store_is_not_changed_by_mutating_what_was_written_or_read() -> None:
    store = MemoryStore(copy=True)
    tags = ["tea"]
    row = {"id": 1, "tags": tags}
    store.set(1, row)
    store.set_many({2: row})
    tags.append("changed after set")
    read = store.get(1)
    read["tags"].clear()
    many = store.get_many([1, 2])
    many[2]["tags"].clear()
    assert store.get(1) == {"id": 1, "tags": ["tea"]}
    assert store.get(2) == {"id": 1, "tags": ["tea"]}
    assert store.get(1) is not store.get(1)


@pytest.mark.parametrize("pure_python", [False, True])
def test_a_copying_store_copies_on_the_caches_hit_path(
    pure_python: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1" if pure_python else "0")
    source = MappingSource({1: {"id": 1, "price": 3}})
    cache = Cache(MemoryStore(copy=True), source, read=ReadThrough(), write=WriteThrough())
    first = cache.read(1)  # a miss, loaded and stored
    first["price"] = 99
    hit = cache.read(1)
    assert hit == {"id": 1, "price": 3}
    hit["price"] = 42
    assert cache.read(1) == {"id": 1, "price": 3}
    assert cache.stats.hits == 2
    written: dict[str, Any] = {"id": 1, "price": 5}
    cache.write(1, written)
    written["price"] = 7
    assert cache.read(1) == {"id": 1, "price": 5}


def test_the_default_store_has_no_copy_on_its_path() -> None:
    plain, copying = MemoryStore(), MemoryStore(copy=True)
    assert plain.get.__func__ is MemoryStore.get  # type: ignore[attr-defined]
    assert plain.set.__func__ is MemoryStore.set  # type: ignore[attr-defined]
    assert plain.hit_path() is not None
    assert copying.hit_path() is None
    assert "copy=True" in repr(copying)
    assert "copy" not in repr(plain)


def test_copy_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="copy must be True or False"):
        MemoryStore(copy="yes")  # type: ignore[arg-type]
