"""RedisStore: cached values in Redis, shared by every process, guarded against races.

Layout. A cache key ``k`` in namespace ``ns`` lives under Redis keys that share one
Redis Cluster hash tag, so everything that must change together sits in one slot:

    ns:{<encode_key(k)>}:v    the encoded value (Redis TTL = the entry's TTL)
    ns:{<encode_key(k)>}:n    the key's version: bumped by every set and delete
    ns:{<encode_key(k)>}:l    the load lease: a random token, SET NX PX

Every ``set``/``delete`` is one Lua script that writes the value and bumps the version
atomically. ``begin_load`` reads the version and tries the lease in one script;
``end_load`` stores only if the version is unchanged (one script), so a process that
loaded an old value from the source while another process wrote never caches it (the
cache-aside race), and only the lease holder loads while the others wait briefly for
its value (the stampede). A lease holder that dies is replaced when its lease expires.

Values go through a codec (msgpack by default, never pickle unless signed); a value
that fails to decode or verify is a miss, counted in ``rejected``, never executed.
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
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.exceptions import RedisError

from cachewise._flow import Flow, run
from cachewise._redact import leaks, parses, redact, secrets
from cachewise._types import MISSING, Key, check_seconds, check_ttl
from cachewise.codecs import Codec, default_codec, encode_key
from cachewise.errors import ClosedError, CodecError, ConfigurationError, StoreError
from cachewise.stats import Counter
from cachewise.stores.base import LoadTicket

logger = logging.getLogger("cachewise")

_SCHEMES: Final = ("redis://", "rediss://", "unix://")
_NAMESPACE: Final = re.compile(r"[!-z|~]+")  # printable ASCII, no space, no { }
_GLOB_SPECIAL: Final = re.compile(r"([*?\[\]\\])")
_WARN_EVERY: Final = 10.0  # seconds between fail-open warnings
_FAILED: Final = object()
"""What a fail-open read returns when Redis could not be reached."""
_VERSION_TTL_MS: Final = 24 * 3600 * 1000
"""A version key expires this long after it was created, so idle keys do not pile up.

Safe because a load only stores if the version it saw is the version now: a version
that expired *during* a load reads as a change (refused), and going from "no version"
back to "no version" across a write would need a load longer than this."""

# KEYS: value, version. ARGV: payload, px (0 = no expiry), version ttl ms.
_SET: Final = """
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: value1, version1, value2, version2, ... ARGV: px, version ttl ms, payload1, ...
_SET_MANY: Final = """
local px = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local payload = ARGV[2 + (i + 1) / 2]
  if px > 0 then
    redis.call('SET', KEYS[i], payload, 'PX', px)
  else
    redis.call('SET', KEYS[i], payload)
  end
  if redis.call('INCR', KEYS[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  end
end
return 1
"""

# KEYS: value1, version1, ... ARGV: version ttl ms. Returns how many values existed.
_DELETE: Final = """
local n = 0
for i = 1, #KEYS, 2 do
  n = n + redis.call('DEL', KEYS[i])
  if redis.call('INCR', KEYS[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
  end
end
return n
"""

# KEYS: value, version, lease. ARGV: token, lease ms, check value ('1'/'0').
# Returns {2, value} (filled), {1, version} (lease taken), {0, version} (someone loads).
_BEGIN: Final = """
if ARGV[3] == '1' then
  local val = redis.call('GET', KEYS[1])
  if val then return {2, val} end
end
local ver = redis.call('GET', KEYS[2]) or ''
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, ver}
end
return {0, ver}
"""

# KEYS: value, version, lease. ARGV: version seen, token ('' = none), store ('1'/'0'),
# payload, px. Stores only if the version is unchanged; releases our lease either way.
_END: Final = """
local stored = 0
if ARGV[3] == '1' and (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[1], ARGV[4])
  end
  stored = 1
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
end
return stored
"""


