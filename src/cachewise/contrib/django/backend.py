"""``CacheBackend``: Django's cache API (``cache.get``, ``@cache_page``, ...) on cachewise stores.

Django's contract is arbitrary picklable objects, so every value is pickled here, in the
backend, and the store keeps bytes: ``memory://`` keeps pickled copies (as LocMemCache
does: mutating an object after ``set`` never changes the cached one), and values that
leave the process (Redis, memcached) are also signed by the store's codec
(``SignedPickleCodec`` keyed from ``SECRET_KEY``), so bytes planted in a shared cache
are never unpickled. Django's own Redis backend does not sign.

Timeouts have Django's meaning: ``DEFAULT_TIMEOUT`` is the cache's ``TIMEOUT`` (300 s
unless set), ``None`` is for ever, ``0`` or less expires at once (the key is removed).
``add``, ``touch`` and ``incr``/``decr`` use the store's compare-and-set, so they are
atomic across threads and processes; ``incr`` keeps the entry's expiry.

Async: with ``memory://`` no I/O is involved and the ``a*`` methods run inline in the
event loop (no thread hop). With ``redis://`` (not tiered) they are native: each awaits
the very flow its sync method runs, on the event loop's ``AsyncRedisStore`` (same keys,
codec and Lua scripts, so sync and async callers share every entry, and ``aadd``,
``atouch`` and ``aincr`` stay atomic). Tiered Redis and ``memcached://`` keep Django's
``sync_to_async`` fallback.
"""

from __future__ import annotations

import functools
import numbers
import pickle
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Final

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from cachewise._flow import Flow, arun, run
from cachewise._types import MISSING
from cachewise.contrib.django._location import StoreSpec, open_async, parse, shared_store
from cachewise.contrib.django._loops import LoopStores
from cachewise.errors import CodecError, StoreError
from cachewise.stores.base import CompareAndSet

_CAS_TRIES: Final = 100
"""Compare-and-set attempts before a hot key is reported as contended."""
_NOW: Final = object()
"""A timeout of 0 or less: the entry expires at once."""
_LOOP_STORES: Final = LoopStores(open_async)
"""The native a* methods' AsyncRedisStores, one per event loop and LOCATION/OPTIONS."""


class _NativeAsync:
    """An ``a*`` method of :class:`CacheBackend`: native where the store allows it.

    - ``memory://``: no I/O is involved, so the sync method runs in the event loop
      directly (it takes a lock for microseconds and never blocks on I/O).
    - ``redis://`` (not tiered), for the methods with a ``flow``: the sync method's own
      flow, awaited on the running loop's ``AsyncRedisStore`` (``_loops``): no thread.
    - Otherwise Django's own ``a*``: ``sync_to_async`` in a thread for the primitive ones
      (memcached, tiered Redis), or Django's composition of the other ``a*`` methods
      (``adecr``, ``aget_or_set``, ``aincr_version``), which then land on the native ones.
    """

    def __init__(self, name: str, *, native: bool = False) -> None:
        self.name = name
        self.attr = "a" + name
        self.flow = f"_{name}_flow" if native else None

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return self
        if instance.spec.in_process:
            sync: Callable[..., Any] = getattr(instance, self.name)

            async def inline(*args: Any, **kwargs: Any) -> Any:
                return sync(*args, **kwargs)

            return inline
        if self.flow is not None and instance.spec.kind == "redis" and not instance.spec.tiered:
            flow: Callable[..., Flow[Any]] = getattr(instance, self.flow)
            spec = instance.spec

            async def native(*args: Any, **kwargs: Any) -> Any:
                store = await _LOOP_STORES.store(spec)
                return await arun(flow(store, *args, **kwargs))

            return native
        fallback: Callable[..., Coroutine[Any, Any, Any]] = getattr(
            super(CacheBackend, instance), self.attr
        )
        return fallback


class UnpicklableValueError(CodecError, pickle.PicklingError):
    """A value Django asked to cache cannot be pickled (a CodecError and a PicklingError)."""


