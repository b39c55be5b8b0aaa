"""The shared write-back runtime: a dirty set kept in Redis, so that any process may flush it.

``WriteBack(journal="redis")`` with a :class:`~cachewise.RedisStore`. The interface is
the in-process ``Flusher``'s; the state lives in Redis, so every process writing through
the same namespace shares one dirty set, and Redis persistence (AOF) is the durability.

Layout. A cache key encoded as ``e`` (``codecs.encode_key``) in namespace ``ns``:

    ns:{e}:v     the value, as RedisStore keeps it (no TTL while dirty)
    ns:{e}:n     the key's version, RedisStore's; INCRed by every write: the sequence
    ns:{e}:d     the dirty mark, a hash: s (sequence), t (tombstone), p (the encoded
                 value, again: a dirty write survives ``invalidate`` or ``clear`` of
                 ``:v``), k (the index token of the write), f (when the oldest write
                 not yet in the source was made, ms), r (the first write made while a
                 flusher held the key, ms: ``f`` once that flush commits)
    ns:{e}:c     a flusher's claim: a random token, SET NX PX
    ns:{e}:r     a parked write the source refused: s, t, p, f as the mark had them,
                 e (the source's reason)
    ns:{~dirty}:z  the index: encoded keys by first-dirty time (oldest first)
    ns:{~dirty}:h  the index tokens: encoded key -> token of its latest write
    ns:{~dirty}:r  the parked keys (a set of encoded keys)

On a Redis Cluster the index (``z`` and ``h``) is cut into 16 shards with hash tags of
their own, ``ns:{~dirty:0}`` ... ``ns:{~dirty:15}``, spread over the primaries; a key's
entry is always in the same shard (``_dirty_index``).

The per-key keys share the hash tag ``{e}`` (one Redis Cluster slot: one Lua script
changes value, version and mark atomically); the index has its own tag, so it is never
changed in the same script as a mark. Hence the order of the steps:

- A write first adds its key to the index with a fresh token (one script on the
  index: this is also where ``max_dirty`` backpressure is decided, atomically across
  processes), then writes value + version + mark in one script that records the same
  token. A crash between the two leaves an index entry without a mark, never a mark
  without an index entry: no dirty key is ever hidden from the flushers.
- A flush takes index entries oldest first, claims each key (``SET NX PX`` on ``:c``
  in the script that reads the mark), writes the batch with one ``save_many`` and one
  ``remove_many``, then per key clears the mark only if its sequence is still the one
  flushed (a write that landed meanwhile keeps the key dirty), gives ``:v`` the store's
  default TTL if it is still the flushed value, and releases the claim. Only then
  does it remove the index entry, and only if the index token is still the cleared
  mark's: a newer token means a writer is between its two steps.
- An index entry without a mark (a writer crashed between its steps, or a flusher
  between clearing and unindexing) is dropped once its token is older than
  ``orphan_grace``. A writer that itself took longer than half of that between its
  steps indexes its key again afterwards.
- A key written while a flusher holds it stays dirty after the flush, with only the
  writes after the claim left: its first-dirty time becomes the first of those (the
  settle script returns it and the index entry is rescored), so ``oldest_dirty_age``
  is the age of the oldest write not yet in the source, not of the key's first write.
- Rows the source refuses (``RejectedError``) are isolated by bisecting the batch
  (``rejection.isolate``); the rest are written. Each refused key is added to the
  parked set first, then its mark is moved to ``:r`` (one script, which also stops
  serving the refused value), then it is unindexed: a parked key is never hidden. A
  new write of the key deletes ``:r`` in its mark script.

Claims. A per-key claim rather than a Streams consumer group: the dirty state is per
key (coalesced, with a sequence), a claim lives in the key's own slot so the claim and
the read of the mark are one script, and a key written a thousand times is one index
entry, where a stream would carry a thousand entries to acknowledge. A flusher killed
mid-batch leaves claims that expire after ``claim_ttl`` (``policy.flush_timeout`` by
default); any flusher then takes the keys over. Flushes are idempotent upserts, so a
key written twice is harmless; a flusher that finds at settle time that its claim
expired and its mark is gone re-marks the current value, so a slow flusher's old write
can never be the last one the source sees.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cachewise import _tracing
from cachewise._events import event
from cachewise._types import MISSING, Key, check_seconds, implements
from cachewise.codecs import decode_key, encode_key
from cachewise.errors import (
    CacheFullError,
    ClosedError,
    CodecError,
    ConfigurationError,
    FlushError,
    InvalidKeyError,
)
from cachewise.policies import WriteBack
from cachewise.sources.base import Source, ValidatingSource
from cachewise.stats import Counter
from cachewise.stores._redis_slots import Layout
from cachewise.stores.base import Store
from cachewise.stores.redis import RedisStore
from cachewise.writeback._dirty_index import DirtyIndex, index_keys
from cachewise.writeback.background import BatchTimes, FlushLoop, close_at_exit, closed
from cachewise.writeback.dirty import TOMBSTONE, DirtyEntry, Rejected
from cachewise.writeback.lag import LagSummary, LagWindow
from cachewise.writeback.rejection import isolate, log_parked, refused_error

logger = logging.getLogger("cachewise.writeback")

T = TypeVar("T")

fault_hook: Callable[[str, list[Key]], None] | None = None
"""Tests set this to pause or die at a named point of a flush, with the batch's keys:
``claimed`` (keys claimed, source not written), ``isolate`` (the source refused the
batch for a row in it; it is about to be split), ``saved`` (source written, marks not
cleared)."""

_VERSION_TTL_MS: Final = 24 * 3600 * 1000
"""A clean key's version expires as RedisStore's do; a dirty key's never does."""