# KEYS: value1, version1, ... ARGV: px, version seen 1, payload 1, ... Returns a flag per key.
_END_MANY: Final = """
local px = tonumber(ARGV[1])
local stored = {}
for i = 1, #KEYS, 2 do
  local j = i + 1
  if (redis.call('GET', KEYS[i + 1]) or '') == ARGV[j] then
    if px > 0 then
      redis.call('SET', KEYS[i], ARGV[j + 1], 'PX', px)
    else
      redis.call('SET', KEYS[i], ARGV[j + 1])
    end
    stored[#stored + 1] = 1
  else
    stored[#stored + 1] = 0
  end
end
return stored
"""


# KEYS: value, version. ARGV: version seen, present seen ('1'/'0'), payload,
# px (0 = no expiry, -1 = keep the current one), version ttl ms. Compare-and-set.
_CAS: Final = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) ~= tonumber(ARGV[2]) then return 0 end
local px = tonumber(ARGV[4])
if px < 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
elseif px > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[3])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 1
"""


# KEYS: value, version. ARGV: px (0 = no expiry), version ttl ms, payload. Set if absent.
_ADD: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if tonumber(ARGV[1]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""


@dataclass(frozen=True)
class _Guard:
    """RedisStore's load ticket token: the version seen and the lease token (if held)."""

    version: bytes
    lease: bytes


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


def _px(ttl: float | None) -> int:
    """Milliseconds for Redis PX (0 = no expiry); never rounds a TTL down to zero."""
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