class CacheBackend(BaseCache):  # type: ignore[misc]  # Django ships no type information
    """A Django cache backend on a cachewise store (LOCATION picks it, OPTIONS tune it).

    ``LOCATION``: ``memory://[NAME]``, ``redis://HOST:PORT/DB`` (``rediss://``,
    ``unix://``) or ``memcached://HOST:PORT``. ``OPTIONS``: ``tiered`` (Redis only: a
    MemoryStore L1 in front, kept coherent across processes), ``max_entries`` and
    ``eviction`` (the in-process store), ``namespace`` (Redis/memcached key prefix,
    default ``"django"``), ``signing_key`` (default: derived from ``SECRET_KEY``) and
    ``timeout`` (seconds for a network call).
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        # Only values that leave the process are signed: memory:// needs no SECRET_KEY.
        remote = not (isinstance(location, str) and location.startswith("memory:"))
        spec = parse(location, options, getattr(settings, "SECRET_KEY", None) if remote else None)
        super().__init__({**params, "OPTIONS": {}})
        self.spec: StoreSpec = spec
        self.store: CompareAndSet = shared_store(spec)

    def __repr__(self) -> str:
        return f"CacheBackend({self.spec.shown!r}, store={self.store!r})"

    # -- values and timeouts -------------------------------------------------------------

    @staticmethod
    def _dumps(value: Any) -> bytes:
        try:
            return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # PicklingError, TypeError for locks, sockets, ...
            raise UnpicklableValueError(f"cannot pickle {type(value).__name__}: {exc}") from exc

    @staticmethod
    def _loads(data: Any) -> Any:
        # Bytes we pickled: in this process (memory://) or verified by the signing codec.
        if not isinstance(data, bytes):
            return MISSING
        return pickle.loads(data)  # noqa: S301 - our own bytes, or HMAC-verified

    def _ttl(self, timeout: Any) -> Any:
        """Seconds for the store, ``None`` for ever, or ``_NOW`` (expire at once)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return _NOW if timeout <= 0 else float(timeout)

    # -- the API: each operation is a flow over a store, run in place or awaited ---------
    # The sync methods run a flow on the shared store; the native a* methods (redis://)
    # await the same flow on the event loop's AsyncRedisStore: one meaning, two drivers.

    def _add_flow(
        self, store: Any, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Flow[bool]:
        made = self.make_and_validate_key(key, version=version)
        data = self._dumps(value)
        ttl = self._ttl(timeout)
        if ttl is _NOW:  # added and expired at once: "added" if nothing was there
            return (yield store.get, (made,)) is MISSING
        return bool((yield store.add, (made, data, ttl)))

    def _get_flow(
        self, store: Any, key: Any, default: Any = None, version: Any = None
    ) -> Flow[Any]:
        made = self.make_and_validate_key(key, version=version)
        value = self._loads((yield store.get, (made,)))
        return default if value is MISSING else value

    def _set_flow(
        self, store: Any, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Flow[None]:
        made = self.make_and_validate_key(key, version=version)
        data = self._dumps(value)
        ttl = self._ttl(timeout)
        if ttl is _NOW:
            yield store.delete, (made,)
        else:
            yield store.set, (made, data, ttl)

    def _touch_flow(
        self, store: Any, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Flow[bool]:
        made = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        for _ in range(_CAS_TRIES):
            data, token = yield store.gets, (made,)
            if data is MISSING:
                return False
            if ttl is _NOW:
                yield store.delete, (made,)
                return True
            if (yield store.cas, (made, data, token, ttl)):
                return True
        raise StoreError(f"touch({key!r}): the key changed {_CAS_TRIES} times in a row")

    def _delete_flow(self, store: Any, key: Any, version: Any = None) -> Flow[bool]:
        return bool((yield store.delete, (self.make_and_validate_key(key, version=version),)))

    def _has_key_flow(self, store: Any, key: Any, version: Any = None) -> Flow[bool]:
        made = self.make_and_validate_key(key, version=version)
        return (yield store.get, (made,)) is not MISSING

    def _incr_flow(self, store: Any, key: Any, delta: int = 1, version: Any = None) -> Flow[Any]:
        made = self.make_and_validate_key(key, version=version)
        for _ in range(_CAS_TRIES):
            data, token = yield store.gets, (made,)
            value = self._loads(data)
            if value is MISSING:
                raise ValueError(f"Key '{key}' not found")
            if isinstance(value, bool) or not isinstance(value, numbers.Number):
                raise TypeError(f"cannot incr/decr {type(value).__name__} at {key!r}: not a number")
            new = value + delta  # type: ignore[operator]
            cas = functools.partial(store.cas, keep_ttl=True)
            if (yield cas, (made, self._dumps(new), token)):
                return new
        raise StoreError(f"incr({key!r}): the key changed {_CAS_TRIES} times in a row")

    def _get_many_flow(
        self, store: Any, keys: Iterable[Any], version: Any = None
    ) -> Flow[dict[Any, Any]]:
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        found = {}
        datas: dict[Any, Any] = yield store.get_many, (list(made),)
        for made_key, data in datas.items():
            value = self._loads(data)
            if value is not MISSING:
                found[made[made_key]] = value
        return found

    def _set_many_flow(
        self,
        store: Any,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
    ) -> Flow[list[Any]]:
        items = {
            self.make_and_validate_key(k, version=version): self._dumps(v) for k, v in data.items()
        }
        ttl = self._ttl(timeout)
        if not items:
            return []
        if ttl is _NOW:
            yield store.delete_many, (list(items),)
        else:
            yield store.set_many, (items, ttl)
        return []  # all or an exception: a store never stores part of a batch silently

    def _delete_many_flow(self, store: Any, keys: Iterable[Any], version: Any = None) -> Flow[None]:
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if made:
            yield store.delete_many, (made,)

    def _clear_flow(self, store: Any) -> Flow[None]:
        yield store.clear, ()

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return run(self._add_flow(self.store, key, value, timeout, version))

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return run(self._get_flow(self.store, key, default, version))

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        run(self._set_flow(self.store, key, value, timeout, version))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return run(self._touch_flow(self.store, key, timeout, version))

    def delete(self, key: Any, version: Any = None) -> bool:
        return run(self._delete_flow(self.store, key, version))

    def has_key(self, key: Any, version: Any = None) -> bool:
        return run(self._has_key_flow(self.store, key, version))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        return run(self._incr_flow(self.store, key, delta, version))

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        return run(self._get_many_flow(self.store, keys, version))

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        return run(self._set_many_flow(self.store, data, timeout, version))

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        run(self._delete_many_flow(self.store, keys, version))

    def clear(self) -> None:
        """Drop every entry of this store (Redis/memcached: its namespace only)."""
        run(self._clear_flow(self.store))

    def close(self, **kwargs: Any) -> None:
        """Django calls this after every request; the shared store stays open."""

    # -- async: inline where no I/O is involved ------------------------------------------

    aadd = _NativeAsync("add", native=True)
    aget = _NativeAsync("get", native=True)
    aset = _NativeAsync("set", native=True)
    atouch = _NativeAsync("touch", native=True)
    adelete = _NativeAsync("delete", native=True)
    ahas_key = _NativeAsync("has_key", native=True)
    aincr = _NativeAsync("incr", native=True)
    adecr = _NativeAsync("decr")
    aget_many = _NativeAsync("get_many", native=True)
    aset_many = _NativeAsync("set_many", native=True)
    adelete_many = _NativeAsync("delete_many", native=True)
    aget_or_set = _NativeAsync("get_or_set")
    aincr_version = _NativeAsync("incr_version")
    adecr_version = _NativeAsync("decr_version")
    aclear = _NativeAsync("clear", native=True)
    aclose = _NativeAsync("close")
