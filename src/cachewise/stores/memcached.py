"""MemcachedStore: cached values in memcached (pymemcache), shared by every process.

Keys. A cache key ``k`` in namespace ``ns`` is the memcached key ``ns:<encode_key(k)>``
(the project's typed, injective key encoding, with every non-ASCII character escaped
too, so the key is printable ASCII without whitespace or control characters). A key
longer than memcached's 250 bytes becomes ``ns:#<SHA-256 of the encoded key, hex>``:
two different keys share an entry only if SHA-256 collides, a chance below 2^-128
even for 2^64 keys. ``#`` never starts an encoded key, so hashed and plain keys never
meet.

Values. Each item is an envelope: ``V`` + the absolute expiry (unix seconds, a
big-endian double, 0 for none) + the codec's bytes, or ``L`` + a token for a load
lease. The expiry in the envelope is what reads check, so TTLs below memcached's
one-second resolution are exact, ``ttl_left`` works (refresh-ahead), and ``cas`` can
keep an entry's expiry; memcached's own expiry (rounded up, and absolute past its
30-day limit for relative times) only frees the memory.

Races. Memcached has no versions and no scripts; its compare-and-set (``gets``/``cas``)
closes the cache-aside race instead. ``begin_load`` puts a lease item where the value
would be (``add``: only if absent) and remembers its CAS id; ``end_load`` stores the
loaded value with ``cas`` against that id. A write or a delete in between replaces or
removes the lease, so the slow loader's ``cas`` fails and its old value is never
cached. Other processes that find a lease wait briefly for the value (the stampede).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheError, MemcacheServerError

from cachewise._types import MISSING, Clock, Key, check_positive, check_ttl
from cachewise.codecs import Codec, default_codec, encode_key
from cachewise.errors import ClosedError, CodecError, ConfigurationError, StoreError
from cachewise.stats import Counter
from cachewise.stores.base import LoadTicket

MAX_KEY: Final = 250
"""Memcached's key limit in bytes."""
RELATIVE_LIMIT: Final = 30 * 24 * 3600
"""Memcached reads an expiry above this many seconds as an absolute unix time."""
DEFAULT_ITEM_LIMIT: Final = 1024 * 1024
"""Memcached's default item size limit (``-I``); the server's own is read at first use."""

_VALUE: Final = b"V"
_LEASE: Final = b"L"
_EXPIRY: Final = struct.Struct(">d")
_HEAD: Final = 1 + _EXPIRY.size
_ITEM_OVERHEAD: Final = 64
"""Bytes an item needs beyond key and value in memcached's slabs (header, CAS, suffix)."""
_CLEAR_PASSES: Final = 5  # crawls clear() makes at most, until one finds none of ours
_NAMESPACE: Final = re.compile(r"[!-9;-~]{1,150}")  # printable ASCII, no space, no ':'
_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]")


def _escape_non_ascii(match: re.Match[str]) -> str:
    # encode_key's own escapes for a character above 0x7F (decode_key reads them back).
    code = ord(match.group())
    return (
        f"%{code:02X}" if code < 0x100 else f"%u{code:04X}" if code < 0x10000 else f"%U{code:06X}"
    )


def memcached_key(namespace: str, key: Key) -> bytes:
    """The memcached key for ``key``: ``ns:<encoded>`` or ``ns:#<sha256>`` past 250 bytes."""
    encoded = _NON_ASCII.sub(_escape_non_ascii, encode_key(key))
    wire = f"{namespace}:{encoded}".encode("ascii")
    if len(wire) <= MAX_KEY:
        return wire
    return f"{namespace}:#{hashlib.sha256(encoded.encode('ascii')).hexdigest()}".encode("ascii")


def exptime(ttl: float | None, now: float) -> int:
    """Memcached's ``exptime`` for a TTL: never early, absolute past the 30-day limit.

    Memcached counts in whole seconds on its own tick, so an item given ``n`` seconds
    may go up to a second early: round up and add one (our envelope enforces the exact
    expiry). Relative times above 30 days would be read as a date in 1970.
    """
    if ttl is None:
        return 0
    seconds = math.ceil(ttl) + 1
    if seconds > RELATIVE_LIMIT:
        return math.ceil(now + ttl) + 1
    return seconds