class RedisStore:
    """A store in Redis: shared across processes and hosts, TTLs kept by Redis itself.

    ``fail_open=True`` turns read failures (Redis down) into misses, counted in
    ``failed_reads``, so read-through falls back to the source; writes still raise
    :class:`StoreError`. ``lease_ttl`` bounds how long a crashed loader can hold back
    the others; ``lease_wait`` (default ``lease_ttl``) how long a waiter waits before
    it loads by itself.
    """

    _sleep = staticmethod(time.sleep)
    """How a lease waiter pauses (the async store awaits ``asyncio.sleep`` instead)."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        namespace: str = "cw",
        ttl: float | None = None,
        codec: Codec | None = None,
        *,
        fail_open: bool = False,
        client: redis.Redis | None = None,
        lease_ttl: float = 5.0,
        lease_wait: float | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"namespace must be printable ASCII without spaces or braces, got {namespace!r}"
            )
        self._ttl = check_ttl(ttl)
        check_seconds(lease_ttl, "lease_ttl")
        check_seconds(timeout, "timeout")
        check_seconds(lease_wait, "lease_wait", optional=True)
        if codec is not None and not (hasattr(codec, "encode") and hasattr(codec, "decode")):
            raise ConfigurationError(f"codec must have encode() and decode(), got {codec!r}")
        check_redis_url(url)
        self._url = redact(url)
        self._secrets = secrets(url)
        self.namespace = namespace
        self.codec: Codec = codec if codec is not None else default_codec()
        self.fail_open = bool(fail_open)
        self._lease_ms = _px(lease_ttl)
        self._lease_wait = float(lease_wait if lease_wait is not None else lease_ttl)
        self._prefix = f"{namespace}:{{"
        self._owns_client = client is None
        if client is None:
            client = self._connect(url, timeout)
        self.client: redis.Redis = client
        self._set = client.register_script(_SET)
        self._default_px = _px(self._ttl)
        self._set_many = client.register_script(_SET_MANY)
        self._delete = client.register_script(_DELETE)
        self._begin = client.register_script(_BEGIN)
        self._end = client.register_script(_END)
        self._end_many = client.register_script(_END_MANY)
        self._cas = client.register_script(_CAS)
        self._add = client.register_script(_ADD)
        self._closed = False
        self._rejected = Counter()
        self._failed_reads = Counter()
        self._lock = threading.Lock()
        self._warned_at = -_WARN_EVERY

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
        try:
            result = yield functools.partial(fn, *args, **kwargs), ()
        except RedisError as exc:
            failure = exc
        else:
            return result
        raise self._translate(op, failure)

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
            result = yield functools.partial(fn, *args, **kwargs), ()
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

    def _decode(self, data: bytes, wire: bytes) -> Any:
        try:
            return self.codec.decode(data, key=wire)
        except CodecError as exc:
            self._rejected.add()
            logger.debug("rejected value at %r: %s", wire, exc)
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
        datas = yield from self._read_flow("MGET", self.client.mget, wires)
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
        yield from self._call_flow(
            "SET", self._set, keys=[vkey, nkey], args=[payload, px, _VERSION_TTL_MS]
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
        yield from self._call_flow(
            "SET (batch)", self._set_many, keys=keys, args=[px, _VERSION_TTL_MS, *payloads]
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
        cursor = 0
        while True:
            cursor, batch = yield from self._call_flow(
                "SCAN", self.client.scan, cursor=cursor, match=pattern, count=1000
            )
            if batch:
                yield from self._call_flow("UNLINK", self.client.unlink, *batch)
            if cursor == 0:
                return

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
        """The value (or MISSING) and a token: the key's version and whether it was present."""
        self._check_open()
        vkey, nkey = self._keys(key)
        data, version = self._call("MGET", self.client.mget, [vkey, nkey])
        value = MISSING if data is None else self._decode(data, vkey)
        return value, (version or b"", data is not None)

    def cas(
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """Store ``value`` if ``key``'s version and presence are as :meth:`gets` saw them."""
        self._check_open()
        version, present = token
        vkey, nkey = self._keys(key)
        px = -1 if keep_ttl else self._ttl_px(ttl)
        payload = self.codec.encode(value, key=vkey)
        args = [version, b"1" if present else b"0", payload, px, _VERSION_TTL_MS]
        return bool(self._call("CAS", self._cas, keys=[vkey, nkey], args=args))

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no value (one script); bump the version."""
        self._check_open()
        vkey, nkey = self._keys(key)
        payload = self.codec.encode(value, key=vkey)
        args = [self._ttl_px(ttl), _VERSION_TTL_MS, payload]
        return bool(self._call("ADD", self._add, keys=[vkey, nkey], args=args))

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
        lkey = self.wire_key(key, "l")
        token = os.urandom(16).hex().encode()
        deadline = time.monotonic() + self._lease_wait
        pause = 0.002
        check_value = b"1"
        while True:
            reply = yield from self._read_flow(
                "lease",
                self._begin,
                keys=[vkey, nkey, lkey],
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
        store = value is not MISSING
        payload = self.codec.encode(value, key=vkey) if store else b""
        px = self._ttl_px(ttl)
        stored = yield from self._read_flow(
            "conditional SET",
            self._end,
            keys=[vkey, nkey, lkey],
            args=[guard.version, guard.lease, b"1" if store else b"0", payload, px],
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
            wires += self._keys(key)
        if not wanted:
            return {}
        replies = yield from self._read_flow("MGET", self.client.mget, wires)
        if replies is _FAILED:
            return {key: LoadTicket(token=None) for key in wanted}
        tickets: dict[Key, LoadTicket] = {}
        for i, key in enumerate(wanted):
            data, version = replies[2 * i], replies[2 * i + 1]
            value = MISSING if data is None else self._decode(data, wires[2 * i])
            if value is not MISSING:
                tickets[key] = LoadTicket(token=None, value=value)
            else:
                tickets[key] = LoadTicket(token=_Guard(version=version or b"", lease=b""))
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
            vkey, nkey = self._keys(key)
            keys += (vkey, nkey)
            args += (guard.version, self.codec.encode(value, key=vkey))
            order.append(key)
        if not order:
            return []
        flags = yield from self._read_flow(
            "conditional SET (batch)", self._end_many, keys=keys, args=args
        )
        if flags is _FAILED:
            return []
        return [key for key, flag in zip(order, flags, strict=True) if flag]

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool this store opened (not a client passed in)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            self.client.close()
            self.client.connection_pool.disconnect()
