"""The write-back journal on real files: format, replay, compaction, damage, fsync failure."""

from __future__ import annotations

import datetime as dt
import errno
import itertools
import logging
import os
import shutil
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import MISSING, Cache, MappingSource, MemoryStore, SQLSource, WriteBack
from cachewise.cli import main as cli_main
from cachewise.codecs import default_codec
from cachewise.errors import (
    CodecError,
    ConfigurationError,
    FlushError,
    JournalCorruptError,
    JournalError,
)
from cachewise.writeback import _journal_format as fmt
from cachewise.writeback import journal as journal_mod
from cachewise.writeback.dirty import TOMBSTONE
from cachewise.writeback.journal import FileJournal, inspect_journal
from tests.helpers import FlakySource

CODEC = default_codec()
ROW = {
    "id": 7,
    "name": "caf\u00e9 \U0001f600",
    "price": Decimal("19.990"),
    "ratio": -0.0,
    "blob": b"\x00\xff",
    "active": True,
    "nothing": None,
    "at": dt.datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "day": dt.date(2024, 2, 29),
    "time": dt.time(23, 59, 59, 999999),
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "tags": ["a", 1, [2.5, None]],
    "attrs": {"k": Decimal("1E+3"), "n": 2**70},
}


def _records(journal: FileJournal) -> list[tuple[int, Any, Any]]:
    return list(journal.replay())


def _segment(path: Path) -> Path:
    files = sorted(path.glob("*.seg"))
    assert files, "no segment"
    return files[-1]


def _write_crashed(path: Path, records: list[tuple[int, Any, Any]]) -> None:
    """Leave a journal as a crashed process would: records appended, nothing flushed."""
    journal = FileJournal(path, fsync="always")
    journal.append(records)
    journal.close()


# -- the format and replay -----------------------------------------------------------------


def test_records_round_trip_sql_row_types_exactly(tmp_path: Path) -> None:
    records = [(1, 7, ROW), (2, ("tenant", 3, b"k"), {"x": 1}), (3, "gone", TOMBSTONE)]
    _write_crashed(tmp_path / "j", records)
    journal = FileJournal(tmp_path / "j")
    try:
        replayed = _records(journal)
        assert replayed == records
        value = replayed[0][2]
        assert type(value["price"]) is Decimal
        assert str(value["price"]) == "19.990"
        assert value["at"].utcoffset() == dt.timedelta(hours=2)
        assert type(replayed[1][1]) is tuple
        assert replayed[2][2] is TOMBSTONE
    finally:
        journal.close()


def test_replay_yields_the_latest_record_per_key_oldest_first(tmp_path: Path) -> None:
    _write_crashed(tmp_path / "j", [(1, "a", 1), (2, "b", 1), (3, "a", 2), (4, "c", TOMBSTONE)])
    journal = FileJournal(tmp_path / "j")
    try:
        assert _records(journal) == [(2, "b", 1), (3, "a", 2), (4, "c", TOMBSTONE)]
        assert journal.last_seq == 4
    finally:
        journal.close()


def test_cache_replays_before_serving_a_read_then_flushes(tmp_path: Path) -> None:
    _write_crashed(tmp_path / "j", [(1, 1, {"v": "new"}), (2, 2, TOMBSTONE)])
    source = MappingSource({1: {"v": "old"}, 2: {"v": "doomed"}})
    policy = WriteBack(journal=tmp_path / "j", flush_interval=60)
    cache = Cache(MemoryStore(), source, write=policy)
    try:
        assert cache.read(1) == {"v": "new"}  # the dirty replayed value, not the source's
        assert cache.read(2) is None  # the replayed tombstone
        assert cache.stats.dirty == 2
        assert cache.flush() == 2
        assert source.data == {1: {"v": "new"}}
    finally:
        cache.close()


