"""The dirty set: which keys hold writes not yet in the source, pure and without I/O.

Every write gets a sequence number. A key is dirty from its first unflushed write until
a flush of its *latest* write succeeds: ``settle`` forgets a key only if the sequence
that was flushed is still the key's sequence, so a write that lands while its key is
being flushed keeps the key dirty (sequence numbers, not flags). Repeated writes to one
key coalesce into one entry (the last value) and are counted.
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
    """One dirty key: its latest sequence, value (or TOMBSTONE) and when it became dirty."""

    seq: int
    value: Any
    since: float


class DirtySet:
    """Dirty keys in the order they first became dirty (oldest first)."""

    def __init__(self) -> None:
        self._entries: dict[Key, DirtyEntry] = {}
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
        self._entries[key] = DirtyEntry(seq, value, old.since)
        return True

    def take(self, limit: int, upto: int | None = None) -> list[tuple[Key, DirtyEntry]]:
        """Up to ``limit`` dirty entries, oldest first, with ``seq <= upto`` if given.

        Taking does not clean: call :meth:`settle` once the source has them.
        """
        batch: list[tuple[Key, DirtyEntry]] = []
        for key, entry in self._entries.items():
            if upto is None or entry.seq <= upto:
                batch.append((key, entry))
                if len(batch) >= limit:
                    break
        return batch

    def settle(self, flushed: Iterable[tuple[Key, DirtyEntry]]) -> int:
        """Forget keys whose flushed sequence is still their latest; return how many."""
        cleaned = 0
        for key, entry in flushed:
            current = self._entries.get(key)
            if current is not None and current.seq == entry.seq:
                del self._entries[key]
                cleaned += 1
        return cleaned

    def oldest_since(self) -> float | None:
        """When the oldest dirty key became dirty, or None when nothing is dirty."""
        for entry in self._entries.values():
            return entry.since
        return None

    def low_watermark(self) -> int:
        """Every write with a sequence at or below this is in the source or superseded."""
        if not self._entries:
            return self._seq
        return min(entry.seq for entry in self._entries.values()) - 1

    def keys(self) -> list[Key]:
        """The dirty keys, oldest first."""
        return list(self._entries)
