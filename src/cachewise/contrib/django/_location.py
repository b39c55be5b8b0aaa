"""A Django cache's LOCATION and OPTIONS as a store: parsed without I/O, opened once per process.

Django builds one backend object per thread (and per ``override_settings``), so the store
behind a LOCATION is shared by every backend object with the same settings: one
connection pool, one invalidation subscription, and for ``memory://NAME`` one
in-process store, as LocMemCache shares its dictionary by LOCATION.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from cachewise.codecs import SignedPickleCodec
from cachewise.errors import ConfigurationError
from cachewise.pool import redact
from cachewise.stores.base import CompareAndSet
from cachewise.stores.memory import MemoryStore

DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_NAMESPACE: Final = "django"
_KINDS: Final = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "memcached": "memcached",
}
_OPTIONS: Final = frozenset(
    {
        "tiered",
        "l1_ttl",
        "max_entries",
        "MAX_ENTRIES",
        "eviction",
        "namespace",
        "signing_key",
        "timeout",
    }
)
_SIGNING_SALT: Final = b"cachewise.contrib.django cache values"


@dataclass(frozen=True)
class StoreSpec:
    """What store a LOCATION and OPTIONS describe (a plain value: the registry's key)."""

    kind: str
    """``memory``, ``redis`` or ``memcached``."""
    location: str = field(repr=False)
    """The URL (``memory://NAME`` names an in-process store)."""
    shown: str
    """The location with any password replaced, for messages."""
    namespace: str
    tiered: bool
    max_entries: int
    eviction: str
    timeout: float
    l1_ttl: float
    """Tiered: how long an entry read from Redis may stay in L1 (its expiry can be seen
    this much late; invalidations and writes reach L1 at once)."""
    secret: bytes = field(repr=False)

    @property
    def in_process(self) -> bool:
        """True when no I/O is involved (``memory://``): async calls run inline."""
        return self.kind == "memory"


def parse(location: str, options: dict[str, Any], secret_key: str | bytes | None) -> StoreSpec:
    """Validate LOCATION and OPTIONS; ConfigurationError names what is wrong."""
    if not isinstance(location, str) or "://" not in location:
        raise ConfigurationError(
            "LOCATION must be memory://[NAME], redis://HOST:PORT/DB or memcached://HOST:PORT, "
            f"got {redact(str(location))!r}"
        )
    scheme = urlsplit(location).scheme
    kind = _KINDS.get(scheme)
    if kind is None:
        raise ConfigurationError(
            f"LOCATION scheme {scheme!r} is not memory://, redis://, rediss://, unix:// "
            "or memcached://"
        )
    unknown = sorted(set(options) - _OPTIONS - {"CULL_FREQUENCY"})
    if unknown:
        raise ConfigurationError(
            f"unknown OPTIONS {unknown}; cachewise takes {sorted(_OPTIONS - {'MAX_ENTRIES'})}"
        )
    if "CULL_FREQUENCY" in options:
        raise ConfigurationError(
            "OPTIONS CULL_FREQUENCY: cachewise evicts one entry at a time by policy "
            "(OPTIONS eviction=...), it does not cull"
        )
    tiered = options.get("tiered", False)
    if not isinstance(tiered, bool):
        raise ConfigurationError(f"OPTIONS tiered must be True or False, got {tiered!r}")
    if tiered and kind != "redis":
        raise ConfigurationError("OPTIONS tiered=True needs a redis:// LOCATION (L2 in Redis)")
    max_entries = options.get("max_entries", options.get("MAX_ENTRIES", DEFAULT_MAX_ENTRIES))
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ConfigurationError(f"OPTIONS max_entries must be an int >= 1, got {max_entries!r}")
    eviction = options.get("eviction", "auto")
    namespace = options.get("namespace", DEFAULT_NAMESPACE)
    timeout = options.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigurationError(f"OPTIONS timeout must be seconds > 0, got {timeout!r}")
    l1_ttl = options.get("l1_ttl", 1.0)
    if isinstance(l1_ttl, bool) or not isinstance(l1_ttl, (int, float)) or l1_ttl <= 0:
        raise ConfigurationError(f"OPTIONS l1_ttl must be seconds > 0, got {l1_ttl!r}")
    return StoreSpec(
        kind=kind,
        location=location,
        shown=redact(location),
        namespace=namespace,
        tiered=tiered,
        max_entries=max_entries,
        eviction=eviction,
        timeout=float(timeout),
        l1_ttl=float(l1_ttl),
        secret=_secret(kind, options.get("signing_key"), secret_key),
    )


def _secret(kind: str, signing_key: Any, secret_key: str | bytes | None) -> bytes:
    """The HMAC key for values that leave the process (b"" for memory://)."""
    if kind == "memory":
        return b""
    base = signing_key if signing_key is not None else secret_key
    if isinstance(base, str):
        base = base.encode("utf-8")
    if not isinstance(base, bytes) or not base:
        raise ConfigurationError(
            "values in Redis or memcached are signed: set SECRET_KEY or OPTIONS signing_key"
        )
    # A key of its own, so the cache's signatures are never valid Django signatures.
    return hmac.new(base, _SIGNING_SALT, hashlib.sha256).digest()


_STORES: dict[StoreSpec, CompareAndSet] = {}
_LOCK = threading.Lock()


def shared_store(spec: StoreSpec) -> CompareAndSet:
    """The process's store for ``spec``, opened on first use."""
    with _LOCK:
        store = _STORES.get(spec)
        if store is None:
            store = _STORES[spec] = _open(spec)
        return store


def _open(spec: StoreSpec) -> CompareAndSet:
    if spec.kind == "memory":
        return MemoryStore(max_entries=spec.max_entries, eviction=spec.eviction)
    codec = SignedPickleCodec(spec.secret)
    if spec.kind == "memcached":
        module = _optional("cachewise.stores.memcached", "memcached")
        store: CompareAndSet = module.MemcachedStore(
            spec.location, namespace=spec.namespace, codec=codec, timeout=spec.timeout
        )
        return store
    redis_module = _optional("cachewise.stores.redis", "redis")
    l2 = redis_module.RedisStore(
        spec.location, namespace=spec.namespace, codec=codec, timeout=spec.timeout
    )
    if not spec.tiered:
        return l2  # type: ignore[no-any-return]
    tiered = importlib.import_module("cachewise.stores.tiered")
    # L1 fills from Redis do not carry Redis's TTL: l1_ttl bounds how long they live.
    l1 = MemoryStore(max_entries=spec.max_entries, eviction=spec.eviction, ttl=spec.l1_ttl)
    return tiered.TieredStore(l1, l2)  # type: ignore[no-any-return]


def open_async(spec: StoreSpec) -> Any:
    """An ``AsyncRedisStore`` for a (non-tiered) Redis ``spec``: the sync store's twin.

    Same location, namespace, signing codec and timeout as ``_open``'s ``RedisStore``, so
    the backend's sync and native async methods read and write the same entries.
    """
    if spec.kind != "redis" or spec.tiered:
        raise ConfigurationError(f"no native async store for {spec.shown!r}")
    module = _optional("cachewise.aio.redis", "async")
    return module.AsyncRedisStore(
        spec.location,
        namespace=spec.namespace,
        codec=SignedPickleCodec(spec.secret),
        timeout=spec.timeout,
    )


def _optional(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"this LOCATION needs pip install 'cachewise[{extra}]' ({exc.name} is missing)"
        ) from exc
