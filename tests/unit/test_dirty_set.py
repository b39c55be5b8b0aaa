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


# -- issue 19: the age of the oldest write not yet in the source ---------------------------


def test_a_key_rewritten_during_its_flush_counts_from_its_first_write_after_the_take() -> None:
    dirty = DirtySet()
    dirty.mark("hot", 1, dirty.next_seq(), now=0.0)
    batch = dirty.take(10)  # a flush takes seq 1 at t=0..
    dirty.mark("hot", 2, dirty.next_seq(), now=5.0)  # ..written again while it runs
    dirty.mark("hot", 3, dirty.next_seq(), now=7.0)
    assert dirty.oldest_since() == 0.0  # seq 1 is not committed yet
    dirty.settle(batch)  # committed: what is left started at t=5
    entry = dirty.get("hot")
    assert entry is not None
    assert (entry.seq, entry.since) == (3, 5.0)
    assert dirty.oldest_since() == 5.0


def test_a_failed_flush_changes_no_age_and_the_next_take_starts_over() -> None:
    dirty = DirtySet()
    dirty.mark("k", 1, dirty.next_seq(), now=0.0)
    dirty.take(10)  # this flush fails: never settled
    dirty.mark("k", 2, dirty.next_seq(), now=4.0)
    batch = dirty.take(10)  # the retry takes seq 2
    dirty.mark("k", 3, dirty.next_seq(), now=9.0)
    assert dirty.oldest_since() == 0.0
    dirty.settle(batch)
    assert dirty.oldest_since() == 9.0  # not 4.0: seq 2 went out with the retry


def test_the_oldest_age_stays_exact_when_a_resumed_key_is_older_than_a_new_one() -> None:
    dirty = DirtySet()
    dirty.mark("a", 1, dirty.next_seq(), now=0.0)
    batch = dirty.take(10)
    dirty.mark("a", 2, dirty.next_seq(), now=1.0)  # a: rewritten at t=1 during the flush
    dirty.mark("b", 1, dirty.next_seq(), now=2.0)  # b: new at t=2, ahead of a in the order
    dirty.settle(batch)
    assert dirty.keys() == ["b", "a"]
    assert dirty.oldest_since() == 1.0  # a's, though b comes first
    dirty.settle(dirty.take(10))
    assert dirty.oldest_since() is None


def test_the_eviction_flush_takes_keys_the_same_way() -> None:
    dirty = DirtySet()
    dirty.mark("k", 1, dirty.next_seq(), now=0.0)
    batch = dirty.take_keys(["k", "clean"])
    assert [k for k, _ in batch] == ["k"]
    dirty.mark("k", 2, dirty.next_seq(), now=3.0)
    dirty.settle(batch)
    assert dirty.oldest_since() == 3.0


def test_discard_forgets_only_the_latest_write() -> None:
    dirty = DirtySet()
    dirty.mark("k", 1, dirty.next_seq(), now=0.0)
    assert not dirty.discard("k", 0)
    assert dirty.discard("k", 1)
    assert len(dirty) == 0