# KEYS: z, h. ARGV: max_dirty, now ms, token, member... Adds the members to the index
# unless that would take it past max_dirty (a shard's part of it on a cluster; an empty
# shard takes any group, so a batch within max_dirty is never refused for its spread).
# Returns {added (1/0), index size}.
_RESERVE: Final = """
local new = 0
for i = 4, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then new = new + 1 end
end
local size = redis.call('ZCARD', KEYS[1])
if new > 0 and size > 0 and size + new > tonumber(ARGV[1]) then return {0, size} end
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[3])
end
return {1, size + new}
"""

# KEYS: z, h. ARGV: now ms, token, member... Indexes members that are not indexed.
_REINDEX: Final = """
for i = 3, #ARGV do
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[2])
  end
end
return 1
"""

# KEYS: z, h. ARGV: member, token, member, token... Unindexes each member whose token
# is still the one given. Returns how many were removed.
_UNINDEX: Final = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS: v, n, d, c, r per key. ARGV: token, now ms, then payload, tombstone ('1'/'0')
# per key, then the store's epoch stamp (prefixed to the value in :v, not to the mark's
# copy). Value, version and mark of each key in one step; a write over a mark a flusher
# holds (c) notes its time as the mark's resume time (r), once; a parked write of the key
# (r) is replaced. Returns {how many writes coalesced, the positions of unparked keys}.
_MARK: Final = """
local stamp = ARGV[#ARGV]
local coalesced = 0
local unparked = {}
for i = 1, #KEYS, 5 do
  local m = (i - 1) / 5
  local payload, tomb = ARGV[3 + 2 * m], ARGV[4 + 2 * m]
  local seq = redis.call('INCR', KEYS[i + 1])
  local old = redis.call('HMGET', KEYS[i + 2], 's', 'f', 'r')
  local since = ARGV[2]
  if old[1] then
    coalesced = coalesced + 1
    since = old[2] or since
    if seq <= tonumber(old[1]) then
      seq = tonumber(old[1]) + 1
      redis.call('SET', KEYS[i + 1], seq)
    end
    if not old[3] and redis.call('EXISTS', KEYS[i + 3]) == 1 then
      redis.call('HSET', KEYS[i + 2], 'r', ARGV[2])
    end
  end
  redis.call('PERSIST', KEYS[i + 1])
  if tomb == '1' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], stamp .. payload)
  end
  redis.call('HSET', KEYS[i + 2], 's', seq, 't', tomb, 'p', payload, 'k', ARGV[1], 'f', since)
  if redis.call('DEL', KEYS[i + 4]) == 1 then unparked[#unparked + 1] = m + 1 end
end
return {coalesced, unparked}
"""

