"""The one exception tree of cachewise; foreign errors are translated at the boundary.

::

    CachewiseError
     ├── ConfigurationError (ValueError)   a bad argument or setting, raised before any change
     │    ├── InvalidKeyError (TypeError)   a key of an unsupported type
     │    └── InvalidValueError             a value the source can be known to refuse
     ├── ClosedError                       the cache was used after close()
     ├── StoreError                        the cache's storage failed (Redis down, ...)
     ├── SourceError                       the authoritative data source failed
     │    ├── FlushError                   write-back could not write dirty entries; they stay dirty
     │    └── RejectedError                the source refused a row (constraint, type, range)
     ├── CacheFullError                    write-back is at max_dirty: no room for a new dirty key
     ├── CodecError (ValueError)           a value could not be encoded or decoded
     │    └── SignatureError               a signed value failed verification
     ├── JournalError (OSError)            the write-back journal could not be written or read
     │    └── JournalCorruptError          a damaged record that is not the torn tail
     ├── PoolTimeout (TimeoutError)        no database connection became free in time
     └── LeaseError                        a cross-process lease could not be taken or kept

    BlockingCallWarning (RuntimeWarning)   a sync Cache call blocked a running event loop

Every foreign exception (SQLAlchemy, redis-py, OS) is re-raised as one of these with
``raise ... from exc`` so callers catch one tree; messages never carry passwords.
"""

from __future__ import annotations

from typing import Any


class CachewiseError(Exception):
    """Base of every error cachewise raises on purpose."""


class ConfigurationError(CachewiseError, ValueError):
    """A bad argument or setting; raised before any state changes."""


class InvalidKeyError(ConfigurationError, TypeError):
    """A cache key of an unsupported type (keys are str, int, bytes or tuples of them)."""


class InvalidValueError(ConfigurationError):
    """A value the source can be known to refuse without asking it.

    Not a row, an unknown column, a missing required column, a key column that
    disagrees with the key: refused at ``write()``, before anything changes.
    """


class ClosedError(CachewiseError):
    """The cache (or store, or journal) was used after ``close()``."""


class StoreError(CachewiseError):
    """The cache's storage failed; the cause is chained."""


class SourceError(CachewiseError):
    """The authoritative data source failed; the cause is chained."""


class FlushError(SourceError):
    """Write-back could not write its dirty entries; they stay dirty and are retried.

    When the source refused some rows for what they hold, the others were written and
    ``rejected`` maps each refused key to the source's reason: those keys are parked
    (``Cache.rejected()``), not retried.
    """

    def __init__(self, message: str, rejected: dict[Any, str] | None = None) -> None:
        super().__init__(message)
        self.rejected: dict[Any, str] = rejected or {}


class RejectedError(SourceError):
    """The source refused a row for what it holds, not for being unreachable.

    A constraint, a type or range error: the same write fails the same way every time.
    Sources raise it so that write-back can isolate the row and flush the rest.
    """


class CacheFullError(CachewiseError):
    """Write-back holds ``max_dirty`` dirty keys and cannot accept another (backpressure)."""


class CodecError(CachewiseError, ValueError):
    """A value could not be encoded or decoded."""


class SignatureError(CodecError):
    """A signed value failed verification: it is treated as a miss, never unpickled."""


class JournalError(CachewiseError, OSError):
    """The write-back journal could not be appended, synced or read."""


class JournalCorruptError(JournalError):
    """A damaged journal record that is not the torn tail; start-up stops here."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"journal {path} is corrupt at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class PoolTimeout(CachewiseError, TimeoutError):  # noqa: N818 - the name issue 6 gives it
    """No connection became free within the pool's timeout."""


class LeaseError(CachewiseError):
    """A cross-process lease could not be taken or was lost."""


class BlockingCallWarning(RuntimeWarning):
    """A sync ``Cache`` call that waits on I/O ran inside a running event loop (once per cache).

    It blocks every other task meanwhile; ``cachewise.aio.AsyncCache`` is the async driver.
    """


__all__ = [
    "BlockingCallWarning",
    "CacheFullError",
    "CachewiseError",
    "ClosedError",
    "CodecError",
    "ConfigurationError",
    "FlushError",
    "InvalidKeyError",
    "InvalidValueError",
    "JournalCorruptError",
    "JournalError",
    "LeaseError",
    "PoolTimeout",
    "RejectedError",
    "SignatureError",
    "SourceError",
    "StoreError",
]
