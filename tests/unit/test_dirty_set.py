"""The pure dirty set: sequences, coalescing, settle only the flushed sequence."""

from __future__ import annotations

from cachewise.writeback.dirty import TOMBSTONE, DirtySet


def test_sequences_increase_and_coalesce_to_last_value() -> None:
    dirty = DirtySet()
    for value in ("a", "b", "c"):
        assert dirty.mark("k", value, dirty.next_seq(), now=1.0)
    entry = dirty.get("k")
    assert entry is not None
    assert (entry.seq, entry.value, entry.since) == (3, "c", 1.0)
    assert dirty.coalesced == 2
    assert len(dirty) == 1


def test_an_older_sequence_never_overwrites_a_newer_one() -> None:
    dirty = DirtySet()
    assert dirty.mark("k", "new", 5, now=0.0)
    assert not dirty.mark("k", "old", 4, now=0.0)
    entry = dirty.get("k")
    assert entry is not None
    assert entry.value == "new"
    assert dirty.last_seq == 5


def test_write_during_flush_keeps_the_key_dirty() -> None:
    dirty = DirtySet()
    dirty.mark("k", 1, dirty.next_seq(), now=0.0)
    batch = dirty.take(10)
    dirty.mark("k", 2, dirty.next_seq(), now=0.5)  # lands while the batch is in flight
    assert dirty.settle(batch) == 0
    entry = dirty.get("k")
    assert entry is not None
    assert entry.value == 2


def test_settle_cleans_what_was_flushed() -> None:
    dirty = DirtySet()
    for key in "abc":
        dirty.mark(key, key, dirty.next_seq(), now=0.0)
    batch = dirty.take(2)
    assert [k for k, _ in batch] == ["a", "b"]
    assert dirty.settle(batch) == 2
    assert dirty.keys() == ["c"]


def test_take_respects_upto_so_a_busy_key_cannot_starve_a_flush() -> None:
    dirty = DirtySet()
    dirty.mark("a", 1, dirty.next_seq(), now=0.0)
    upto = dirty.last_seq
    dirty.mark("b", 1, dirty.next_seq(), now=0.0)
    assert [k for k, _ in dirty.take(10, upto)] == ["a"]


def test_oldest_since_and_watermark() -> None:
    dirty = DirtySet()
    assert dirty.oldest_since() is None
    assert dirty.low_watermark() == 0
    dirty.mark("a", 1, dirty.next_seq(), now=10.0)
    dirty.mark("b", TOMBSTONE, dirty.next_seq(), now=20.0)
    dirty.mark("a", 2, dirty.next_seq(), now=30.0)
    assert dirty.oldest_since() == 10.0
    assert dirty.low_watermark() == 1  # b (seq 2) is the oldest still-dirty write
    dirty.settle(dirty.take(10))
    assert dirty.low_watermark() == 3
