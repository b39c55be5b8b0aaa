"""RedisStore: cached values in Redis, shared by every process, guarded against races.

Layout. A cache key ``k`` in namespace ``ns`` lives under Redis keys that share one
Redis Cluster hash tag, so everything that must change together sits in one slot:

    ns:{<encode_key(k)>}:v    the encoded value (Redis TTL = the entry's TTL)
    ns:{<encode_key(k)>}:n    the key's version: bumped by every set and delete
    ns:{<encode_key(k)>}:l    the load lease: a random token, SET NX PX
    ns:{<encode_key(k)>}:w    the write hold: writes of the key in flight to the source

Every ``set``/``delete`` is one Lua script that writes the value and bumps the version
atomically (the scripts are in ``_redis_scripts``). ``begin_load`` reads the version
and tries the lease in one script; ``end_load`` stores only if the version is unchanged
(one script), so a process that loaded an old value from the source while another
process wrote never caches it (the cache-aside race), and only the lease holder loads
while the others wait briefly for its value (the stampede). A lease holder that dies
is replaced when its lease expires. Every operation is written once as a flow
(``_flow.py``): ``RedisStore`` runs it in place, ``AsyncRedisStore`` awaits it.

A write that goes to the source (write-through, write-around, their deletes) is
bracketed (``WriteGuarded``): ``begin_write`` drops the cached copy and holds the key
before the source write, ``end_write`` stores the new value after it. Redis outlives
the writing process, so a crash at any point leaves a miss, never the old value.

Values go through a codec (msgpack by default, never pickle unless signed); a value
that fails to decode or verify is a miss, counted in ``rejected``, never executed.
Every value is stamped with the namespace's epoch (``_redis_epoch``): after a Redis
restart or failover, values from before it (perhaps restored from an older snapshot)
read as misses, counted in ``cold_reads``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, cast

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisError

from cachewise._events import event
from cachewise._flow import Flow, run
from cachewise._redact import leaks, parses, redact, secrets
from cachewise._types import MISSING, Key, check_seconds, check_ttl
from cachewise.codecs import Codec, default_codec, encode_key
from cachewise.errors import ClosedError, CodecError, ConfigurationError, StoreError
from cachewise.stats import Counter
from cachewise.stores import _redis_cluster as _cluster
from cachewise.stores import _redis_epoch as _epoch
from cachewise.stores import _redis_scripts as scripts
from cachewise.stores import _redis_slots as _slots
from cachewise.stores._redis_claim import RedisClaim
from cachewise.stores.base import LoadTicket, PreparedWrite

logger = logging.getLogger("cachewise.redis")

_SCHEMES: Final = ("redis://", "rediss://", "unix://")
_NAMESPACE: Final = re.compile(r"[!-z|~]+")  # printable ASCII, no space, no { }
_GLOB_SPECIAL: Final = re.compile(r"([*?\[\]\\])")
_WARN_EVERY: Final = 10.0  # seconds between fail-open warnings
_FAILED: Final = object()
"""What a fail-open read returns when Redis could not be reached."""
_VERSION_TTL_MS: Final = 24 * 3600 * 1000
"""A version key expires this long after it was created (see ``_redis_scripts``)."""


@dataclass(frozen=True)
class _Guard:
    """RedisStore's load ticket token: the version seen and the lease token (if held)."""

    version: bytes
    lease: bytes
    storable: bool = True
    """False when a write of the key was in flight at ``begin_load``: load, never store."""


@dataclass(frozen=True)
class _Encoded:
    """A RedisStore's prepared write: wire keys (value, version, hold per key), payloads.

    ``payloads[i]`` is None for a key whose cached copy is only dropped. ``held`` holds
    the versions ``begin_write`` left, once it has run.
    """

    wires: list[bytes]
    payloads: list[bytes | None]
    px: int
    held: list[bytes] | None = None


def check_redis_url(url: object) -> None:
    """Raise ConfigurationError unless ``url`` is a Redis URL redis-py reads as written."""
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        shown = redact(url) if isinstance(url, str) else repr(url)
        raise ConfigurationError(f"url must be redis://, rediss:// or unix://, got {shown}")
    if not parses(url):
        # redis-py's parser would end the password at the "/", "?" or "#" and connect
        # somewhere else with part of it as the host or path.
        raise ConfigurationError(
            f"cannot read the Redis url {redact(url)}: percent-encode '@', '/', '?' and '#' "
            "in the user name and password (urllib.parse.quote(password, safe=''))"
        )