def test_replaying_twice_gives_the_same_database(tmp_path: Path) -> None:
    _write_crashed(tmp_path / "j", [(1, 1, {"v": 1}), (2, 2, {"v": 2}), (3, 1, {"v": 3})])
    shutil.copytree(tmp_path / "j", tmp_path / "copy")
    source = MappingSource({9: {"v": 9}})
    Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")).close()
    first = dict(source.data)
    shutil.rmtree(tmp_path / "j")
    shutil.copytree(tmp_path / "copy", tmp_path / "j")
    Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")).close()
    assert source.data == first == {9: {"v": 9}, 1: {"v": 3}, 2: {"v": 2}}


def test_sequences_stay_monotonic_after_full_compaction(tmp_path: Path) -> None:
    source = MappingSource()
    with Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")) as cache:
        for i in range(5):
            cache.write(i, {"v": i})
    journal = FileJournal(tmp_path / "j")
    try:
        assert _records(journal) == []  # everything was flushed and compacted away
        assert journal.last_seq == 5  # ... but the sequence survived, in the meta file
    finally:
        journal.close()
    with Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")) as cache:
        cache.write("k", {"v": "after restart"})
        flusher = cache._flusher
        assert flusher is not None
        assert flusher.dirty_entry("k").seq == 6  # type: ignore[union-attr]
        cache.flush()