# KEYS: v, n, d. ARGV: token, now ms, the store's epoch stamp. Marks the current value
# dirty again unless the key is dirty already. Returns 1 (marked), 0 (already dirty),
# -1 (no value of this epoch to mark).
_REMARK: Final = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local val = redis.call('GET', KEYS[1])
if not val or string.sub(val, 1, #ARGV[3]) ~= ARGV[3] then return -1 end
val = string.sub(val, #ARGV[3] + 1)
local seq = redis.call('INCR', KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[3], 's', seq, 't', '0', 'p', val, 'k', ARGV[1], 'f', ARGV[2])
return 1
"""

# KEYS: d, c per key. ARGV: claim token, claim ms. Returns per key {0} (no mark), {1}
# (claimed by another flusher) or {2, s, t, p, f}: the mark, now claimed by us (writes
# from now on are after the claim: its resume time starts over).
_CLAIM: Final = """
local out = {}
for i = 1, #KEYS, 2 do
  local m = redis.call('HMGET', KEYS[i], 's', 't', 'p', 'f')
  if not m[1] then
    out[#out + 1] = {0}
  elseif redis.call('SET', KEYS[i + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('HDEL', KEYS[i], 'r')
    out[#out + 1] = {2, m[1], m[2], m[3], m[4] or '0'}
  else
    out[#out + 1] = {1}
  end
end
return out
"""

# KEYS: d, c, v, n per key. ARGV: claim token, value px (0 = none), version ttl ms,
# flushed ('1' = the source has them, '0' = release only), then the sequence flushed per
# key. Per key: clear the mark if its sequence is still the one flushed, give the value
# its TTL if it is still the flushed one, release our claim; a mark written since keeps
# only the writes after the claim, so its first-dirty time becomes its resume time.
# Returns per key {cleared (1/0), claim still ours (1/0), index token of the cleared
# mark, the new first-dirty time of a mark written since ('' if none)}.
_SETTLE: Final = """
local out = {}
for i = 1, #KEYS, 4 do
  local seq = ARGV[4 + (i + 3) / 4]
  local cleared, token, owned, since = 0, '', 0, ''
  if ARGV[4] == '1' then
    local m = redis.call('HMGET', KEYS[i], 's', 'k', 'r')
    if m[1] and m[1] ~= seq and m[3] then
      redis.call('HSET', KEYS[i], 'f', m[3])
      redis.call('HDEL', KEYS[i], 'r')
      since = m[3]
    end
    if m[1] == seq then
      redis.call('DEL', KEYS[i])
      cleared = 1
      token = m[2] or ''
      if redis.call('GET', KEYS[i + 3]) == seq and tonumber(ARGV[2]) > 0 then
        redis.call('PEXPIRE', KEYS[i + 2], ARGV[2])
      end
      redis.call('PEXPIRE', KEYS[i + 3], ARGV[3])
    end
  end
  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then
    redis.call('DEL', KEYS[i + 1])
    owned = 1
  end
  out[#out + 1] = {cleared, owned, token, since}
end
return out
"""

# KEYS: d, c, v, n, r per key. ARGV: claim token, version ttl ms, then the sequence
# flushed and the source's reason per key, then the store's epoch stamp (what :v holds
# before the payload). Per key whose mark is still that sequence:
# move the mark to the parked hash r (with the reason), stop serving the refused value,
# let the version expire as a clean key's does. Releases our claims. Returns per key
# {parked (1/0), index token of the moved mark}.
_PARK: Final = """
local stamp = ARGV[#ARGV]
local out = {}
for i = 1, #KEYS, 5 do
  local m = (i - 1) / 5
  local seq, reason = ARGV[3 + 2 * m], ARGV[4 + 2 * m]
  local parked, token = 0, ''
  local mark = redis.call('HMGET', KEYS[i], 's', 't', 'p', 'k', 'f')
  if mark[1] == seq then
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i + 4], 's', seq, 't', mark[2], 'p', mark[3], 'e', reason,
      'f', mark[5] or '0')
    if mark[2] ~= '1' and redis.call('GET', KEYS[i + 2]) == stamp .. mark[3] then
      redis.call('DEL', KEYS[i + 2])
    end
    redis.call('PEXPIRE', KEYS[i + 3], ARGV[2])
    parked, token = 1, mark[4] or ''
  end
  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then redis.call('DEL', KEYS[i + 1]) end
  out[#out + 1] = {parked, token}
end
return out
"""

_REPORTED_MAX: Final = 10_000
"""Undecodable keys remembered so each is logged once (past this many, no more lines)."""

_CHUNK: Final = 256
"""Keys per script call: long enough to amortise a round trip, short enough that one
script never holds Redis (single-threaded) for long."""


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A dirty key this flusher holds the claim of, with what it will write."""

    member: bytes
    key: Key
    base: bytes
    seq: bytes
    value: Any
    since_ms: int
    """When the oldest write this flush covers was made (the mark's ``f``)."""


@dataclass(frozen=True)
class Backlog:
    """A shared write-back's backlog as Redis holds it, readable by any process."""

    dirty: int
    """Keys in the dirty index: every process's unflushed writes."""
    oldest_dirty_age: float
    """Seconds the oldest dirty key has waited (0.0 when nothing is dirty)."""
    claimed: int
    """Of the ``sampled`` oldest dirty keys, how many a flusher holds a claim on now."""
    sampled: int


def read_backlog(client: Any, namespace: str, *, sample: int = 1000) -> Backlog:
    """The backlog of the shared write-back in ``namespace``, read-only, in two round trips.

    Claims are counted over the ``sample`` oldest dirty keys (a flusher takes keys oldest
    first), so the cost stays bounded however large the backlog.
    """
    shards = index_keys(namespace, client)  # one on one Redis, spread on a cluster
    with client.pipeline(transaction=False) as pipe:
        for z, _h in shards:
            pipe.zcard(z)
            pipe.zrange(z, 0, sample - 1, withscores=True)
        replies = pipe.execute()
    dirty = sum(int(n) for n in replies[0::2])
    oldest = heapq.nsmallest(
        sample, (item for reply in replies[1::2] for item in reply), key=lambda i: float(i[1])
    )
    prefix = f"{namespace}:{{"
    claims = [f"{prefix}{m.decode()}}}:c".encode() for m, _ in oldest]
    claimed = 0
    if claims:
        with client.pipeline(transaction=False) as pipe:
            for claim in claims:  # one key each: a cluster may hold them on different nodes
                pipe.exists(claim)
            claimed = sum(pipe.execute())
    age = max(0.0, time.time() - float(oldest[0][1]) / 1000.0) if oldest else 0.0
    return Backlog(int(dirty), age, int(claimed), len(claims))


def _token(now_ms: int) -> str:
    """An index token: when it was made (for ``orphan_grace``) and 64 random bits."""
    return f"{now_ms}:{os.urandom(8).hex()}"


def _token_ms(token: bytes | None) -> int | None:
    if not token:
        return None
    head = token.split(b":", 1)[0]
    return int(head) if head.isdigit() else None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fault(point: str, batch: list[_Claimed]) -> None:
    hook = fault_hook
    if hook is not None:
        hook(point, [c.key for c in batch])


def _split_hook(batch: list[_Claimed]) -> Callable[[], None]:
    """``isolate``'s split callback: the ``isolate`` fault point, with the batch's keys."""
    return lambda: _fault("isolate", batch)


class SharedFlusher:
    """The write-back runtime of ``WriteBack(journal="redis")``: dirty set in Redis.

    Same interface as ``Flusher``. ``stores_values`` is True: :meth:`accept` writes the
    value into the RedisStore atomically with its dirty mark, so the cache must not
    store it again. ``claim_ttl`` (default ``policy.flush_timeout``) is how long a
    flusher that died mid-batch holds its keys back; ``orphan_grace`` (the same by
    default) how long an index entry without a mark is kept for a writer still
    between its two steps.
    """

    stores_values = True

    def __init__(
        self,
        policy: WriteBack,
        source: Source,
        store: Store,
        *,
        claim_ttl: float | None = None,
        orphan_grace: float | None = None,
        name: str = "cachewise",
    ) -> None:
        if not isinstance(store, RedisStore):
            raise ConfigurationError(
                f"WriteBack(journal='redis') keeps the dirty set in Redis: the store must be "
                f"a RedisStore, got {store!r}"
            )
        claim_ttl = policy.flush_timeout if claim_ttl is None else claim_ttl
        orphan_grace = policy.flush_timeout if orphan_grace is None else orphan_grace
        check_seconds(claim_ttl, "claim_ttl")
        check_seconds(orphan_grace, "orphan_grace")
        self.policy = policy
        self._source = source
        self._store = store
        self._codec = store.codec
        self._client = store.client
        self._prefix = f"{store.namespace}:{{"
        self._parked = f"{store.namespace}:{{~dirty}}:r".encode()
        self._validate = source.validate if implements(source, ValidatingSource) else None
        self._claim_ms = max(1, math.ceil(claim_ttl * 1000))
        self._grace_ms = max(1, math.ceil(orphan_grace * 1000))
        self._value_px = 0 if store.ttl is None else max(1, math.ceil(store.ttl * 1000))
        keyslot = getattr(self._client, "keyslot", None)  # RedisCluster has one
        self._slot: Callable[[bytes], int] | None = keyslot if callable(keyslot) else None
        register = self._client.register_script
        scripts = (register(_RESERVE), register(_REINDEX), register(_UNINDEX))
        self._index = DirtyIndex(store.namespace, self._client, self._call, scripts)
        self._mark = register(_MARK)
        self._remark = register(_REMARK)
        # The flush's scripts take a batch of keys: on a cluster, one script per slot, sent
        # to every node at once (``_redis_slots.SlottedScript``), not one call per slot.
        self._claim = store._batch_script(_CLAIM, Layout(2, 2, 0, 0, "list"))
        self._settle = store._batch_script(_SETTLE, Layout(4, 4, 1, 0, "list"))
        self._park_script = store._batch_script(_PARK, Layout(5, 2, 2, 1, "list"))
        self._closed = False
        self._lag = LagWindow()
        self._lag_lock = threading.Lock()
        self._coalesced = Counter()
        self.undecodable = Counter()
        self._reported: set[bytes] = set()
        """Dirty marks whose value failed to decode (left dirty, logged, never written)."""
        self.flushes = Counter()
        self.flush_failures = Counter()
        self.source_writes = Counter()
        self.batch_times = BatchTimes(name)
        self._name = name
        self._loop = FlushLoop(
            policy,
            self._flush_in_background,
            lambda: self.dirty_count > 0,
            name=name,
            backlog=self._backlog,
        )
        self._loop.start()
        close_at_exit(self)

    def __repr__(self) -> str:
        return f"SharedFlusher({self._store!r})"

    # -- keys and Redis calls -----------------------------------------------------------

    def _base(self, member: str | bytes) -> bytes:
        text = member if isinstance(member, str) else member.decode()
        return f"{self._prefix}{text}}}:".encode()

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One Redis call; a failure becomes StoreError (chained, password never shown)."""
        return self._store._call(op, fn, *args, **kwargs)

    @staticmethod
    def _chunks(items: list[T], _wire: Callable[[T], bytes]) -> Iterator[list[T]]:
        """``items`` in chunks one (slot-splitting) batch script call takes, in order."""
        for i in range(0, len(items), _CHUNK):
            yield items[i : i + _CHUNK]

    def _groups(self, items: list[T], wire: Callable[[T], bytes]) -> Iterator[list[T]]:
        """``items`` in chunks one script may take, in order.

        Under Redis Cluster a script may not cross hash slots, so each chunk holds items
        of one slot (``wire(item)`` is a Redis key of the item's key).
        """
        if self._slot is None:
            for i in range(0, len(items), _CHUNK):
                yield items[i : i + _CHUNK]
            return
        slots: dict[int, list[T]] = {}
        for item in items:
            slots.setdefault(self._slot(wire(item)), []).append(item)
        for group in slots.values():
            for i in range(0, len(group), _CHUNK):
                yield group[i : i + _CHUNK]

    # -- state ---------------------------------------------------------------------------

    def dirty_entry(self, key: Key) -> DirtyEntry | None:
        """The unflushed write of ``key``, if any (read-your-writes)."""
        base = self._base(encode_key(key))
        seq, tomb, payload, since = self._call(
            "dirty mark", self._client.hmget, base + b"d", [b"s", b"t", b"p", b"f"]
        )
        if seq is None:
            return None
        if tomb == b"1":
            value: Any = TOMBSTONE
        else:
            try:
                value = self._codec.decode(payload, key=base + b"v")
            except CodecError as exc:
                self._reject(base, encode_key(key), exc)
                return None
        return DirtyEntry(int(seq), value, int(since or 0) / 1000.0)

    def is_dirty(self, key: Key) -> bool:
        """Whether ``key`` holds a write not yet in the source (in any process)."""
        mark = self._base(encode_key(key)) + b"d"
        return bool(self._call("EXISTS", self._client.exists, mark))

    @property
    def dirty_count(self) -> int:
        """Keys in the shared dirty index: the backlog of every process."""
        return self._index.count()

    def _reject(self, base: bytes, key: str, exc: Exception) -> None:
        """Count a dirty row that cannot be decoded; log it once per key, not per flush.

        ``key`` is the key as encoded in Redis (``codecs.encode_key``): it may not decode.
        """
        self.undecodable.add()
        if base in self._reported or len(self._reported) >= _REPORTED_MAX:
            return
        self._reported.add(base)
        event(
            logger,
            logging.WARNING,
            "undecodable_row",
            "shared write-back %s: the dirty value of %s cannot be decoded (%s); it stays "
            "dirty, is never written nor served (logged once per key)",
            self._name,
            key,
            type(exc).__name__,
            cache=self._name,
            key=key,
            error=type(exc).__name__,
        )

    def _backlog(self) -> int | None:
        """The dirty count for a log line, or None when Redis cannot say (it may be down)."""
        try:
            return self.dirty_count
        except Exception:
            return None

    @property
    def coalesced(self) -> int:
        """Writes of this process that absorbed an earlier unflushed write of the key."""
        return self._coalesced.value

    def lag(self) -> LagSummary:
        """Acknowledgement-to-commit lag of the keys this process flushed recently.

        One sample per flushed key: its oldest write the flush covered (writes come from
        every process, so single writes are not followed); wall clock, as Redis holds it.
        """
        with self._lag_lock:
            return self._lag.summary(time.time())

    def oldest_dirty_age(self) -> float:
        """Seconds since the oldest write not yet in the source was made (wall clock).

        A key written while it was being flushed counts from its first write after the
        flush claimed it (the settle script moves its index score there).
        """
        first = self._index.oldest()
        if first is None:
            return 0.0
        return max(0.0, time.time() - first / 1000.0)

    def dirty_keys(self) -> list[Key]:
        """The dirty keys, oldest first."""
        members = self._index.members()
        keys = []
        for member in members:
            try:
                keys.append(decode_key(member.decode()))
            except (InvalidKeyError, UnicodeDecodeError):
                event(
                    logger,
                    logging.WARNING,
                    "undecodable_index_member",
                    "shared write-back %s: undecodable member %r in the dirty index",
                    self._name,
                    member,
                    cache=self._name,
                    key=member.decode("utf-8", "replace"),
                )
        return keys

    # -- parked keys -------------------------------------------------------------------

    def rejected(self) -> dict[Key, Rejected]:
        """The parked keys of the namespace (every process's): refused values, with why."""
        members = sorted(self._call("SMEMBERS", self._client.smembers, self._parked))
        out: dict[Key, Rejected] = {}
        for member in members:
            try:
                key = decode_key(member.decode())
            except (InvalidKeyError, UnicodeDecodeError):
                event(
                    logger,
                    logging.WARNING,
                    "undecodable_parked_member",
                    "shared write-back %s: undecodable member %r in the parked set",
                    self._name,
                    member,
                    cache=self._name,
                    key=member.decode("utf-8", "replace"),
                )
                continue
            entry = self.rejected_entry(key)
            if entry is not None:
                out[key] = entry
        return out

    def rejected_entry(self, key: Key) -> Rejected | None:
        """The parked write of ``key``, if any."""
        base = self._base(encode_key(key))
        seq, tomb, payload, reason = self._call(
            "parked write", self._client.hmget, base + b"r", [b"s", b"t", b"p", b"e"]
        )
        if seq is None:
            return None
        try:
            value = TOMBSTONE if tomb == b"1" else self._codec.decode(payload, key=base + b"v")
        except CodecError:
            self._reject(base, encode_key(key), CodecError("parked value"))
            return None
        return Rejected(value, (reason or b"").decode(errors="replace"), int(seq))

    @property
    def rejected_count(self) -> int:
        """Parked keys in the namespace (a crash mid-park may count one that is not)."""
        return int(self._call("SCARD", self._client.scard, self._parked))

    def discard(self, keys: Iterable[Key] | None = None) -> int:
        """Forget parked keys (all, or those of ``keys``); return how many were parked."""
        if keys is None:
            members = list(self._call("SMEMBERS", self._client.smembers, self._parked))
        else:
            members = [encode_key(k).encode() for k in dict.fromkeys(keys)]
        count = 0
        for member in members:
            count += int(self._call("DEL", self._client.delete, self._base(member) + b"r"))
        if members:
            self._call("SREM", self._client.srem, self._parked, *members)
        return count

    # -- writes --------------------------------------------------------------------------

    def accept(self, items: Mapping[Key, Any]) -> list[Key]:
        """Store each value with its dirty mark in Redis, atomically per key; return the keys.

        The key is indexed first, then value + version + mark are written in one script.
        Raises CacheFullError at ``max_dirty`` (after blocking, if ``on_full="block"``).
        """
        if self._closed:
            raise ClosedError("write-back is closed")
        if not items:
            return []
        validate = self._validate
        if validate is not None:
            for key, value in items.items():
                validate(key, MISSING if value is TOMBSTONE else value)
        members: list[str] = []
        payloads: list[tuple[bytes, bytes]] = []
        for key, value in items.items():  # encode everything before any state changes
            member = encode_key(key)
            members.append(member)
            if value is TOMBSTONE:
                payloads.append((b"", b"1"))
            else:
                payloads.append((self._codec.encode(value, key=self._base(member) + b"v"), b"0"))
        now = _now_ms()
        token = _token(now)
        backlog = self._reserve_room(members, now, token)
        started = time.monotonic()
        writes = list(zip(members, payloads, strict=True))
        for group in self._groups(writes, lambda write: self._base(write[0])):
            keys: list[bytes] = []
            args: list[Any] = [token, now]
            for member, (payload, tomb) in group:
                base = self._base(member)
                keys += (base + b"v", base + b"n", base + b"d", base + b"c", base + b"r")
                args += (payload, tomb)
            args.append(self._store.stamp())
            coalesced, unparked = self._call("write-back mark", self._mark, keys=keys, args=args)
            self._coalesced.add_many(int(coalesced))
            if unparked:  # a new write replaced a parked one
                gone = [group[int(position) - 1][0] for position in unparked]
                self._call("SREM", self._client.srem, self._parked, *gone)
        if (time.monotonic() - started) * 1000 > self._grace_ms / 2:
            # So slow that a flusher may have taken our index entry for an orphan.
            self._index.reindex(_now_ms(), token, members)
        if backlog >= self.policy.max_batch:
            self._loop.wake.set()
        return list(items)

    def _reserve_room(self, members: list[str], now: int, token: str) -> int:
        """Index the members (backpressure at ``max_dirty``); return the index size."""
        limit = self.policy.max_dirty
        if len(members) > limit:
            raise CacheFullError(f"a batch of {len(members)} keys exceeds max_dirty={limit}")
        deadline = time.monotonic() + self.policy.block_timeout
        pause = 0.005
        while True:
            added, size = self._index.reserve(limit, now, token, members)
            if added:
                return int(size)
            self._loop.wake.set()
            if self.policy.on_full == "raise":
                raise CacheFullError(f"shared write-back holds max_dirty={limit} dirty keys")
            if time.monotonic() >= deadline or self._closed:
                raise CacheFullError(
                    f"shared write-back held max_dirty={limit} dirty keys for "
                    f"{self.policy.block_timeout}s (is the source down?)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    # -- flushing ------------------------------------------------------------------------

    def flush(self, keys: Iterable[Key] | None = None, *, wait: bool = True) -> int:
        """Write dirty keys (all, or those of ``keys``) to the source now; return how many.

        Keys another process is flushing at this moment are left to it. Raises
        FlushError promptly if the source fails; the keys stay dirty.
        """
        only = None if keys is None else [encode_key(k).encode() for k in dict.fromkeys(keys)]
        refused: dict[Key, str] = {}
        written = self._loop.exclusive(lambda: self._flush_all(only, refused), wait=wait)
        if refused:
            raise refused_error(refused, written)
        return written

    def _flush_in_background(self) -> int:
        """The flusher thread's flush: refused keys are parked and logged, not raised."""
        return self._loop.exclusive(lambda: self._flush_all(None, {}))

    def _flush_all(self, only: list[bytes] | None, refused: dict[Key, str]) -> int:
        size = self.policy.max_batch
        if only is not None:
            return sum(
                self._flush_batch(only[i : i + size], refused) for i in range(0, len(only), size)
            )
        # Keys indexed after this flush began are the next flush's, so a flush ends under a
        # stream of new keys. The newest score, not our clock: writers' clocks differ.
        upto = self._index.newest()
        if upto is None:
            return 0
        written = 0
        seen: set[bytes] = set()
        while True:
            members = self._index.window(upto, seen, size)
            if not members:
                return written
            seen.update(members)
            written += self._flush_batch(members, refused)

    def _flush_batch(self, members: list[bytes], refused: dict[Key, str]) -> int:
        tokens = self._index.tokens(members)
        claim = os.urandom(16).hex().encode()
        replies: dict[bytes, list[Any]] = {}
        for group in self._chunks(members, self._base):
            keys = [self._base(m) + suffix for m in group for suffix in (b"d", b"c")]
            found = self._call("claim", self._claim, keys=keys, args=[claim, self._claim_ms])
            replies.update(zip(group, found, strict=True))
        batch: list[_Claimed] = []
        orphans: list[bytes] = []
        undecodable: list[tuple[bytes, bytes]] = []
        now = _now_ms()
        for member, token in zip(members, tokens, strict=True):
            reply = replies[member]
            if reply[0] == 0:
                made = _token_ms(token)
                if token and made is not None and now - made > self._grace_ms:
                    orphans += (member, token)
                continue
            if reply[0] == 1:
                continue  # another flusher has it
            claimed = self._decode_claim(member, reply)
            if claimed is None:
                undecodable.append((self._base(member), reply[1]))
            else:
                batch.append(claimed)
        if orphans:
            self._index.unindex(orphans)
        if undecodable:
            self._settle_all(undecodable, claim, flushed=False)
        if not batch:
            return 0
        return self._write_claimed(batch, claim, refused)

    def _write_claimed(self, batch: list[_Claimed], claim: bytes, refused: dict[Key, str]) -> int:
        """Write claimed keys to the source; settle the written, park the refused."""
        _fault("claimed", batch)
        bad = self._write_source(batch, claim)
        committed = time.time()
        _fault("saved", batch)
        written = [c for c in batch if c.key not in bad]
        if written:
            self._release(written, claim, flushed=True)
            with self._lag_lock:
                for c in written:
                    self._lag.add(committed, max(0.0, committed - c.since_ms / 1000.0))
        if bad:
            self._park([c for c in batch if c.key in bad], bad, claim)
            refused.update(bad)
        return len(written)

    def _decode_claim(self, member: bytes, reply: list[Any]) -> _Claimed | None:
        seq, tomb, payload, since = reply[1:5]
        base = self._base(member)
        try:
            key = decode_key(member.decode())
            value = TOMBSTONE if tomb == b"1" else self._codec.decode(payload, key=base + b"v")
        except (CodecError, InvalidKeyError, UnicodeDecodeError) as exc:
            self._reject(base, member.decode("utf-8", "replace"), exc)
            return None
        return _Claimed(member, key, base, seq, value, int(since or 0))

    def _write_source(self, batch: list[_Claimed], claim: bytes) -> dict[Key, str]:
        """Write a batch; return the keys the source refused, with its reasons."""
        saves = {c.key: c.value for c in batch if c.value is not TOMBSTONE}
        removes = {c.key: c.value for c in batch if c.value is TOMBSTONE}
        refused: dict[Key, str] = {}
        split = _split_hook(batch)
        span = None
        if _tracing.tracer is not None:
            span = _tracing.start("cachewise.flush", {"cache": self._name, "keys": len(batch)})
        started = time.monotonic()
        try:
            if saves:
                refused.update(isolate(self._source.save_many, saves, split))
            if removes:
                refused.update(isolate(self._remove, removes, split))
        except Exception as exc:
            _tracing.end(span, exc)
            self.flush_failures.add()
            try:
                self._release(batch, claim, flushed=False)
            except Exception:  # the claims expire by themselves
                event(
                    logger,
                    logging.DEBUG,
                    "claims_not_released",
                    "shared write-back %s: could not release claims after a failed flush; "
                    "they expire by themselves",
                    self._name,
                    cache=self._name,
                    keys=len(batch),
                )
            raise FlushError(
                f"shared write-back could not flush {len(batch)} keys; they stay dirty: {exc}"
            ) from exc
        _tracing.end(span)
        self.batch_times.observe(started, len(batch))
        self.flushes.add()
        self.source_writes.add_many(len(batch) - len(refused))
        return refused

    def _remove(self, items: Mapping[Key, Any]) -> None:
        self._source.remove_many(list(items))

    def _park(self, batch: list[_Claimed], refused: dict[Key, str], claim: bytes) -> None:
        """Park the keys the source refused: parked set first, then mark -> ``:r``, unindex."""
        self._call("SADD", self._client.sadd, self._parked, *(c.member for c in batch))
        replies: dict[bytes, Any] = {}
        for group in self._chunks(batch, lambda c: c.base):
            wires = [c.base + suffix for c in group for suffix in (b"d", b"c", b"v", b"n", b"r")]
            args: list[Any] = [claim, _VERSION_TTL_MS]
            for c in group:
                args += (c.seq, refused[c.key])
            args.append(self._store.stamp())
            found = self._call("park", self._park_script, keys=wires, args=args)
            replies.update(zip((c.member for c in group), found, strict=True))
        parked: list[tuple[Key, str]] = []
        unindex: list[bytes] = []
        stale: list[bytes] = []
        for c in batch:
            was_parked, token = replies[c.member]
            if was_parked:
                parked.append((c.key, refused[c.key]))
                unindex += (c.member, token)
            else:
                stale.append(c.member)  # written again since: the newer write goes next
        if unindex:
            self._index.unindex(unindex)
        if stale:
            self._call("SREM", self._client.srem, self._parked, *stale)
        log_parked(parked, self._name)

    def _settle_all(
        self, keys: list[tuple[bytes, bytes]], claim: bytes, *, flushed: bool
    ) -> list[Any]:
        """Per ``(base, seq)``: clear the mark if ``flushed`` and still ``seq``; unclaim."""
        replies: dict[bytes, Any] = {}
        flag = b"1" if flushed else b"0"
        for group in self._chunks(keys, lambda item: item[0]):
            wires = [b + suffix for b, _ in group for suffix in (b"d", b"c", b"v", b"n")]
            args = [claim, self._value_px, _VERSION_TTL_MS, flag, *(seq for _, seq in group)]
            found = self._call("settle", self._settle, keys=wires, args=args)
            replies.update(zip((b for b, _ in group), found, strict=True))
        return [replies[b] for b, _ in keys]  # in the order given, not the slots' order

    def _release(self, batch: list[_Claimed], claim: bytes, *, flushed: bool) -> None:
        """Clear the marks the source now has (if ``flushed``), release our claims."""
        replies = self._settle_all([(c.base, c.seq) for c in batch], claim, flushed=flushed)
        if not flushed:
            return
        cleared: list[bytes] = []
        lost: list[_Claimed] = []
        resumed: dict[bytes, float] = {}
        for c, (was_cleared, owned, token, since) in zip(batch, replies, strict=True):
            if was_cleared:
                cleared += (c.member, token)
            elif not owned:
                lost.append(c)
            if since:
                resumed[c.member] = float(since)
        if cleared:
            self._index.unindex(cleared)
        if resumed:  # written during the flush: their age restarts at the first such write
            self._index.rescore(resumed)
        if lost:
            self._mark_again(lost)

    def _mark_again(self, lost: list[_Claimed]) -> None:
        """Mark the current values of keys whose claim expired while we wrote them dirty again.

        Another flusher may have written a newer value before our older one landed.
        """
        now = _now_ms()
        token = _token(now)
        members = [c.member for c in lost]
        self._index.reindex(now, token, members)
        for c in lost:
            b = c.base
            done = self._call(
                "mark again",
                self._remark,
                keys=[b + b"v", b + b"n", b + b"d"],
                args=[token, now, self._store.stamp()],
            )
            outcome = (
                "marked dirty again" if done == 1 else "already dirty" if done == 0 else "no value"
            )
            event(
                logger,
                logging.WARNING,
                "claim_outlived",
                "shared write-back %s: flush of %r outlived its claim (claim_ttl too short?); %s",
                self._name,
                c.key,
                outcome,
                cache=self._name,
                key=encode_key(c.key),
                outcome=outcome,
            )

    # -- lifecycle -----------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is dirty and stop the background thread (the Cache closes the store).

        If the final flush fails the keys stay dirty in Redis for any other process to
        flush, and the error is raised after the thread has stopped.
        """
        if self._closed:
            return
        error: Exception | None = None
        try:
            self._flush_in_background()
        except Exception as exc:
            error = exc
        self._closed = True
        self._loop.stop(timeout)
        closed(self)
        if error is not None:
            event(
                logger,
                logging.ERROR,
                "closed_dirty",
                "shared write-back %s closed with keys still dirty in Redis (any process may "
                "flush them)",
                self._name,
                cache=self._name,
                keys=self._backlog(),
                journal=True,
                error=type(error).__name__,
            )
            raise error