@dataclass(frozen=True)
class _Lease:
    """MemcachedStore's load ticket token: the CAS id of the lease item (None: absent)."""

    cas: bytes | None


def _parse_url(url: str) -> tuple[str, int]:
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a memcached:// URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme != "memcached":
        raise ConfigurationError(f"url must start with memcached://, got {parts.scheme!r}")
    if "," in parts.netloc or ";" in parts.netloc:
        raise ConfigurationError("one memcached server per MemcachedStore (no server lists)")
    try:
        port = parts.port or 11211
    except ValueError:
        raise ConfigurationError(f"bad port in {url!r}") from None
    return parts.hostname or "127.0.0.1", port


class MemcachedStore:
    """A store in memcached: shared across processes and hosts, exact TTLs, CAS-guarded loads.

    ``url`` is ``memcached://HOST[:PORT]``; ``pool_size`` bounds the client's
    connection pool (pymemcache's ``PooledClient``). ``lease_ttl`` bounds how long a
    crashed loader holds back the others, ``lease_wait`` (default ``lease_ttl``) how
    long a waiter waits before it loads by itself. ``clock`` is wall-clock time
    (expiries are absolute, so processes sharing the cache must agree on the time).
    """

    def __init__(
        self,
        url: str = "memcached://127.0.0.1:11211",
        namespace: str = "cw",
        ttl: float | None = None,
        codec: Codec | None = None,
        *,
        pool_size: int = 16,
        timeout: float = 5.0,
        lease_ttl: float = 5.0,
        lease_wait: float | None = None,
        clock: Clock = time.time,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                "namespace must be 1-150 printable ASCII characters without spaces or ':', "
                f"got {namespace!r}"
            )
        self._ttl = check_ttl(ttl)
        check_positive(pool_size, "pool_size", integer=True)
        check_positive(timeout, "timeout")
        check_positive(lease_ttl, "lease_ttl")
        if lease_wait is not None:
            check_positive(lease_wait, "lease_wait")
        if codec is not None and not (hasattr(codec, "encode") and hasattr(codec, "decode")):
            raise ConfigurationError(f"codec must have encode() and decode(), got {codec!r}")
        host, port = _parse_url(url)
        self.url = f"memcached://{host}:{port}"
        self._address = (host, port)
        self._timeout = float(timeout)
        self.namespace = namespace
        self.codec: Codec = codec if codec is not None else default_codec()
        self._clock = clock
        self._lease_ttl = float(lease_ttl)
        self._lease_wait = float(lease_wait if lease_wait is not None else lease_ttl)
        self.client = PooledClient(
            (host, port),
            connect_timeout=timeout,
            timeout=timeout,
            no_delay=True,
            max_pool_size=pool_size,
            default_noreply=False,
        )
        self._item_limit: int | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._rejected = Counter()

    def __repr__(self) -> str:
        return f"MemcachedStore({self.url!r}, namespace={self.namespace!r}, ttl={self._ttl})"

    @property
    def ttl(self) -> float | None:
        """The default TTL in seconds (``None``: no expiry)."""
        return self._ttl

    @property
    def rejected(self) -> int:
        """Values read that failed to decode or verify (each was treated as a miss)."""
        return self._rejected.value

    def wire_key(self, key: Key) -> bytes:
        """The memcached key holding ``key``."""
        return memcached_key(self.namespace, key)

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One memcached call; a failure becomes StoreError chained to its cause."""
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        try:
            return fn(*args, **kwargs)
        except (MemcacheError, OSError) as exc:
            raise StoreError(f"memcached {op} failed at {self.url}: {exc}") from exc

    def _envelope(self, wire: bytes, value: Any, expires_at: float) -> bytes:
        payload = self.codec.encode(value, key=wire)
        limit = self.item_limit() - len(wire) - _HEAD - _ITEM_OVERHEAD
        if len(payload) > limit:
            raise StoreError(
                f"value for {wire[:60]!r} is {len(payload)} bytes encoded; memcached at "
                f"{self.url} holds at most {limit} (its item size limit, -I)"
            )
        return _VALUE + _EXPIRY.pack(expires_at) + payload

    def _expires_at(self, ttl: float | None) -> float:
        ttl = self._ttl if ttl is None else check_ttl(ttl)
        return 0.0 if ttl is None else self._clock() + ttl

    def _exptime(self, expires_at: float) -> int:
        if expires_at == 0.0:
            return 0
        now = self._clock()
        return exptime(max(expires_at - now, 0.001), now)

    def _open(self, wire: bytes, data: bytes | None) -> tuple[Any, float]:
        """The value in an item and its expiry, or (MISSING, 0) for leases, expired, bad."""
        if data is None or data[:1] != _VALUE or len(data) < _HEAD:
            return MISSING, 0.0
        (expires_at,) = _EXPIRY.unpack_from(data, 1)
        if expires_at and expires_at <= self._clock():
            return MISSING, 0.0
        try:
            return self.codec.decode(data[_HEAD:], key=wire), expires_at
        except CodecError:
            self._rejected.add()
            return MISSING, 0.0

    def item_limit(self) -> int:
        """The server's item size limit in bytes (``stats settings`` item_size_max)."""
        if self._item_limit is None:
            found = DEFAULT_ITEM_LIMIT
            stats = self._call("stats settings", self.client.stats, "settings")
            raw = stats.get(b"item_size_max", stats.get("item_size_max"))
            if raw is not None:
                found = int(raw)
            self._item_limit = found
        return self._item_limit

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: Key) -> Any:
        """Return the value for ``key`` or ``MISSING`` (absent, expired, a lease, rejected)."""
        wire = self.wire_key(key)
        return self._open(wire, self._call("get", self.client.get, wire))[0]

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """One ``get`` of every key; absent, expired and rejected keys are left out."""
        wanted = {self.wire_key(k): k for k in dict.fromkeys(keys)}
        if not wanted:
            return {}
        items = self._call("get (batch)", self.client.get_many, list(wanted))
        found: dict[Key, Any] = {}
        for wire, key in wanted.items():
            value = self._open(wire, items.get(wire))[0]
            if value is not MISSING:
                found[key] = value
        return found

    def ttl_left(self, key: Key) -> float | None:
        """Seconds until ``key`` expires (``None``: no expiry or absent)."""
        wire = self.wire_key(key)
        value, expires_at = self._open(wire, self._call("get", self.client.get, wire))
        if value is MISSING or not expires_at:
            return None
        return max(0.0, expires_at - self._clock())

    # -- writes --------------------------------------------------------------------------

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (replacing any lease, which fails that loader's ``cas``)."""
        self.set_many({key: value}, ttl)

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Store every item in one pipelined ``set``; StoreError names keys that failed."""
        if not items:
            return
        expires_at = self._expires_at(ttl)
        envelopes = {
            (wire := self.wire_key(k)): self._envelope(wire, v, expires_at)
            for k, v in items.items()
        }
        try:
            failed = self._call(
                "set", self.client.set_many, envelopes, expire=self._exptime(expires_at)
            )
        except StoreError as exc:
            if isinstance(exc.__cause__, MemcacheServerError):
                # A refused value must not leave the old one to be served as current.
                self._call("delete", self.client.delete_many, list(envelopes))
            raise
        if failed:
            raise StoreError(f"memcached refused {len(failed)} of {len(envelopes)} items")

    def delete(self, key: Key) -> bool:
        """Drop ``key`` (and any lease on it); return whether a live value was there."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Drop every key; return how many held a live value."""
        wires = [self.wire_key(k) for k in dict.fromkeys(keys)]
        if not wires:
            return 0
        items = self._call("get (batch)", self.client.get_many, wires)
        live = sum(self._open(w, items.get(w))[0] is not MISSING for w in wires)
        for wire in wires:
            self._call("delete", self.client.delete, wire)
        return live

    def clear(self) -> None:
        """Drop every item in this namespace, other namespaces untouched.

        Memcached cannot list keys by prefix; ``lru_crawler metadump all`` lists every
        item, and those under ``namespace:`` are deleted. Never ``flush_all``: other
        applications may share the server.
        """
        prefix = f"{self.namespace}:".encode("ascii")
        # One crawl can miss an item: the crawler walks memcached's LRU segments while
        # items move between them (seen under load: a just-cached page survived clear()).
        # Crawl again until a pass finds nothing of ours (an item found and deleted twice
        # costs a delete).
        for _ in range(_CLEAR_PASSES):
            ours = [wire for wire in self._dump_keys() if wire.startswith(prefix)]
            if not ours:
                return
            for wire in ours:
                self._call("delete", self.client.delete, wire)

    def _dump_keys(self) -> list[bytes]:
        for _ in range(50):
            reply = self._call("lru_crawler metadump", self._metadump)
            if not reply.startswith(b"BUSY"):
                break
            time.sleep(0.05)  # another crawl runs: memcached does one at a time
        else:
            raise StoreError(f"memcached at {self.url} stayed busy crawling; clear() gave up")
        if reply.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
            raise StoreError(f"memcached at {self.url} cannot list keys: {reply[:80]!r}")
        keys = []
        for line in reply.split(b"\n"):
            if line.startswith(b"key="):
                keys.append(unquote(line[4:].split(b" ", 1)[0].decode("ascii")).encode("ascii"))
        return keys

    def _metadump(self) -> bytes:
        """``lru_crawler metadump all`` on a connection of its own, read to its end.

        Not through the pooled client: its ``raw_command`` keeps only the last chunk of
        a long reply.
        """
        with socket.create_connection(self._address, timeout=self._timeout) as conn:
            conn.sendall(b"lru_crawler metadump all\r\n")
            chunks: list[bytes] = []
            tail = b""
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                tail = (tail + chunk)[-64:]
                if tail.endswith(b"END\r\n") or (
                    len(chunks) == 1 and chunk.endswith(b"\r\n") and b"key=" not in chunk
                ):
                    break  # the end of the dump, or a one-line BUSY / ERROR
        return b"".join(chunks)

    # -- compare-and-set (CompareAndSet) ------------------------------------------------

    def gets(self, key: Key) -> tuple[Any, Any]:
        """The value (or MISSING) and a token for :meth:`cas`."""
        wire = self.wire_key(key)
        data, cas = self._call("gets", self.client.gets, wire)
        value, expires_at = self._open(wire, data)
        return value, (cas, expires_at) if value is not MISSING else (cas, 0.0)

    def cas(
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """Store ``value`` only if ``key`` is as :meth:`gets` saw it; return whether it did."""
        cas_id, seen_expiry = token
        wire = self.wire_key(key)
        expires_at = seen_expiry if keep_ttl else self._expires_at(ttl)
        envelope = self._envelope(wire, value, expires_at)
        expire = self._exptime(expires_at)
        if cas_id is None:
            return bool(self._call("add", self.client.add, wire, envelope, expire=expire))
        return bool(self._call("cas", self.client.cas, wire, envelope, cas_id, expire=expire))

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no live value; return whether it did."""
        stored, token = self.gets(key)
        if stored is not MISSING:
            return False
        return self.cas(key, value, token, ttl)

    # -- the load guard (LoadGuarded) ----------------------------------------------------

    def begin_load(self, key: Key) -> LoadTicket:
        """Put a lease where the value goes, or wait for the lease holder's value.

        After ``lease_wait`` seconds without the value, loads anyway, guarded by the
        other loader's lease (whichever stores first wins; a write beats both).
        """
        wire = self.wire_key(key)
        mine = _LEASE + os.urandom(12)
        lease_exp = exptime(self._lease_ttl, self._clock())
        deadline = time.monotonic() + self._lease_wait
        pause = 0.002
        while True:
            self._call("add", self.client.add, wire, mine, expire=lease_exp)
            data, cas = self._call("gets", self.client.gets, wire)
            if data is None:  # deleted or evicted since: load and store only if still absent
                return LoadTicket(token=_Lease(None))
            value = self._open(wire, data)[0]
            if value is not MISSING:
                return LoadTicket(token=None, value=value)
            if data == mine or data[:1] != _LEASE or time.monotonic() >= deadline:
                return LoadTicket(token=_Lease(cas))  # ours, an expired/bad value, or late
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def end_load(self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if the lease is untouched; release it if nothing is stored."""
        guard = ticket.token
        if guard is None:
            return False
        if not isinstance(guard, _Lease):
            raise ConfigurationError(f"not a MemcachedStore load ticket: {ticket!r}")
        wire = self.wire_key(key)
        if value is MISSING:
            if guard.cas is not None:  # meta delete, only if still our lease (by CAS id)
                command = b"md " + wire + b" C" + guard.cas + b" q"
                self._call("delete lease", self.client.raw_command, command + b"\r\nmn", b"MN\r\n")
            return False
        return self.cas(key, value, (guard.cas, 0.0), ttl)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the client's connections; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.client.close()