def test_a_second_opener_is_refused(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j")
    try:
        with pytest.raises(JournalError, match="in use"):
            FileJournal(tmp_path / "j")
    finally:
        journal.close()


def test_bad_configuration_is_refused_before_anything_changes(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        FileJournal(tmp_path / "j", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        FileJournal(tmp_path / "j", segment_bytes=0)
    assert not (tmp_path / "j").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileJournal(tmp_path / "file")


def test_open_journal_refuses_redis_and_none() -> None:
    with pytest.raises(ConfigurationError, match="redis"):
        journal_mod.open_journal(WriteBack(journal="redis"), MemoryStore())
    with pytest.raises(ConfigurationError):
        journal_mod.open_journal(WriteBack(), MemoryStore())


def test_open_journal_honours_the_policy(tmp_path: Path) -> None:
    journal = journal_mod.open_journal(
        WriteBack(journal=tmp_path / "j", fsync="always"), MemoryStore()
    )
    try:
        assert journal.fsync == "always"
        assert journal.path == tmp_path / "j"
    finally:
        journal.close()


def test_a_value_the_codec_refuses_changes_nothing(tmp_path: Path) -> None:
    source = MappingSource()
    with Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")) as cache:
        journal = cache._flusher._journal  # type: ignore[union-attr]
        assert isinstance(journal, FileJournal)
        before = journal.size
        with pytest.raises(CodecError):
            cache.write(1, {"v": object()})
        assert journal.size == before
        assert cache.stats.dirty == 0
        assert cache.read(1) is None


# -- compaction ------------------------------------------------------------------------------


def test_flush_compacts_the_journal_to_an_empty_segment(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", segment_bytes=4096)
    source = MappingSource()
    with Cache(MemoryStore(), source, write=WriteBack(flush_interval=60), journal=journal) as cache:
        for i in range(2000):
            cache.write(i % 50, {"v": i})
        assert int(journal.files()[-1].stem) > 5  # rotated many times
        cache.flush()
        assert journal.size == len(fmt.MAGIC)
        assert len(journal.files()) == 1
    assert source.data[49] == {"v": 1999}


def test_while_the_source_is_down_rewrites_keep_the_journal_near_the_dirty_set(
    tmp_path: Path,
) -> None:
    journal = FileJournal(tmp_path / "j", segment_bytes=4096)
    source = FlakySource()
    source.down = True
    policy = WriteBack(flush_interval=60)
    cache = Cache(MemoryStore(), source, write=policy, journal=journal)
    try:
        for i in range(8_000):  # ~250 KB of history over 20 keys
            cache.write(i % 20, {"v": i})
        cache.write(0, {"v": -1})
        deadline = time.monotonic() + 10
        while journal.size > 20 * 4096 and time.monotonic() < deadline:
            cache.write(0, {"v": -1})  # rotations ask the background thread to rewrite
            time.sleep(0.01)
        assert journal.size <= 20 * 4096, journal.size
        source.down = False
        cache.flush()
        assert source.data[19] == {"v": 7_999}
        assert source.data[0] == {"v": -1}
    finally:
        cache.close()
    reopened = FileJournal(tmp_path / "j")
    try:
        assert _records(reopened) == []
    finally:
        reopened.close()


def test_rewritten_journal_replays_the_latest_values(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", segment_bytes=2048)
    for i in range(3000):
        journal.append([(i + 1, i % 10, {"v": i})])
    journal._compact()  # what the background thread runs; done here to control timing
    assert journal.size < 5 * 2048
    journal.close()
    reopened = FileJournal(tmp_path / "j")
    try:
        assert {k: v["v"] for _, k, v in _records(reopened)} == {k: 2990 + k for k in range(10)}
        assert reopened.last_seq == 3000
    finally:
        reopened.close()


# -- damage ----------------------------------------------------------------------------------


def _three_record_journal(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "j"
    _write_crashed(path, [(1, "a", {"v": 1}), (2, "b", {"v": 2}), (3, "c", {"v": 3})])
    data = _segment(path).read_bytes()
    offsets = [r.offset for r in fmt.scan(data).records]
    assert len(offsets) == 3
    return path, offsets


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_torn_tail_is_truncated_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    path, _ = _three_record_journal(tmp_path)
    segment = _segment(path)
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - cut)
    with caplog.at_level(logging.WARNING, logger="cachewise.journal"):
        journal = FileJournal(path)
    try:
        assert [k for _, k, _ in _records(journal)] == ["a", "b"]
        assert "torn last record" in caplog.text
    finally:
        journal.close()
    assert fmt.scan(segment.read_bytes()).problem is None  # truncated to the last good record


def test_a_torn_tail_of_zeros_is_truncated(tmp_path: Path) -> None:
    path, _ = _three_record_journal(tmp_path)
    with _segment(path).open("ab") as f:
        f.write(b"\x00" * 4096)  # a page the kernel extended but never filled
    journal = FileJournal(path)
    try:
        assert len(_records(journal)) == 3
    finally:
        journal.close()


def _unsealed_segment(path: Path, tail: bytes) -> Path:
    """A segment as a killed process leaves it: preallocated, records, then zeros."""
    path.mkdir()
    records = [
        fmt.encode_record(seq, *fmt.encode_payload(CODEC, seq, {"v": seq})) for seq in (1, 2)
    ]
    body = fmt.MAGIC + b"".join(records) + tail
    segment = path / "0000000000000001.seg"
    segment.write_bytes(body + b"\x00" * (4 << 20))
    return segment


def test_the_zero_tail_of_a_killed_process_segment_is_not_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment = _unsealed_segment(tmp_path / "j", b"")
    with caplog.at_level(logging.WARNING, logger="cachewise.journal"):
        journal = FileJournal(tmp_path / "j")
    try:
        assert [k for _, k, _ in _records(journal)] == [1, 2]
        assert "torn" not in caplog.text
    finally:
        journal.close()
    assert fmt.scan(segment.read_bytes()).padding == 0  # the zero tail was cut off


def test_a_record_torn_by_a_kill_mid_copy_is_truncated(tmp_path: Path) -> None:
    third = fmt.encode_record(3, *fmt.encode_payload(CODEC, 3, {"v": 3}))
    segment = _unsealed_segment(tmp_path / "j", third[:-4])  # cut before its last bytes
    journal = FileJournal(tmp_path / "j")
    try:
        assert [k for _, k, _ in _records(journal)] == [1, 2]
    finally:
        journal.close()
    assert fmt.scan(segment.read_bytes()).problem is None


@pytest.mark.parametrize("where", ["length", "crc", "seq", "payload"])
def test_mid_file_corruption_stops_startup_naming_file_and_offset(
    tmp_path: Path, where: str
) -> None:
    path, offsets = _three_record_journal(tmp_path)
    segment = _segment(path)
    data = bytearray(segment.read_bytes())
    at = offsets[1] + {"length": 0, "crc": 8, "seq": 12, "payload": fmt.HEADER.size + 2}[where]
    data[at] ^= 0x40
    segment.write_bytes(bytes(data))
    source = MappingSource()
    with pytest.raises(JournalCorruptError) as info:
        Cache(MemoryStore(), source, write=WriteBack(journal=path))
    assert info.value.path == str(segment)
    assert info.value.offset == offsets[1]
    assert str(offsets[1]) in str(info.value)
    assert source.data == {}  # nothing flushed, not even the intact first record
    with pytest.raises(JournalCorruptError):
        FileJournal(path)  # still refused: the lock was released, the damage remains


def test_damage_at_the_end_of_an_older_segment_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, segment_bytes=64)
    for seq in range(1, 6):
        journal.append([(seq, seq, {"v": seq})])
    journal.close()
    first = sorted(path.glob("*.seg"))[0]
    with first.open("r+b") as f:
        f.truncate(first.stat().st_size - 3)
    with pytest.raises(JournalCorruptError) as info:
        FileJournal(path)
    assert info.value.path == str(first)


def test_a_damaged_meta_file_stops_startup(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Cache(MemoryStore(), MappingSource(), write=WriteBack(journal=path)) as cache:
        cache.write(1, {"v": 1})
    meta = path / "meta"
    data = meta.read_bytes()
    slot = fmt.META_SLOT
    meta.write_bytes(b"\x00" + data[1:slot] + b"\x00" + data[slot + 1 :])  # both slots
    with pytest.raises(JournalCorruptError, match="meta"):
        FileJournal(path)


def test_a_meta_slot_torn_by_a_crash_leaves_the_other(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Cache(MemoryStore(), MappingSource(), write=WriteBack(journal=path)) as cache:
        cache.write(1, {"v": 1})
        cache.flush()
        cache.write(1, {"v": 2})
        cache.flush()
    meta = path / "meta"
    data = meta.read_bytes()
    newest = fmt.decode_meta(data)
    slots = fmt.decode_meta_slots(data)
    assert newest is not None
    assert slots is not None
    assert newest in slots
    torn = slots.index(newest) * fmt.META_SLOT  # tear the newest slot: the older one serves
    meta.write_bytes(data[:torn] + b"\xff" * 5 + data[torn + 5 :])
    journal = FileJournal(path)
    try:
        assert journal.last_seq == newest - 1
        assert _records(journal) == []  # at or below the older slot's value: nothing replays
    finally:
        journal.close()


def test_a_meta_file_of_the_earlier_one_slot_layout_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.mkdir()
    (path / "meta").write_bytes(fmt.encode_meta(41))
    journal = FileJournal(path)
    try:
        assert journal.last_seq == 41
    finally:
        journal.close()
    assert fmt.decode_meta_slots((path / "meta").read_bytes()) == [41, 41]


# -- fsync ---------------------------------------------------------------------------------


_REAL_FSYNC = os.fsync


class _FsyncCounter:
    def __init__(self, fail_with: int | None = None) -> None:
        self.calls = 0
        self.fail_with = fail_with
        self._real = _REAL_FSYNC
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self._lock:
            self.calls += 1
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        self._real(fd)


def test_a_failed_fsync_is_raised_not_acknowledged_and_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = MappingSource()
    policy = WriteBack(journal=tmp_path / "j", fsync="always", flush_interval=60)
    cache = Cache(MemoryStore(), source, write=policy)
    try:
        cache.write("before", {"v": 0})
        broken = _FsyncCounter(fail_with=errno.EIO)
        monkeypatch.setattr(os, "fsync", broken)
        with pytest.raises(JournalError, match="fsync failed"):
            cache.write("lost", {"v": 1})
        assert broken.calls == 1
        assert cache.read("lost") is None  # not acknowledged: not in the cache, not dirty
        assert cache.dirty_keys() == ["before"]
        monkeypatch.setattr(os, "fsync", _FsyncCounter())  # the disk "recovers" ...
        with pytest.raises(JournalError, match="reopen"):
            cache.write("after", {"v": 2})  # ... but the journal is not trusted again
        assert cache.dirty_keys() == ["before"]
    finally:
        cache.close()
    assert source.data == {"before": {"v": 0}}
    with Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")) as cache:
        cache.write("after", {"v": 2})  # reopened: writes are accepted again
    assert source.data["after"] == {"v": 2}


def test_a_failed_background_fsync_refuses_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = FileJournal(tmp_path / "j", fsync="everysec", sync_interval=0.01)
    try:
        broken = _FsyncCounter(fail_with=errno.EIO)
        monkeypatch.setattr(os, "fsync", broken)
        journal.append([(1, "a", {"v": 1})])  # everysec: acknowledged before the fsync
        deadline = time.monotonic() + 10
        while not journal.failed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert journal.failed
        with pytest.raises(JournalError):
            journal.append([(2, "b", {"v": 2})])
    finally:
        monkeypatch.undo()
        journal.close()


def test_always_shares_fsyncs_between_concurrent_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _FsyncCounter()
    journal = FileJournal(tmp_path / "j", fsync="always")
    monkeypatch.setattr(os, "fsync", counter)
    writers, per_writer = 8, 100
    barrier = threading.Barrier(writers)

    def write(n: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            journal.append([(n * per_writer + i + 1, (n, i), {"v": i})])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    appends = writers * per_writer
    assert 0 < counter.calls < appends  # some fsyncs covered several writers' records
    monkeypatch.undo()
    journal.close()
    reopened = FileJournal(tmp_path / "j")
    try:
        assert len(_records(reopened)) == appends
    finally:
        reopened.close()


@pytest.mark.parametrize(("mode", "per_append"), [("always", True), ("no", False)])
def test_fsync_modes_sync_per_append_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, per_append: bool
) -> None:
    journal = FileJournal(tmp_path / "j", fsync=mode)  # type: ignore[arg-type]
    counter = _FsyncCounter()
    monkeypatch.setattr(os, "fsync", counter)
    for seq in range(1, 11):
        journal.append([(seq, seq, {"v": seq})])
    assert counter.calls == (10 if per_append else 0)
    monkeypatch.undo()
    journal.close()


def test_everysec_syncs_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = FileJournal(tmp_path / "j", fsync="everysec", sync_interval=0.05)
    counter = _FsyncCounter()
    monkeypatch.setattr(os, "fsync", counter)
    try:
        journal.append([(1, 1, {"v": 1})])
        assert counter.calls == 0  # the append itself did not fsync
        deadline = time.monotonic() + 10
        while counter.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counter.calls >= 1
    finally:
        monkeypatch.undo()
        journal.close()


# -- the flush path --------------------------------------------------------------------------


def test_a_failed_flush_keeps_the_records_for_the_next_start(tmp_path: Path) -> None:
    source = FlakySource()
    source.down = True
    cache = Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j"))
    cache.write(1, {"v": 1})
    with pytest.raises(FlushError):
        cache.close()
    source.down = False
    with Cache(MemoryStore(), source, write=WriteBack(journal=tmp_path / "j")):
        pass
    assert source.data == {1: {"v": 1}}


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_prints_records_flushed_sequence_and_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, offsets = _three_record_journal(tmp_path)
    assert cli_main(["journal", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "seq=1" in out
    assert "PUT key='a'" in out
    assert "last flushed sequence: 0" in out
    assert "damage: none" in out

    segment = _segment(path)
    data = bytearray(segment.read_bytes())
    data[offsets[1] + 14] ^= 1
    segment.write_bytes(bytes(data))
    assert cli_main(["journal", "inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT at {segment} offset {offsets[1]}" in out

    with segment.open("r+b") as f:
        f.truncate(offsets[1] + 3)
    assert cli_main(["journal", "inspect", "--summary", str(path)]) == 0
    assert "torn tail" in capsys.readouterr().out


def test_inspect_reports_the_flushed_sequence(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Cache(MemoryStore(), MappingSource(), write=WriteBack(journal=path)) as cache:
        for i in range(3):
            cache.write(i, {"v": i})
    report = inspect_journal(path)
    assert report.flushed == 3
    assert report.records == []
    assert not report.damage


def test_fault_hook_sees_every_point_of_a_write_and_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(journal_mod, "fault_hook", seen.append)
    with Cache(
        MemoryStore(), MappingSource(), write=WriteBack(journal=tmp_path / "j", fsync="always")
    ) as cache:
        cache.write(1, {"v": 1})
        cache.flush()
    assert seen[:2] == ["append.written", "append.synced"]
    assert "flushed" in seen
    assert "compact.meta" in seen


@pytest.mark.parametrize("content", [b"", b"CWJ", b"\x00" * 4096])
def test_a_newest_segment_whose_header_never_landed_is_dropped(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "j"
    _write_crashed(path, [(1, "a", {"v": 1})])
    (path / "0000000000000009.seg").write_bytes(content)
    journal = FileJournal(path)
    try:
        assert [k for _, k, _ in _records(journal)] == ["a"]
    finally:
        journal.close()
    assert not (path / "0000000000000009.seg").exists()


def test_an_older_segment_without_its_header_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "j"
    _write_crashed(path, [(1, "a", {"v": 1})])
    (path / "0000000000000000.seg").write_bytes(b"\x00" * 64)
    with pytest.raises(JournalCorruptError) as info:
        FileJournal(path)
    assert info.value.offset == 0


def test_rotated_segments_are_sealed_in_the_background(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", fsync="no", segment_bytes=1024)
    try:
        for seq in range(1, 201):
            journal.append([(seq, seq % 7, {"v": seq})])
        rotated = journal.files()[:-1]
        assert rotated

        def trimmed() -> bool:
            # Background compaction deletes rotated segments while we look: a segment
            # gone between listing and reading is not one left unsealed (issue 12: this
            # read used to raise FileNotFoundError about once in 15 runs).
            for segment in journal.files()[:-1]:
                try:
                    data = segment.read_bytes()
                except FileNotFoundError:
                    continue
                if fmt.scan(data).padding:
                    return False
            return True

        deadline = time.monotonic() + 10
        while not trimmed() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert trimmed()  # fsynced and cut to size without waiting for close()
    finally:
        journal.close()
    reopened = FileJournal(tmp_path / "j")
    try:
        assert {k: v["v"] for _, k, v in _records(reopened)} == {
            k: max(s for s in range(1, 201) if s % 7 == k) for k in range(7)
        }
    finally:
        reopened.close()


def test_always_acknowledges_across_rotations_from_many_threads(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", fsync="always", segment_bytes=512)
    counter = itertools.count(1)
    lock = threading.Lock()

    def write(n: int) -> None:
        for i in range(50):
            with lock:
                seq = next(counter)
            journal.append([(seq, (n, i), {"v": seq})])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not journal.failed
    journal.close()
    reopened = FileJournal(tmp_path / "j")
    try:
        assert len(_records(reopened)) == 300
    finally:
        reopened.close()


@pytest.mark.parametrize(("version", "expected"), [("updated_seq", "new"), (None, "old")])
def test_replaying_an_old_journal_copy_never_overwrites_a_newer_versioned_row(
    tmp_path: Path, version: str | None, expected: str
) -> None:
    url = f"sqlite:///{tmp_path}/versioned.db"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    sa.Table(
        "items",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", sa.String(20)),
        sa.Column("updated_seq", sa.Integer, nullable=False),
    )
    meta.create_all(engine)
    journal = tmp_path / "j"
    policy = WriteBack(journal=journal, flush_interval=3600)
    try:
        cache = Cache(MemoryStore(), SQLSource(engine, "items", version=version), write=policy)
        cache.write(1, {"id": 1, "v": "old", "updated_seq": 1})
        shutil.copytree(journal, tmp_path / "stale", ignore=shutil.ignore_patterns("LOCK"))
        cache.write(1, {"id": 1, "v": "new", "updated_seq": 2})
        cache.close()
        shutil.rmtree(journal)
        shutil.copytree(tmp_path / "stale", journal)  # e.g. a backup restored by mistake
        Cache(MemoryStore(), SQLSource(engine, "items", version=version), write=policy).close()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM items WHERE id = 1")).scalar() == expected
    finally:
        engine.dispose()


# -- issue 11: a flush is acknowledged only once its watermark is durable ------------------


class _WritesDuringFlush(MappingSource):
    """A source whose next ``save_many`` lets another write land (steady writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Any = None

    def save_many(self, items: Any) -> None:
        super().save_many(items)
        hook, self.during = self.during, None
        if hook is not None:
            hook()


def test_a_flush_returns_only_once_its_watermark_is_durable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j"
    source = _WritesDuringFlush()
    cache = Cache(MemoryStore(), source, write=WriteBack(journal=path, flush_interval=3600))
    try:
        cache.write(1, {"v": 1})
        # Another write lands while key 1 is being flushed, so the active segment never
        # drains: the watermark must be made durable by the flush itself.
        source.during = lambda: cache.write(2, {"v": 2})
        assert cache.flush() == 1
        meta = fmt.decode_meta((path / "meta").read_bytes())  # what a restart would read
        assert meta == 1
        report = inspect_journal(path)
        assert {r.key: r.flushed for r in report.records} == {1: True, 2: False}
        assert cli_main(["journal", "inspect", str(path), "--summary"]) == 0
        assert "last flushed sequence: 1" in capsys.readouterr().out
    finally:
        cache.close()


def test_a_watermark_that_cannot_be_made_durable_fails_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j"
    source = MappingSource()
    cache = Cache(MemoryStore(), source, write=WriteBack(journal=path, flush_interval=3600))
    try:
        cache.write(1, {"v": 1})

        def no_sync(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "fdatasync", no_sync)
        with pytest.raises(JournalError, match="flushed sequence"):
            cache.flush()  # written to the source, but not acknowledged
        assert source.data == {1: {"v": 1}}
        monkeypatch.undo()
        cache.flush()  # nothing left to write: the watermark is recorded now
        assert fmt.decode_meta((path / "meta").read_bytes()) == 1
    finally:
        cache.close()


# -- issue 11: one record size limit, checked at write(), agreed by append and replay ------


def test_a_write_over_the_record_limit_is_refused_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fmt, "MAX_PAYLOAD", 4096)  # the limit is one constant: shrink it
    path = tmp_path / "j"
    store = MemoryStore()
    cache = Cache(store, MappingSource(), write=WriteBack(journal=path, flush_interval=3600))
    try:
        with pytest.raises(CodecError, match="record limit of 4,096 bytes"):
            cache.write(1, {"blob": b"x" * 5000})
        with pytest.raises(CodecError, match="record limit"):
            cache.write_many({2: {"v": 2}, 3: {"blob": b"x" * 5000}})
        assert cache.dirty_keys() == []
        assert store.get(1) is MISSING
        assert store.get(2) is MISSING
        cache.write(4, {"blob": b"x" * 4000})  # under the limit: fine
    finally:
        cache.close()


def test_a_record_at_the_limit_is_replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "MAX_PAYLOAD", 4096)
    key_part = 4 + len(CODEC.encode(1))
    value = b"x" * 4096
    while len(CODEC.encode(value)) + key_part > 4096:
        value = value[:-1]
    path = tmp_path / "j"
    _write_crashed(path, [(1, 1, value)])  # exactly at the limit: acknowledged
    journal = FileJournal(path)
    try:
        assert _records(journal) == [(1, 1, value)]  # and replayed, not read as damage
    finally:
        journal.close()


# -- issue 11: every truncation or drop at open is logged with its byte count --------------


def _logged(caplog: pytest.LogCaptureFixture, path: Path) -> str:
    with caplog.at_level(logging.INFO, logger="cachewise.journal"):
        FileJournal(path).close()
    return caplog.text


def test_a_zero_tail_is_trimmed_with_a_warning_naming_its_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _unsealed_segment(tmp_path / "j", b"")
    text = _logged(caplog, tmp_path / "j")
    assert f"{4 << 20} zero bytes after the last record" in text


def test_a_torn_tail_is_logged_with_its_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, offsets = _three_record_journal(tmp_path)
    segment = _segment(path)
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 3)
    assert f"truncating {size - 3 - offsets[2]} bytes" in _logged(caplog, path)


def test_leftover_temporary_files_are_deleted_with_their_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = _three_record_journal(tmp_path)
    (path / "0000000000000009.seg.tmp").write_bytes(b"\x00" * 1234)
    (path / "compact.tmp").write_bytes(b"\x01" * 99)
    text = _logged(caplog, path)
    assert "0000000000000009.seg.tmp (1234 bytes)" in text
    assert "compact.tmp (99 bytes)" in text
    assert not list(path.glob("*.tmp"))


def test_flushed_segments_are_deleted_at_open_with_their_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = _three_record_journal(tmp_path)
    segment = _segment(path)
    size = segment.stat().st_size
    (path / "meta").write_bytes(fmt.encode_meta(3) * 2)  # as if flushed before a crash
    assert f"deleting {segment.name} ({size} bytes)" in _logged(caplog, path)
    assert not segment.exists()


# -- issue 11: the journal holds row contents: private to its owner ------------------------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_journal_directory_and_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Cache(MemoryStore(), MappingSource(), write=WriteBack(journal=path)) as cache:
        cache.write(1, {"secret": "row contents"})
        cache.flush()
        cache.write(2, {"secret": "more"})
    assert _mode(path) == 0o700
    files = list(path.iterdir())
    assert {p.name for p in files} >= {"LOCK", "meta"}
    assert any(p.suffix == ".seg" for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_existing_journal_is_tightened_on_open(tmp_path: Path) -> None:
    path, _ = _three_record_journal(tmp_path)
    path.chmod(0o755)
    for entry in path.iterdir():
        entry.chmod(0o644)
    FileJournal(path).close()
    assert _mode(path) == 0o700
    assert {_mode(p) for p in path.iterdir()} == {0o600}


def test_a_flush_waits_for_writes_still_being_journaled_so_none_is_replayed_after_it(
    tmp_path: Path,
) -> None:
    """A write acknowledged before ``flush()`` is never replayed after it returns, even
    when a write with an earlier sequence was still being journaled when the flush began."""
    path = tmp_path / "j"
    inner = FileJournal(path)
    gate = threading.Event()
    entered = threading.Event()

    class SlowAppend:
        """The journal, with the append of key "slow" held at the gate."""

        def append(self, records: Any) -> None:
            if any(key == "slow" for _, key, _ in records):
                entered.set()
                gate.wait(10)
            inner.append(records)

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    source = MappingSource()
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600), journal=SlowAppend())
    try:
        slow = threading.Thread(target=cache.write, args=("slow", 1))
        slow.start()
        assert entered.wait(10)  # seq 1 is handed out, its append is under way
        cache.write("fast", 2)  # seq 2, acknowledged
        flushing = threading.Thread(target=cache.flush)
        flushing.start()
        flushing.join(0.2)
        assert flushing.is_alive()  # waits for seq 1 to be marked
        gate.set()
        slow.join(10)
        flushing.join(10)
        assert source.data == {"slow": 1, "fast": 2}
        assert fmt.decode_meta((path / "meta").read_bytes()) == 2  # past both
    finally:
        gate.set()
        cache.close()