def _cluster_settings(
    client: object, cluster: bool, retry_for: float, replicas: int, wait: float
) -> tuple[float, _slots.Acknowledgement | None]:
    """Check the Redis Cluster options; return the retry deadline and the WAIT to send.

    With ``replicas`` every write is acknowledged only once that many replicas have it.
    """
    check_seconds(retry_for, "cluster_retry_for")
    check_seconds(wait, "wait_timeout")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ConfigurationError(f"wait_replicas must be an int >= 0, got {replicas!r}")
    on_cluster = _cluster.is_cluster(client)
    if cluster and client is not None and not on_cluster:
        raise ConfigurationError("cluster=True takes a redis.cluster.RedisCluster client")
    if replicas and not (cluster or on_cluster):
        raise ConfigurationError("wait_replicas is for a Redis Cluster (cluster=True)")
    ack = _slots.Acknowledgement(replicas, _px(wait)) if replicas else None
    return float(retry_for), ack


def _px(ttl: float | None) -> int:
    """Milliseconds for Redis PX (0 = no expiry); never rounds a TTL down to zero."""
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


class RedisStore:
    """A store in Redis: shared across processes and hosts, TTLs kept by Redis itself.

    ``fail_open=True`` turns read failures (Redis down) into misses, counted in
    ``failed_reads``, so read-through falls back to the source; writes still raise
    :class:`StoreError`. ``lease_ttl`` bounds how long a crashed loader can hold back
    the others; ``lease_wait`` (default ``lease_ttl``) how long a waiter waits before
    it loads by itself. ``write_hold`` bounds how long a writer that died between its
    drop and its store keeps the key uncacheable (reads go to the source meanwhile);
    make it longer than your slowest source write.
    """

    _sleep = staticmethod(time.sleep)
    """How a lease waiter pauses (the async store awaits ``asyncio.sleep`` instead)."""
    _asynchronous = False
    """Whether ``client`` is a redis.asyncio client (its connect hook is awaited)."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        namespace: str = "cw",
        ttl: float | None = None,
        codec: Codec | None = None,
        *,
        fail_open: bool = False,
        client: redis.Redis | RedisCluster | None = None,
        lease_ttl: float = 5.0,
        lease_wait: float | None = None,
        timeout: float = 5.0,
        write_hold: float = 30.0,
        cluster: bool = False,
        cluster_retry_for: float = 10.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"namespace must be printable ASCII without spaces or braces, got {namespace!r}"
            )
        self._ttl = check_ttl(ttl)
        check_seconds(lease_ttl, "lease_ttl")
        check_seconds(timeout, "timeout")
        check_seconds(lease_wait, "lease_wait", optional=True)
        check_seconds(write_hold, "write_hold")
        self._retry_for, self._ack = _cluster_settings(
            client, cluster, cluster_retry_for, wait_replicas, wait_timeout
        )
        if codec is not None and not (hasattr(codec, "encode") and hasattr(codec, "decode")):
            raise ConfigurationError(f"codec must have encode() and decode(), got {codec!r}")
        check_redis_url(url)
        self._url = redact(url)
        self._secrets = secrets(url)
        self.namespace = namespace
        self.codec: Codec = codec if codec is not None else default_codec()
        self.fail_open = bool(fail_open)
        self._lease_ms = _px(lease_ttl)
        self._hold_ms = _px(write_hold)
        self._lease_wait = float(lease_wait if lease_wait is not None else lease_ttl)
        self._prefix = f"{namespace}:{{"
        self._owns_client = client is None
        if client is None:
            client = _cluster.connect(url, timeout) if cluster else self._connect(url, timeout)
        self.cluster = _cluster.is_cluster(client)
        """Whether this store runs on a Redis Cluster (``cluster=True`` or a cluster client)."""
        # RedisCluster has the same command surface for everything the store calls.
        self.client: redis.Redis = cast("redis.Redis", client)
        self._epoch = _epoch.Epoch(namespace)
        _epoch.watch(client, self._epoch, asynchronous=self._asynchronous)
        self._set = client.register_script(scripts.SET)
        self._default_px = _px(self._ttl)
        self._set_many = self._batch_script(scripts.SET_MANY, _slots.Layout(2, 2, 1, 1, "one"))
        self._delete = self._batch_script(scripts.DELETE, _slots.Layout(2, 1, 0, 0, "sum"))
        self._begin = client.register_script(scripts.BEGIN)
        self._end = client.register_script(scripts.END)
        self._end_many = self._batch_script(scripts.END_MANY, _slots.Layout(2, 1, 2, 1, "list"))
        self._hold = self._batch_script(scripts.HOLD, _slots.Layout(3, 2, 0, 0, "list"))
        self._release = self._batch_script(scripts.RELEASE, _slots.Layout(3, 2, 3, 1, "list"))
        self._cas = client.register_script(scripts.CAS)
        self._add = client.register_script(scripts.ADD)
        self._closed = False
        self._rejected = Counter()
        self._cold_reads = Counter()
        self._failed_reads = Counter()
        self._lock = threading.Lock()
        self._warned_at = -_WARN_EVERY

    def _batch_script(self, text: str, layout: _slots.Layout) -> Any:
        """A script over many cache keys: split by slot on a cluster (``_redis_slots``)."""
        if self.cluster:
            client = cast("RedisCluster", self.client)
            return _slots.SlottedScript(client, text, layout, self._ack)
        return self.client.register_script(text)

    def _connect(self, url: str, timeout: float) -> redis.Redis:
        try:
            return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except (ValueError, RedisError):
            pass
        # Raised outside the handler: a URL parser's message may quote the password.
        raise ConfigurationError(f"cannot use Redis url {self._url}")

    def __repr__(self) -> str:
        return f"RedisStore({self._url!r}, namespace={self.namespace!r}, ttl={self._ttl})"

    @property
    def ttl(self) -> float | None:
        """The default TTL in seconds (``None``: no expiry)."""
        return self._ttl

    @property
    def rejected(self) -> int:
        """Values read that failed to decode or verify (each was treated as a miss)."""
        return self._rejected.value

    @property
    def cold_reads(self) -> int:
        """Values read that were stamped with another epoch (written before a restart)."""
        return self._cold_reads.value

    @property
    def restarts(self) -> int:
        """Redis restarts (or failovers) this store noticed: each made the namespace cold."""
        return self._epoch.changes

    @property
    def failed_reads(self) -> int:
        """Reads that failed because Redis was unreachable and became misses (fail_open)."""
        return self._failed_reads.value

    # -- keys and errors -----------------------------------------------------------------

    def wire_key(self, key: Key, suffix: str = "v") -> bytes:
        """The Redis key holding ``key``'s value (``v``), version (``n``) or lease (``l``)."""
        return f"{self._prefix}{encode_key(key)}}}:{suffix}".encode()

    def _keys(self, key: Key) -> tuple[bytes, bytes]:
        base = f"{self._prefix}{encode_key(key)}}}:"
        return (base + "v").encode(), (base + "n").encode()

    def _error(self, what: str, exc: BaseException) -> StoreError:
        """A StoreError for ``exc`` whose text (and chain) never shows the password."""
        text = f"{what}: {type(exc).__name__}: {exc}"
        if self._leaks(exc):
            text = f"{what}: {type(exc).__name__} (details withheld: they named a secret)"
        return StoreError(text)

    def _leaks(self, exc: BaseException | None) -> bool:
        return leaks(exc, self._secrets)

    def _translate(self, op: str, exc: RedisError) -> StoreError:
        error = self._error(f"Redis {op} failed at {self._url}", exc)
        if not self._leaks(exc):
            error.__cause__ = exc
        return error

    def _call(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis call; a failure becomes StoreError chained to its cause."""
        return run(self._call_flow(op, fn, *args, **kwargs))

    def _call_flow(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> Flow[Any]:
        """One Redis call; a failure becomes StoreError chained to its cause.

        Raised outside the ``except`` so a cause that named a secret is not even
        attached as implicit context.
        """
        if self._ack is not None and isinstance(fn, Script) and "keys" in kwargs:
            # A write the caller will take as acknowledged: WAIT for the replicas first.
            client = cast("RedisCluster", self.client)
            call = functools.partial(
                _slots.run_script,
                client,
                cast("str", fn.script),  # every script here is registered as text
                kwargs["keys"],
                kwargs["args"],
                self._ack,
            )
        else:
            call = functools.partial(fn, *args, **kwargs)
        try:
            result = yield self._wrap(call), ()
        except RedisError as exc:
            failure = exc
        else:
            return result
        raise self._translate(op, failure)

    def _wrap(self, call: Any) -> Any:
        """On a cluster, a call retried while the cluster fails over or reshards."""
        if self.cluster:
            return functools.partial(_cluster.retrying, self._retry_for, call)
        return call

    @property
    def _mget(self) -> Any:
        """MGET; on a cluster one MGET per slot, in one pipeline (keys in many slots)."""
        if self.cluster:
            return functools.partial(_slots.mget, cast("RedisCluster", self.client))
        return self.client.mget

    def _log_failed_read(self, op: str, exc: RedisError) -> None:
        # While Redis is down every read fails: one warning per interval, not per read.
        now = time.monotonic()
        level = logging.DEBUG
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            level = logging.WARNING
        logger.log(
            level,
            "Redis %s failed at %s (%s): a miss (fail_open; %d so far)",
            op,
            self._url,
            type(exc).__name__,
            self._failed_reads.value,
        )

    def _read_flow(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> Flow[Any]:
        """Like :meth:`_call_flow` for reads: with ``fail_open`` a failure returns _FAILED."""
        try:
            result = yield self._wrap(functools.partial(fn, *args, **kwargs)), ()
        except RedisError as exc:
            if self.fail_open:
                self._failed_reads.add()
                self._log_failed_read(op, exc)
                return _FAILED
            failure = exc
        else:
            return result
        raise self._translate(op, failure)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    def stamp(self) -> bytes:
        """The current epoch's stamp, which every stored value starts with.

        Checked with one round trip the first time (see ``_redis_epoch``).
        """
        return run(self._stamp_flow())

    def _stamp_flow(self) -> Flow[bytes]:
        stamp = self._epoch.stamp
        if stamp is not None:
            return stamp
        try:
            if self.cluster:
                check = functools.partial(run, self._epoch.check_flow(self.client))
                stamp = yield self._wrap(check), ()
            else:
                stamp = yield from self._epoch.check_flow(self.client)
        except RedisError as exc:
            failure = exc
        else:
            return stamp
        raise self._translate("epoch check", failure)

    def _stamped_flow(
        self, op: str, script: Any, keys: list[bytes], args: list[Any], *, read: bool = False
    ) -> Flow[Any]:
        """Run a script that stores values, with the epoch's stamp as its last argument.

        If the epoch changed while it ran (redis-py reconnected to a restarted server,
        and the connect hook began a new epoch), the values went in with the old stamp
        and would read as misses: the script runs once more with the new stamp. Only
        for scripts that may run twice (a set, or a version-guarded store). ``read``:
        with ``fail_open`` a failure returns _FAILED.
        """
        call = self._read_flow if read else self._call_flow
        stamp = yield from self._stamp_flow()
        result = yield from call(op, script, keys=keys, args=[*args, stamp])
        now = self._epoch.stamp
        if now is not None and now != stamp and result is not _FAILED:
            result = yield from call(op, script, keys=keys, args=[*args, now])
        return result

    def _decode(self, data: bytes, wire: bytes) -> Any:
        """The value ``data`` holds; MISSING if it is of another epoch or does not decode.

        Called after a read that succeeded, so the connect hook has set the stamp (or
        the first write did); a store given a client whose connections were already
        open checks it here once.
        """
        stamp = self._epoch.stamp or self.stamp()
        if not data.startswith(stamp):
            # Written before Redis restarted (maybe restored from an older snapshot),
            # or by another version of cachewise: never served.
            self._cold_reads.add()
            return MISSING
        try:
            return self.codec.decode(data[_epoch.STAMP_SIZE :], key=wire)
        except CodecError as exc:
            self._rejected.add()
            event(
                logger,
                logging.DEBUG,
                "value_rejected",
                "rejected value at %r: %s",
                wire,
                exc,
                key=wire.decode("utf-8", "replace"),
                error=type(exc).__name__,
            )
            return MISSING

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: Key) -> Any:
        """Return the value for ``key`` or ``MISSING`` (absent, expired, or rejected)."""
        return run(self._get_flow(key))

    def _get_flow(self, key: Key) -> Flow[Any]:
        if self._closed:
            self._check_open()
        wire = f"{self._prefix}{encode_key(key)}}}:v".encode()
        data = yield from self._read_flow("GET", self.client.get, wire)
        if data is None or data is _FAILED:
            return MISSING
        return self._decode(data, wire)

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """One ``MGET`` for every key; absent and rejected keys are left out."""
        return run(self._get_many_flow(keys))

    def _get_many_flow(self, keys: Iterable[Key]) -> Flow[dict[Key, Any]]:
        self._check_open()
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        wires = [self.wire_key(k) for k in wanted]
        datas = yield from self._read_flow("MGET", self._mget, wires)
        if datas is _FAILED:
            return {}
        found: dict[Key, Any] = {}
        for key, wire, data in zip(wanted, wires, datas, strict=True):
            if data is not None:
                value = self._decode(data, wire)
                if value is not MISSING:
                    found[key] = value
        return found

    # -- writes --------------------------------------------------------------------------

    def _ttl_px(self, ttl: float | None) -> int:
        return _px(self._ttl if ttl is None else check_ttl(ttl))

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` and bump ``key``'s version, atomically (one script)."""
        run(self._set_flow(key, value, ttl))

    def _set_flow(self, key: Key, value: Any, ttl: float | None) -> Flow[None]:
        self._check_open()
        vkey, nkey = self._keys(key)
        px = self._default_px if ttl is None else _px(check_ttl(ttl))
        payload = self.codec.encode(value, key=vkey)
        # The Script object loads the script again when Redis lost it (restart, FLUSH).
        yield from self._stamped_flow(
            "SET", self._set, [vkey, nkey], [payload, px, _VERSION_TTL_MS]
        )

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Store every item and bump every version in one atomic script."""
        run(self._set_many_flow(items, ttl))

    def _set_many_flow(self, items: Mapping[Key, Any], ttl: float | None) -> Flow[None]:
        self._check_open()
        px = self._ttl_px(ttl)
        keys: list[bytes] = []
        payloads: list[bytes] = []
        for key, value in items.items():
            vkey, nkey = self._keys(key)
            payloads.append(self.codec.encode(value, key=vkey))
            keys += (vkey, nkey)
        if not keys:
            return
        yield from self._stamped_flow(
            "SET (batch)", self._set_many, keys, [px, _VERSION_TTL_MS, *payloads]
        )

    def delete(self, key: Key) -> bool:
        """Drop ``key`` and bump its version; return whether it was present."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Drop every key and bump each version in one script; return how many existed."""
        return run(self._delete_many_flow(keys))

    def _delete_many_flow(self, keys: Iterable[Key]) -> Flow[int]:
        self._check_open()
        wires: list[bytes] = []
        for key in dict.fromkeys(keys):
            wires += self._keys(key)
        if not wires:
            return 0
        found = yield from self._call_flow("DEL", self._delete, keys=wires, args=[_VERSION_TTL_MS])
        return int(found)

    def clear(self) -> None:
        """Drop every value in this namespace (SCAN + UNLINK); other namespaces untouched.

        Versions are kept so a load that began before ``clear`` still cannot store a
        value older than a write made before it.
        """
        run(self._clear_flow())

    def _clear_flow(self) -> Flow[None]:
        self._check_open()
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self.namespace) + ":{*}:v"
        if self.cluster:
            yield from self._call_flow("SCAN", self._clear_cluster, pattern)
            return
        cursor = 0
        while True:
            cursor, batch = yield from self._call_flow(
                "SCAN", self.client.scan, cursor=cursor, match=pattern, count=1000
            )
            if batch:
                yield from self._call_flow("UNLINK", self.client.unlink, *batch)
            if cursor == 0:
                return

    def _clear_cluster(self, pattern: str) -> None:
        """SCAN every primary of the cluster and UNLINK what matches, node by node."""
        batch: list[bytes] = []
        for wire in self.client.scan_iter(match=pattern, count=1000):  # every primary
            batch.append(wire)
            if len(batch) >= 1000:
                self.client.unlink(*batch)  # redis-py splits it by slot
                batch = []
        if batch:
            self.client.unlink(*batch)

    def ttl_left(self, key: Key) -> float | None:
        """Seconds until ``key`` expires in Redis (``None``: no expiry or absent)."""
        return run(self._ttl_left_flow(key))

    def _ttl_left_flow(self, key: Key) -> Flow[float | None]:
        self._check_open()
        ms = yield from self._call_flow("PTTL", self.client.pttl, self.wire_key(key))
        return None if int(ms) < 0 else int(ms) / 1000.0

    def ping(self) -> None:
        """Raise StoreError unless Redis answers."""
        run(self._ping_flow())

    def _ping_flow(self) -> Flow[None]:
        self._check_open()
        yield from self._call_flow("PING", self.client.ping)

    # -- compare-and-set (CompareAndSet) ------------------------------------------------

    def gets(self, key: Key) -> tuple[Any, Any]:
        """The value (or MISSING) and a token: the key's version and whether it was present.

        A value of another epoch (from before a Redis restart) reads as absent.
        """
        return run(self._gets_flow(key))

    def _gets_flow(self, key: Key) -> Flow[tuple[Any, Any]]:
        self._check_open()
        vkey, nkey = self._keys(key)
        data, version = yield from self._call_flow("MGET", self.client.mget, [vkey, nkey])
        value = MISSING if data is None else self._decode(data, vkey)
        stamp = yield from self._stamp_flow()
        present = data is not None and data.startswith(stamp)
        return value, (version or b"", present)

    def cas(
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """Store ``value`` if ``key``'s version and presence are as :meth:`gets` saw them."""
        return run(self._cas_flow(key, value, token, ttl, keep_ttl))

    def _cas_flow(
        self, key: Key, value: Any, token: Any, ttl: float | None, keep_ttl: bool
    ) -> Flow[bool]:
        self._check_open()
        version, present = token
        vkey, nkey = self._keys(key)
        px = -1 if keep_ttl else self._ttl_px(ttl)
        payload = self.codec.encode(value, key=vkey)
        stamp = yield from self._stamp_flow()
        args = [version, b"1" if present else b"0", payload, px, _VERSION_TTL_MS, stamp]
        return bool((yield from self._call_flow("CAS", self._cas, keys=[vkey, nkey], args=args)))

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no value of this epoch; bump the version."""
        return run(self._add_flow(key, value, ttl))

    def _add_flow(self, key: Key, value: Any, ttl: float | None) -> Flow[bool]:
        self._check_open()
        vkey, nkey = self._keys(key)
        payload = self.codec.encode(value, key=vkey)
        stamp = yield from self._stamp_flow()
        args = [self._ttl_px(ttl), _VERSION_TTL_MS, payload, stamp]
        return bool((yield from self._call_flow("ADD", self._add, keys=[vkey, nkey], args=args)))

    # -- the load guard (LoadGuarded) ----------------------------------------------------

    def begin_load(self, key: Key) -> LoadTicket:
        """Take the key's lease and note its version, or wait for the lease holder's value.

        Returns a ticket carrying the value when another process filled the key while
        this one waited. After ``lease_wait`` seconds without the value or the lease,
        loads anyway (the ticket still carries the version, so the race stays closed).
        """
        return run(self._begin_load_flow(key))

    def _begin_load_flow(self, key: Key) -> Flow[LoadTicket]:
        self._check_open()
        vkey, nkey = self._keys(key)
        lkey, wkey = self.wire_key(key, "l"), self.wire_key(key, "w")
        token = os.urandom(16).hex().encode()
        deadline = time.monotonic() + self._lease_wait
        pause = 0.002
        check_value = b"1"
        while True:
            reply = yield from self._read_flow(
                "lease",
                self._begin,
                keys=[vkey, nkey, lkey, wkey],
                args=[token, self._lease_ms, check_value],
            )
            if reply is _FAILED:
                return LoadTicket(token=None)
            kind, data = reply
            if kind == 2:
                value = self._decode(data, vkey)
                if value is not MISSING:
                    return LoadTicket(token=None, value=value)
                check_value = b"0"  # a rejected value: load and overwrite it
                continue
            if kind == 1:
                return LoadTicket(token=_Guard(version=data, lease=token))
            if kind == 3:  # a write is between its drop and its store: never cache
                return LoadTicket(token=_Guard(version=data, lease=b"", storable=False))
            if time.monotonic() >= deadline:
                return LoadTicket(token=_Guard(version=data, lease=b""))
            yield self._sleep, (pause,)
            pause = min(pause * 2, 0.05)

    def end_load(self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key``'s version is unchanged; release the lease."""
        return run(self._end_load_flow(key, ticket, value, ttl))

    def _end_load_flow(
        self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None
    ) -> Flow[bool]:
        self._check_open()
        guard = ticket.token
        if guard is None:  # Redis was down at begin_load (fail_open), or the key was filled
            return False
        if not isinstance(guard, _Guard):
            raise ConfigurationError(f"not a RedisStore load ticket: {ticket!r}")
        vkey, nkey = self._keys(key)
        lkey = self.wire_key(key, "l")
        store = value is not MISSING and guard.storable
        payload = self.codec.encode(value, key=vkey) if store else b""
        px = self._ttl_px(ttl)
        stored = yield from self._stamped_flow(
            "conditional SET",
            self._end,
            [vkey, nkey, lkey],
            [guard.version, guard.lease, b"1" if store else b"0", payload, px],
            read=True,
        )
        return stored is not _FAILED and bool(stored)

    def begin_load_many(self, keys: Iterable[Key]) -> dict[Key, LoadTicket]:
        """Batch form of :meth:`begin_load` (one ``MGET``): versions, no leases.

        A ticket carries the value for keys already present. Batch loads take no
        leases (one slow key would hold back the batch); they are guarded by the
        versions alone, which is what keeps an old value from being cached.
        """
        return run(self._begin_load_many_flow(keys))

    def _begin_load_many_flow(self, keys: Iterable[Key]) -> Flow[dict[Key, LoadTicket]]:
        self._check_open()
        wanted = list(dict.fromkeys(keys))
        wires: list[bytes] = []
        for key in wanted:
            wires += (*self._keys(key), self.wire_key(key, "w"))
        if not wanted:
            return {}
        replies = yield from self._read_flow("MGET", self._mget, wires)
        if replies is _FAILED:
            return {key: LoadTicket(token=None) for key in wanted}
        tickets: dict[Key, LoadTicket] = {}
        for i, key in enumerate(wanted):
            data, version, hold = replies[3 * i : 3 * i + 3]
            value = MISSING if data is None else self._decode(data, wires[3 * i])
            if value is not MISSING:
                tickets[key] = LoadTicket(token=None, value=value)
            else:
                storable = int(hold or 0) <= 0  # a write in flight: load, never store
                guard = _Guard(version=version or b"", lease=b"", storable=storable)
                tickets[key] = LoadTicket(token=guard)
        return tickets

    def end_load_many(
        self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
    ) -> list[Key]:
        """Batch form of :meth:`end_load` (one script); return the keys it stored.

        A value is stored only if its key's version is unchanged since
        :meth:`begin_load_many`; ``MISSING`` values and keys without a ticket token
        (already present, or Redis was down) are skipped.
        """
        return run(self._end_load_many_flow(tickets, values, ttl))

    def _end_load_many_flow(
        self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
    ) -> Flow[list[Key]]:
        self._check_open()
        px = self._ttl_px(ttl)
        keys: list[bytes] = []
        args: list[Any] = [px]
        order: list[Key] = []
        for key, value in values.items():
            guard = tickets[key].token
            if value is MISSING or guard is None:
                continue
            if not isinstance(guard, _Guard):
                raise ConfigurationError(f"not a RedisStore load ticket for {key!r}")
            if not guard.storable:
                continue
            vkey, nkey = self._keys(key)
            keys += (vkey, nkey)
            args += (guard.version, self.codec.encode(value, key=vkey))
            order.append(key)
        if not order:
            return []
        flags = yield from self._stamped_flow(
            "conditional SET (batch)", self._end_many, keys, args, read=True
        )
        if flags is _FAILED:
            return []
        return [key for key, flag in zip(order, flags, strict=True) if flag]

    # -- the write guard (WriteGuarded) --------------------------------------------------

    def prepare_write(self, values: Mapping[Key, Any], ttl: float | None) -> PreparedWrite:
        """Check and encode a write (``MISSING`` values: drop only); no I/O.

        Everything that can refuse a write (a key, the TTL, a value the codec cannot
        encode) raises here, before the cache touches the source or Redis.
        """
        self._check_open()
        px = self._ttl_px(ttl)
        wires: list[bytes] = []
        payloads: list[bytes | None] = []
        for key, value in values.items():
            vkey, nkey = self._keys(key)
            wires += (vkey, nkey, self.wire_key(key, "w"))
            payloads.append(None if value is MISSING else self.codec.encode(value, key=vkey))
        return PreparedWrite(dict(values), _Encoded(wires, payloads, px))

    def begin_write(self, prepared: PreparedWrite) -> PreparedWrite:
        """Before the source write: drop the cached copies and hold the keys (one script).

        A load in flight can no longer store (the versions moved), and no load that
        begins while a key is held may store. Returns what :meth:`end_write` takes.
        """
        return run(self._begin_write_flow(prepared))

    def _begin_write_flow(self, prepared: PreparedWrite) -> Flow[PreparedWrite]:
        self._check_open()
        encoded = _encoded(prepared)
        if not encoded.wires:
            return prepared
        versions = yield from self._call_flow(
            "write hold", self._hold, keys=encoded.wires, args=[self._hold_ms, _VERSION_TTL_MS]
        )
        held = [str(int(v)).encode() for v in versions]
        return PreparedWrite(prepared.values, replace(encoded, held=held))

    def end_write(self, held: PreparedWrite, saved: bool) -> list[Key]:
        """After the source write: store the values (``saved``) or keep them dropped.

        A key's value is stored only if no other write of it began since ours and none
        is still held; otherwise its cached copy stays dropped (a miss, never the
        loser of two racing writers). Releases the holds. Returns the keys stored.
        """
        return run(self._end_write_flow(held, saved))

    def _end_write_flow(self, held: PreparedWrite, saved: bool) -> Flow[list[Key]]:
        self._check_open()
        encoded = _encoded(held)
        if encoded.held is None:
            raise ConfigurationError("end_write takes what begin_write returned")
        if not encoded.wires:
            return []
        args: list[Any] = [encoded.px, _VERSION_TTL_MS]
        for version, payload in zip(encoded.held, encoded.payloads, strict=True):
            store = saved and payload is not None
            args += (version, b"1" if store else b"0", payload if store else b"")
        # Not re-run if Redis restarted meanwhile: a value stored with the old stamp
        # reads as a miss, which is what a second run (versions moved) would leave too.
        args.append((yield from self._stamp_flow()))
        flags = yield from self._call_flow(
            "write release", self._release, keys=encoded.wires, args=args
        )
        return [key for key, flag in zip(held.values, flags, strict=True) if flag]

    def store_prepared(self, prepared: PreparedWrite) -> None:
        """Store a prepared write's values as :meth:`set_many` would (no hold)."""
        run(self._store_prepared_flow(prepared))

    def _store_prepared_flow(self, prepared: PreparedWrite) -> Flow[None]:
        self._check_open()
        encoded = _encoded(prepared)
        keys: list[bytes] = []
        payloads: list[bytes] = []
        for i, payload in enumerate(encoded.payloads):
            if payload is not None:
                keys += encoded.wires[3 * i : 3 * i + 2]
                payloads.append(payload)
        if keys:
            args = [encoded.px, _VERSION_TTL_MS, *payloads]
            yield from self._stamped_flow("SET (batch)", self._set_many, keys, args)

    def claim(self, what: str, *, solo: bool, ttl: float) -> RedisClaim:
        """A solo or shared claim on ``what`` in this namespace (see ``_redis_claim``)."""
        self._check_open()
        return RedisClaim(self.client, self.namespace, what, solo=solo, ttl=ttl)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool this store opened (not a client passed in)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            self.client.close()  # a RedisCluster closes every node's pool here
            if not self.cluster:
                self.client.connection_pool.disconnect()


def _encoded(prepared: PreparedWrite) -> _Encoded:
    encoded = prepared.token
    if not isinstance(encoded, _Encoded):
        raise ConfigurationError(f"not a RedisStore prepared write: {prepared!r}")
    return encoded
