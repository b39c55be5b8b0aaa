"""Shared vocabulary types: cache keys, the MISSING sentinel, clocks."""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from typing import Final, TypeAlias, TypeGuard, TypeVar, overload

from cachewise.errors import ConfigurationError, InvalidKeyError

Key: TypeAlias = str | int | bytes | tuple["Key", ...]
"""A cache key: str, int, bytes or a tuple of keys. bool, float and None are refused:
``True == 1`` and ``1.0 == 1`` would silently share an entry."""

Clock: TypeAlias = Callable[[], float]
"""Seconds on a monotonic scale; injected so TTL and flush timing are testable."""


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""What ``Source.load`` and ``Store.get`` return for an absent key (``None`` can be a value)."""

Missing: TypeAlias = _Missing

_SCALAR_KEYS: Final = (str, int, bytes)

MAX_DEPTH: Final = 32
"""The deepest nesting of containers a key or a value crossing a process boundary may have.

One limit for keys (tuples in tuples) and for values (lists, tuples, dicts), checked when
they are encoded and again when bytes are decoded: decoding a nested tuple recurses in C
(about 40 KB of stack per level), so hostile bytes must be refused long before a thread's
stack runs out. A cached value nested deeper than this is refused with ``CodecError``."""


def check_key(key: object) -> Key:
    """Return ``key`` if it is a supported cache key, else raise InvalidKeyError."""
    kind = type(key)
    if kind is str or kind is int or kind is bytes:
        return key  # type: ignore[return-value]
    if kind is tuple:
        _check_parts(key, 1)  # type: ignore[arg-type]
        return key  # type: ignore[return-value]
    raise _unsupported(kind)


def _check_parts(key: tuple[object, ...], depth: int) -> None:
    # Recursion bounded by MAX_DEPTH: a 5,000-deep key is refused, never a RecursionError.
    if depth > MAX_DEPTH:
        raise InvalidKeyError(f"key nests tuples deeper than {MAX_DEPTH} levels")
    for part in key:
        kind = type(part)
        if kind is str or kind is int or kind is bytes:
            continue
        if kind is tuple:
            _check_parts(part, depth + 1)  # type: ignore[arg-type]
            continue
        raise _unsupported(kind)


def _unsupported(kind: type) -> InvalidKeyError:
    return InvalidKeyError(
        f"unsupported key type {kind.__name__}: keys are str, int, bytes or tuples of them"
    )


MAX_SECONDS: Final = threading.TIMEOUT_MAX
"""The longest duration any option accepts: what a thread wait or a socket timeout can
hold (about 292 years on Linux), and far inside Redis's millisecond expiry times."""


@overload
def check_seconds(value: object, name: str) -> float: ...
@overload
def check_seconds(value: object, name: str, *, optional: bool) -> float | None: ...
def check_seconds(value: object, name: str, *, optional: bool = False) -> float | None:
    """Return ``value`` as seconds, or raise ConfigurationError before anything changes.

    Every option that takes seconds goes through here: a duration is a finite number
    above zero and at most ``MAX_SECONDS`` (``inf`` would kill a flusher thread with
    OverflowError, or be stored as "never" by one store and refused by another).
    ``optional`` lets ``None`` through (no expiry, no limit).
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        either = " or None" if optional else ""
        raise ConfigurationError(f"{name} must be a number of seconds{either}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {value!r}")
    if value > MAX_SECONDS:
        shown = repr(value) if isinstance(value, float) or value.bit_length() < 256 else "10**n"
        raise ConfigurationError(
            f"{name} of {shown} seconds is more than a clock or Redis can hold "
            f"(at most {MAX_SECONDS:.0f} seconds, about 292 years)"
        )
    return float(value)


def backoff(initial: float, maximum: float, factor: float, attempt: int) -> float:
    """``initial * factor ** (attempt - 1)`` capped at ``maximum``, for any ``attempt``.

    The power is never computed past the cap: a float power overflows after about a
    thousand doublings, which a retry loop reaches in a long enough outage.
    """
    delay = initial
    if factor <= 1.0:
        return min(delay, maximum)
    for _ in range(max(0, attempt - 1)):
        if delay >= maximum:
            break
        delay *= factor
    return min(delay, maximum)


def check_ttl(ttl: object, name: str = "ttl") -> float | None:
    """Return a validated TTL in seconds (``None`` = no expiry)."""
    return check_seconds(ttl, name, optional=True)


def check_positive(value: object, name: str, *, integer: bool = False) -> None:
    """Raise ConfigurationError unless ``value`` is a positive finite number (an int if asked).

    For counts and factors; durations go through ``check_seconds``.
    """
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or (isinstance(value, float) and not math.isfinite(value))
        or not value > 0  # type: ignore[operator]
    ):
        kind = "integer" if integer else "number"
        raise ConfigurationError(f"{name} must be a positive {kind}, got {value!r}")


_P = TypeVar("_P")


def implements(part: object, protocol: type[_P]) -> TypeGuard[_P]:
    """``isinstance(part, protocol)`` for a runtime-checkable Protocol, alike on every Python.

    Python 3.12 began looking a protocol's members up statically, so a wrapper that
    forwards calls through ``__getattr__`` (an instrumented or retrying source) passed
    on 3.10 and 3.11 and was refused on 3.12+. Here a member counts if ``getattr`` finds it.
    """
    names = getattr(protocol, "__protocol_attrs__", None)
    if names is None:  # before 3.12, isinstance already looks members up with hasattr
        return isinstance(part, protocol)
    return all(hasattr(part, name) for name in names)
