"""Hostile bytes in a journal or in Redis: a clear error or a counted miss, never a crash.

Before the codec's depth limit, a tuple nested ~195 deep was acknowledged, journaled,
and then segfaulted every start-up (and ``cachewise journal inspect``); 700 such bytes
planted in Redis segfaulted any reader. Each reproduction runs in a child process, so
a segfault is a failed test (``run_child`` asserts the child did not die by a signal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cachewise import Cache, MappingSource, WriteBack
from cachewise.codecs import default_codec
from cachewise.errors import CodecError
from cachewise.stores.memory import MemoryStore
from cachewise.writeback import _journal_format as fmt
from tests.hostile import nested_tuple_bytes, run_child


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = (value,)
    return value


def test_a_deep_value_is_refused_at_write_before_anything_is_journaled(tmp_path: Path) -> None:
    source = MappingSource()
    journal = tmp_path / "journal"
    cache = Cache(MemoryStore(), source, write=WriteBack(journal=str(journal)))
    try:
        with pytest.raises(CodecError, match="deeper than"):
            cache.write("k", {"v": _deep(195)})
        with pytest.raises(CodecError):
            cache.write_many({"a": {"v": 1}, "k": {"v": _deep(250)}})
        assert cache.dirty_keys() == []
        assert cache.read("k") is None
    finally:
        cache.close()
    assert source.data == {}
    # Nothing was journaled: a restart replays nothing.
    again = Cache(MemoryStore(), source, write=WriteBack(journal=str(journal)))
    assert again.dirty_keys() == []
    again.close()


def _plant_journal(directory: Path, payload: bytes) -> None:
    """A journal whose one record holds ``payload`` as its value (CRCs all correct)."""
    directory.mkdir()
    key = default_codec().encode("k")
    body = fmt._KEY_LEN.pack(len(key)) + key + payload
    segment = fmt.MAGIC + fmt.encode_record(1, fmt.PUT, body)
    (directory / f"{1:016d}.seg").write_bytes(segment)


def test_a_journal_holding_a_hostile_record_is_a_clear_error_at_start_up(tmp_path: Path) -> None:
    data, levels = nested_tuple_bytes(700)
    assert levels > 190
    journal = tmp_path / "journal"
    _plant_journal(journal, data)
    done = run_child(
        f"""
        from cachewise import Cache, MappingSource, MemoryStore, WriteBack
        from cachewise.errors import JournalCorruptError

        try:
            Cache(MemoryStore(), MappingSource(), write=WriteBack(journal={str(journal)!r}))
        except JournalCorruptError as exc:
            print("refused:", exc)
        """
    )
    assert "refused:" in done.stdout, done.stderr
    assert "deeper than" in done.stdout


def test_journal_inspect_reports_a_hostile_record_and_does_not_crash(tmp_path: Path) -> None:
    data, _ = nested_tuple_bytes(700)
    journal = tmp_path / "journal"
    _plant_journal(journal, data)
    done = run_child(
        f"""
        from cachewise.cli import main

        print("exit:", main(["journal", "inspect", {str(journal)!r}]))
        """
    )
    assert "deeper than" in done.stdout, (done.stdout, done.stderr)
    assert "exit: 1" in done.stdout  # damage found, reported, no crash


def test_hostile_bytes_planted_in_redis_are_a_counted_miss_in_every_reader(
    redis_url: str, unique_name: str
) -> None:
    from cachewise import RedisStore

    data, levels = nested_tuple_bytes(700)
    assert levels > 190
    store = RedisStore(redis_url, namespace=unique_name)
    try:
        stamp: bytes = getattr(store, "stamp", lambda: b"")()  # as a writer of Redis would
        store.client.set(store.wire_key("k"), stamp + data)
        done = run_child(
            f"""
            from cachewise import MISSING, Cache, MappingSource, MemoryStore, RedisStore
            from cachewise import TieredStore

            store = RedisStore({redis_url!r}, namespace={unique_name!r})
            print("get:", store.get("k") is MISSING, store.get_many(["k"]) == {{}})
            cache = Cache(store, MappingSource({{"k": "from the source"}}))
            print("read-through:", cache.read("k"))
            tiered = TieredStore(MemoryStore(), RedisStore({redis_url!r},
                                 namespace={unique_name!r}))
            tiered.l2.client.set(tiered.l2.wire_key("k"), {stamp + data!r})
            print("tiered:", tiered.get("k") is MISSING)
            print("rejected:", store.rejected + tiered.l2.rejected)
            tiered.close()
            cache.close()
            """
        )
        assert "get: True True" in done.stdout, done.stderr
        assert "read-through: from the source" in done.stdout
        assert "tiered: True" in done.stdout
        # get, get_many, the cache's own get, the load guard's look, and the tiered get
        assert "rejected: 5" in done.stdout
    finally:
        for wire in store.client.scan_iter(match=unique_name + ":*", count=1000):
            store.client.unlink(wire)
        store.close()
