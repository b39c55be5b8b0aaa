"""The dirty set: which keys hold writes not yet in the source, pure and without I/O.

Every write gets a sequence number. A key is dirty from its first unflushed write until
a flush of its *latest* write succeeds: ``settle`` forgets a key only if the sequence
that was flushed is still the key's sequence, so a write that lands while its key is
being flushed keeps the key dirty (sequence numbers, not flags). Repeated writes to one
key coalesce into one entry (the last value) and are counted.

Age. An entry's ``since`` is when the oldest write of the key not yet in the source was
made. A key rewritten while a flush of it is under way stays dirty, but the flush did
commit everything up to the sequence it took: ``since`` then restarts at the first
write after the take (``resume``), so a hot key rewritten between every flush is as old
as its newest unflushed writes, not as old as the first write it ever had.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from cachewise._types import Key


class _Tombstone(enum.Enum):
    TOMBSTONE = "TOMBSTONE"

    def __repr__(self) -> str:
        return "TOMBSTONE"


TOMBSTONE: Final = _Tombstone.TOMBSTONE
"""The dirty value of a deleted key: the flush removes it from the source."""


@dataclass(frozen=True, slots=True)
class DirtyEntry:
    """One dirty key: its latest sequence, value (or TOMBSTONE) and its oldest unflushed write.

    ``flushing`` is set while a flush holds the key (:meth:`DirtySet.take`); ``resume`` is
    when the first write after that take was made, the key's ``since`` if the flush
    commits.
    """

    seq: int
    value: Any
    since: float
    resume: float | None = None
    flushing: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """A write the source refused (a constraint, a value its column cannot hold): parked.

    It is out of the dirty set, so it neither blocks other keys nor counts against
    ``max_dirty``; it stays in the journal until retried, discarded or replaced by a new
    write of its key.
    """

    value: Any
    """The refused value (``TOMBSTONE`` for a refused delete)."""
    error: str
    """The source's reason, as it gave it."""
    seq: int
    """The refused write's sequence number."""


class DirtySet:
    """Dirty keys in the order they first became dirty (oldest first)."""

    def __init__(self) -> None:
        self._entries: dict[Key, DirtyEntry] = {}
        self._resumed: dict[Key, float] = {}
        """Keys moved to the back by ``settle`` with their new ``since`` (out of age order)."""
        self._seq = 0
        self.coalesced = 0
        """Writes absorbed by a later write to the same key before a flush."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: Key) -> DirtyEntry | None:
        """The dirty entry of ``key``, or None if it is clean."""
        return self._entries.get(key)

    @property
    def last_seq(self) -> int:
        """The highest sequence handed out (or replayed)."""
        return self._seq

    def advance(self, seq: int) -> None:
        """Hand out sequences above ``seq`` from now on (a reopened journal's highest)."""
        self._seq = max(self._seq, seq)

    def next_seq(self) -> int:
        """Hand out the next sequence number."""
        self._seq += 1
        return self._seq

    def mark(self, key: Key, value: Any, seq: int, now: float) -> bool:
        """Record the write ``seq`` of ``key``; False (ignored) if a newer one is recorded.

        ``seq`` comes from :meth:`next_seq`, or from a journal on replay.
        """
        self._seq = max(self._seq, seq)
        old = self._entries.get(key)
        if old is None:
            self._entries[key] = DirtyEntry(seq, value, now)
            return True
        if old.seq >= seq:
            return False
        self.coalesced += 1
        if old.flushing:
            resume = now if old.resume is None else old.resume
            self._entries[key] = DirtyEntry(seq, value, old.since, resume, True)
        else:
            self._entries[key] = DirtyEntry(seq, value, old.since)
        return True

    def take(self, limit: int, upto: int | None = None) -> list[tuple[Key, DirtyEntry]]:
        """Up to ``limit`` dirty entries, oldest first, with ``seq <= upto`` if given.

        Taking does not clean: call :meth:`settle` once the source has them (a failed
        flush simply takes them again).
        """
        batch: list[tuple[Key, DirtyEntry]] = []
        for key, entry in self._entries.items():
            if upto is None or entry.seq <= upto:
                batch.append((key, entry))
                if len(batch) >= limit:
                    break
        return self._hold(batch)

    def take_keys(self, keys: Iterable[Key]) -> list[tuple[Key, DirtyEntry]]:
        """The dirty entries of ``keys`` (the clean ones are skipped), held like :meth:`take`."""
        entries = self._entries
        return self._hold([(key, e) for key in keys if (e := entries.get(key)) is not None])

    def _hold(self, batch: list[tuple[Key, DirtyEntry]]) -> list[tuple[Key, DirtyEntry]]:
        """Mark the batch's entries as being flushed: writes from now on count as after it."""
        held = []
        entries = self._entries
        for key, entry in batch:
            mine = entry
            if not entry.flushing or entry.resume is not None:
                mine = entries[key] = DirtyEntry(entry.seq, entry.value, entry.since, None, True)
            held.append((key, mine))
        return held

    def settle(self, flushed: Iterable[tuple[Key, DirtyEntry]]) -> int:
        """Forget keys whose flushed sequence is still their latest; return how many.

        A key written since it was taken stays dirty, its age restarting at the first of
        those writes (it moves to the back: the dirty order is by age).
        """
        cleaned = 0
        entries = self._entries
        for key, entry in flushed:
            current = entries.get(key)
            if current is None:
                continue
            if current.seq == entry.seq:
                del entries[key]
                self._resumed.pop(key, None)
                cleaned += 1
            elif current.seq > entry.seq and current.resume is not None:
                del entries[key]
                entries[key] = DirtyEntry(current.seq, current.value, current.resume)
                self._resumed[key] = current.resume
        return cleaned

    def discard(self, key: Key, seq: int) -> bool:
        """Forget ``key`` if ``seq`` is still its latest write (a write the source refused)."""
        current = self._entries.get(key)
        if current is None or current.seq != seq:
            return False
        del self._entries[key]
        self._resumed.pop(key, None)
        return True

    def oldest_since(self) -> float | None:
        """When the oldest write not yet in the source was made, or None when nothing is dirty.

        The first entry is the oldest of those never settled while rewritten; keys that
        were (``_resumed``, few: rewritten during a flush) are checked one by one.
        """
        oldest = None
        for entry in self._entries.values():
            oldest = entry.since
            break
        for since in self._resumed.values():
            if oldest is None or since < oldest:
                oldest = since
        return oldest

    def low_watermark(self) -> int:
        """Every write with a sequence at or below this is in the source or superseded."""
        if not self._entries:
            return self._seq
        return min(entry.seq for entry in self._entries.values()) - 1

    def keys(self) -> list[Key]:
        """The dirty keys, oldest first."""
        return list(self._entries)
