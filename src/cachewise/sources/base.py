"""The Source contract: the authoritative data source a cache reads from and writes to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from cachewise._types import Key


@runtime_checkable
class Source(Protocol):
    """The authoritative data source (in the workshop's words): the tables of record.

    ``load`` returns ``MISSING`` for an absent key. ``save_many`` is an idempotent
    upsert, so a write-back batch applied twice (at-least-once replay) leaves the
    same state. ``remove`` of an absent key is not an error.
    """

    def load(self, key: Key) -> Any:
        """Return the value for ``key`` or ``MISSING``."""
        ...

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """Return the keys found, with their values, in as few round trips as possible."""
        ...

    def save(self, key: Key, value: Any) -> None:
        """Insert or replace the value for ``key``."""
        ...

    def save_many(self, items: Mapping[Key, Any]) -> None:
        """Insert or replace every item, atomically where the source can."""
        ...

    def remove(self, key: Key) -> None:
        """Delete ``key`` if present."""
        ...

    def remove_many(self, keys: Iterable[Key]) -> None:
        """Delete every key that is present."""
        ...


@runtime_checkable
class KeyChecked(Protocol):
    """A source that knows which keys it can hold (e.g. the key column's type).

    The cache calls ``check_key`` before any I/O for the key (store or source), so a
    key of the wrong type is refused the same way on every database instead of being
    coerced by one (SQLite: ``"1"`` finds the row ``1``) and refused by another.
    """

    def check_key(self, key: Key) -> Key:
        """Return ``key`` if this source can hold it, else raise InvalidKeyError."""
        ...


@runtime_checkable
class ValidatingSource(Source, Protocol):
    """A source that can tell, without I/O, that it would refuse a write.

    Write-back calls ``validate`` before it acknowledges a write, so a value the source
    can be known to refuse is refused at ``write()`` instead of failing a flush later.
    Only what needs no database belongs here: constraints the database checks (CHECK,
    foreign keys, ranges) are found at flush time, where the row is isolated and parked.
    """

    def validate(self, key: Key, value: Any) -> None:
        """Raise InvalidKeyError or InvalidValueError if the write cannot succeed.

        ``value`` is what would be saved under ``key``, or ``MISSING`` for a removal.
        """
        ...
