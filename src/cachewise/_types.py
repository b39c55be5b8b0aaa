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


def check_key(key: object) -> Key:
    """Return ``key`` if it is a supported cache key, else raise InvalidKeyError."""
    kind = type(key)
    if kind is str or kind is int or kind is bytes:
        return key  # type: ignore[return-value]
    if kind is tuple:
        for part in key:  # type: ignore[attr-defined]
            check_key(part)
        return key  # type: ignore[return-value]
    raise InvalidKeyError(
        f"unsupported key type {kind.__name__}: keys are str, int, bytes or tuples of them"
    )


def check_ttl(ttl: float | None, name: str = "ttl") -> float | None:
    """Return a validated TTL in seconds (``None`` = no expiry); refuse zero and negatives."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds or None, got {ttl!r}")
    if not ttl > 0:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {ttl!r}")
    return float(ttl)


def check_positive(value: float, name: str, *, integer: bool = False) -> None:
    """Raise ConfigurationError unless ``value`` is a positive number (an int if asked)."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        kind = "integer" if integer else "number"
        raise ConfigurationError(f"{name} must be a positive {kind}, got {value!r}")
