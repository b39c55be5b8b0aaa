"""Shared vocabulary types: cache keys, the MISSING sentinel, clocks."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, TypeAlias

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

MAX_TTL: Final = 100 * 365.25 * 24 * 3600.0
"""The longest TTL accepted (100 years): beyond it a clock, a timer or Redis's PX overflows."""


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


def check_ttl(ttl: float | None, name: str = "ttl") -> float | None:
    """Return a validated TTL in seconds (``None`` = no expiry).

    Refuses zero, negatives, NaN, infinity and anything beyond :data:`MAX_TTL`, so a
    TTL no store can hold is refused before any state changes, not half-way through.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds or None, got {ttl!r}")
    if not ttl > 0:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {ttl!r}")
    if ttl > MAX_TTL:  # infinity too (NaN failed above); an int of any size compares
        raise ConfigurationError(
            f"{name} must be at most {MAX_TTL:.0f} seconds (100 years), got {ttl!r}; "
            "use None for no expiry"
        )
    return float(ttl)


def check_positive(value: float, name: str, *, integer: bool = False) -> None:
    """Raise ConfigurationError unless ``value`` is a positive number (an int if asked)."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        kind = "integer" if integer else "number"
        raise ConfigurationError(f"{name} must be a positive {kind}, got {value!r}")
