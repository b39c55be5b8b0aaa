"""Rows the source refuses (issue 11, item 2), on a real SQLite table: write-back refuses
what it can know is wrong at ``write()``, isolates what only the database can refuse,
flushes every other row, and parks the refused keys where the user sees them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import MISSING, Cache, MappingSource, MemoryStore, SQLSource, WriteBack
from cachewise.errors import (
    CacheFullError,
    FlushError,
    InvalidKeyError,
    InvalidValueError,
    RejectedError,
)
from cachewise.sources import ValidatingSource
from cachewise.writeback import flusher as flusher_mod
from cachewise.writeback.dirty import TOMBSTONE
from cachewise.writeback.journal import inspect_journal


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/shop.db")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0), email TEXT UNIQUE, note TEXT)"
        )
    yield engine
    engine.dispose()


def rows(engine: sa.Engine) -> dict[int, tuple[Any, ...]]:
    with engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT id, name, qty, email FROM items").all()
    return {int(r[0]): tuple(r[1:]) for r in found}


def _cache(engine: sa.Engine, **policy: Any) -> Cache:
    policy.setdefault("flush_interval", 3600)  # flushes only when the test asks
    return Cache(MemoryStore(), SQLSource(engine, table="items"), write=WriteBack(**policy))


def _item(key: int, qty: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": key, "name": f"item {key}", "qty": qty, **extra}


# -- refused at write(): what is known wrong without the database ---------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not a row", "a value is a mapping"),
        ({"id": 1, "name": "x", "colour": "red"}, "no column 'colour'"),
        ({"id": 1, "qty": 3}, "lacks the column.s. 'name'"),
        ({"id": 2, "name": "x"}, "key 1 but the value's column 'id' is 2"),
    ],
)
def test_a_value_known_wrong_is_refused_at_write_before_anything_changes(
    engine: sa.Engine, tmp_path: Path, value: Any, why: str
) -> None:
    store = MemoryStore()
    journal = tmp_path / "journal"
    source = SQLSource(engine, table="items")
    cache = Cache(store, source, write=WriteBack(journal=journal, flush_interval=3600))
    try:
        with pytest.raises(InvalidValueError, match=why):
            cache.write(1, value)
        with pytest.raises(InvalidValueError, match=why):
            cache.write_many({5: _item(5), 1: value})  # one bad item refuses the batch
        assert cache.dirty_keys() == []
        assert store.get(1) is MISSING
        assert store.get(5) is MISSING
        assert cache.stats.dirty == 0
        assert inspect_journal(journal).records == []  # nothing journaled either
    finally:
        cache.close()
    assert rows(engine) == {}


def test_a_key_the_table_cannot_hold_is_refused_at_write_and_delete(engine: sa.Engine) -> None:
    cache = _cache(engine)
    try:
        with pytest.raises(InvalidKeyError):
            cache.write((1, 2), _item(1))
        with pytest.raises(InvalidKeyError):
            cache.delete((1, 2))
        assert cache.dirty_keys() == []
    finally:
        cache.close()


def test_a_key_column_left_out_is_filled_from_the_key(engine: sa.Engine) -> None:
    cache = _cache(engine)
    try:
        cache.write(3, {"name": "no id given"})  # the key column comes from the key
        cache.flush()
    finally:
        cache.close()
    assert rows(engine) == {3: ("no id given", 0, None)}


def test_sql_source_validates_and_mapping_source_accepts_anything(engine: sa.Engine) -> None:
    source = SQLSource(engine, table="items")
    assert isinstance(source, ValidatingSource)
    source.validate(1, _item(1))
    source.validate(1, MISSING)  # a removal needs only a valid key
    assert not isinstance(MappingSource(), ValidatingSource)
    cache = Cache(MemoryStore(), MappingSource(), write=WriteBack(flush_interval=3600))
    try:
        cache.write(1, "anything at all")
        assert cache.flush() == 1
    finally:
        cache.close()


# -- refused at flush: isolated, the others flushed, the refused parked --------------------


def test_refused_rows_are_isolated_and_every_other_row_is_flushed(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(engine, max_batch=100)
    bad = {3: _item(3, qty=-1), 8: _item(8, qty=-5)}  # the CHECK (qty >= 0) refuses these
    try:
        for key in range(1, 11):
            cache.write(key, bad.get(key, _item(key)))
        with (
            caplog.at_level(logging.ERROR, logger="cachewise.writeback"),
            pytest.raises(FlushError, match="refused the writes of 2 keys") as info,
        ):
            cache.flush()
        assert set(info.value.rejected) == {3, 8}
        assert all("CHECK constraint failed" in why for why in info.value.rejected.values())
        assert set(rows(engine)) == set(range(1, 11)) - {3, 8}
        parked = cache.rejected()
        assert {k: p.value for k, p in parked.items()} == bad
        assert all("CHECK constraint failed" in p.error for p in parked.values())
        stats = cache.stats
        assert (stats.rejected, stats.dirty) == (2, 0)
        assert stats.source_writes == 8
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(lines) == 2  # one line per key, naming key and cause
        assert any("key 3" in line and "CHECK constraint failed" in line for line in lines)
        assert any("key 8" in line and "CHECK constraint failed" in line for line in lines)
        assert cache.flush() == 0  # parked keys are not retried by later flushes
    finally:
        cache.close()


def test_isolation_costs_a_few_statements_per_refused_row(engine: sa.Engine) -> None:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(str(args[2])))
    cache = _cache(engine, max_batch=1024)  # one batch, and no early wake of the flusher
    try:
        cache.write_many({key: _item(key, qty=-1 if key == 700 else 1) for key in range(1000)})
        statements.clear()
        with pytest.raises(FlushError):
            cache.flush()
    finally:
        cache.close()
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert 2 <= len(inserts) <= 2 * 10 + 1  # bisection: about 2·log2(1000) statements
    assert len(rows(engine)) == 999


def test_the_background_flusher_parks_refused_rows_without_failing(engine: sa.Engine) -> None:
    cache = _cache(engine, flush_interval=0.01)
    try:
        cache.write(1, _item(1))
        cache.write(2, _item(2, qty=-1))
        cache.write(3, _item(3))
        assert _wait_for(lambda: cache.stats.dirty == 0 and cache.stats.rejected == 1)
        assert set(rows(engine)) == {1, 3}
        assert set(cache.rejected()) == {2}
        assert cache.stats.flush_failures == 0  # a refused row is not an outage
    finally:
        cache.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_parked_key_is_not_served_and_blocks_nothing(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO items (id, name, qty) VALUES (4, 'old', 7)")
    cache = _cache(engine, max_dirty=2, on_full="raise")
    try:
        cache.write(4, _item(4, qty=-1))
        cache.write(5, _item(5, qty=-1))
        with pytest.raises(FlushError):
            cache.flush()
        # Not served: a read gets what the source holds, not the refused value.
        assert cache.read(4) == {"id": 4, "name": "old", "qty": 7, "email": None, "note": None}
        assert cache.read(5) is None
        # Not counted against max_dirty: two new keys still fit.
        cache.write(6, _item(6))
        cache.write(7, _item(7))
        with pytest.raises(CacheFullError):
            cache.write(9, _item(9))
    finally:
        cache.close()


def test_a_new_write_of_a_parked_key_replaces_the_refused_one(engine: sa.Engine) -> None:
    cache = _cache(engine)
    try:
        cache.write(1, _item(1, qty=-1))
        with pytest.raises(FlushError):
            cache.flush()
        cache.write(1, _item(1, qty=2))
        assert cache.rejected() == {}
        assert cache.flush() == 1
    finally:
        cache.close()
    assert rows(engine) == {1: ("item 1", 2, None)}


# -- retry and discard ---------------------------------------------------------------------


def test_retry_after_the_cause_is_fixed_writes_the_parked_value(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO items (id, name, email) VALUES (1, 'a', 'x@shop')")
    cache = _cache(engine)
    try:
        cache.write(2, _item(2, email="x@shop"))  # UNIQUE (email) refuses it
        with pytest.raises(FlushError, match="UNIQUE constraint failed"):
            cache.flush()
        assert cache.retry_rejected() == 1  # not fixed yet: refused again, parked again
        with pytest.raises(FlushError):
            cache.flush()
        assert set(cache.rejected()) == {2}
        with engine.begin() as conn:  # the fix: the other row gives the address up
            conn.exec_driver_sql("UPDATE items SET email = 'y@shop' WHERE id = 1")
        assert cache.retry_rejected([2, 99]) == 1  # 99 was never parked
        assert cache.rejected() == {}
        assert cache.read(2) == _item(2, email="x@shop")  # read-your-writes again
        assert cache.flush() == 1
    finally:
        cache.close()
    assert rows(engine)[2] == ("item 2", 1, "x@shop")


def test_discard_forgets_the_refused_write_for_good(engine: sa.Engine, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    cache = _cache(engine, journal=journal)
    try:
        cache.write(1, _item(1, qty=-1))
        cache.write(2, _item(2, qty=-1))
        with pytest.raises(FlushError):
            cache.flush()
        assert cache.discard_rejected([1]) == 1
        assert set(cache.rejected()) == {2}
        assert cache.discard_rejected() == 1
        assert cache.rejected() == {}
        assert cache.stats.rejected == 0
    finally:
        cache.close()
    reopened = _cache(engine, journal=journal)
    try:
        assert reopened.dirty_keys() == []  # durable: nothing comes back at start-up
        assert reopened.rejected() == {}
    finally:
        reopened.close()


# -- the journal keeps parked keys; a replay refuses them again, the same way --------------


def test_a_replayed_refused_key_is_refused_again_the_same_way(
    engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "journal"
    cache = _cache(engine, journal=journal)
    try:
        cache.write(1, _item(1, qty=-1))
        cache.write(2, _item(2))
        with pytest.raises(FlushError):
            cache.flush()
        first = cache.rejected()
        for key in range(10, 20):  # later flushes move the watermark past the parked write
            cache.write(key, _item(key))
            cache.flush()
    finally:
        cache.close()  # parked keys stay in the journal (a warning says so)
    report = inspect_journal(journal)
    assert [(r.key, r.value, r.rejected) for r in report.records] == [(1, _item(1, -1), True)]
    assert report.flushed > first[1].seq  # the watermark passed it without losing it
    caplog.clear()
    reopened = _cache(engine, journal=journal)
    try:
        assert reopened.dirty_keys() == [1]  # replayed like any unflushed write
        with (
            caplog.at_level(logging.ERROR, logger="cachewise.writeback"),
            pytest.raises(FlushError, match="refused the writes of 1 keys"),
        ):
            reopened.flush()
        again = reopened.rejected()
        assert {k: (p.value, p.error) for k, p in again.items()} == {
            k: (p.value, p.error) for k, p in first.items()
        }
        assert "key 1" in caplog.text
    finally:
        reopened.close()
    assert 1 not in rows(engine)


def test_a_journal_without_park_holds_the_watermark_below_parked_writes(
    engine: sa.Engine, tmp_path: Path
) -> None:
    from cachewise.writeback.journal import FileJournal

    class PlainJournal:
        """A journal with the base protocol only (no park)."""

        def __init__(self, path: Path) -> None:
            self.inner = FileJournal(path)
            self.flushed_upto: list[int] = []

        def append(self, records: Any) -> None:
            self.inner.append(records)

        @property
        def last_seq(self) -> int:
            return self.inner.last_seq

        def replay(self) -> Any:
            return self.inner.replay()

        def flushed(self, upto: int) -> None:
            self.flushed_upto.append(upto)
            self.inner.flushed(upto)

        def close(self) -> None:
            self.inner.close()

    plain = PlainJournal(tmp_path / "journal")
    cache = Cache(
        MemoryStore(),
        SQLSource(engine, table="items"),
        write=WriteBack(flush_interval=3600),
        journal=plain,
    )
    try:
        cache.write(1, _item(1))
        cache.write(2, _item(2, qty=-1))  # seq 2
        with pytest.raises(FlushError):
            cache.flush()
        cache.write(3, _item(3))
        cache.flush()
        assert max(plain.flushed_upto) == 1  # never past the parked write
    finally:
        cache.close()


# -- the crash-test seam -----------------------------------------------------------------


def test_isolation_calls_the_fault_hook_at_each_split(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(flusher_mod, "fault_hook", seen.append)
    cache = _cache(engine)
    try:
        cache.write_many({key: _item(key, qty=-1 if key == 3 else 1) for key in range(4)})
        with pytest.raises(FlushError):
            cache.flush()
    finally:
        cache.close()
    assert seen == ["isolate", "isolate"]  # 4 rows -> 2 + 2 -> 1 + 1


def test_a_refused_delete_is_parked_as_a_tombstone() -> None:
    class RefusingRemovals(MappingSource):
        def remove_many(self, keys: Any) -> None:
            if 13 in list(keys):
                raise RejectedError("rows reference key 13")
            super().remove_many(keys)

    source = RefusingRemovals({12: "a", 13: "b"})
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    try:
        cache.delete(12)
        cache.delete(13)
        with pytest.raises(FlushError, match="13"):
            cache.flush()
        assert {k: p.value for k, p in cache.rejected().items()} == {13: TOMBSTONE}
        assert source.data == {13: "b"}
    finally:
        cache.close()


def test_without_a_journal_close_names_each_refused_write_it_loses(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(engine)
    cache.write(1, _item(1, qty=-1))
    cache.write(2, _item(2, qty=-1))
    with pytest.raises(FlushError):
        cache.flush()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="cachewise.writeback"):
        cache.close()
    lost = [r.getMessage() for r in caplog.records if "LOST (no journal)" in r.getMessage()]
    assert len(lost) == 2
    assert any("key 1" in line for line in lost)
    assert any("key 2" in line for line in lost)
