"""Claims in Redis: who writes back a namespace, alone or shared, renewed while alive.

Two in-process write-backs on one namespace each flush their own dirty set, in no
order with each other, so the source and Redis can end up holding different writes for
good. A ``Cache`` with an in-process ``WriteBack`` over Redis therefore takes the
namespace's *solo* claim; one with the shared write-back (``journal="redis"``) joins its
*shared* claim. The solo claim excludes every other claim; shared claims exclude only
a solo one. Layout (one hash tag, one slot)::

    ns:{~writeback}:owner     the solo holder's token, PX ttl
    ns:{~writeback}:members   shared holders: a sorted set, token -> expiry (ms)

A token is ``host:pid:random``, one per process: the claim arbitrates between
processes, so several caches of one process (a table each, say) share it, and the
Redis key is released when the last of them releases it. A background thread renews
the claim every third of its TTL; a holder that dies stops renewing and its claim
lapses after the TTL, or at once when its successor runs on the same host and sees
the holder's pid is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import RedisError

from cachewise.errors import ConfigurationError, StoreError

logger = logging.getLogger("cachewise")

# KEYS: owner, members. ARGV: token, ttl ms, mode ('solo' / 'shared').
# Takes or renews the claim. Returns {1, ''} or {0, the holder in the way}.
_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, holder} end
if ARGV[3] == 'solo' then
  local others = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #others > 0 then return {0, others[1]} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {1, ''}
"""

# KEYS: owner, members. ARGV: token. Drops the token wherever it is.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

_HOST: Final = socket.gethostname()

_tokens: dict[int, str] = {}
"""The claim token of each process id (a forked child is another process)."""
_holders: dict[tuple[int, str, str, str], int] = {}
"""Claims held, by (pid, namespace, what, mode): how many caches of the process hold each."""
_holders_lock = threading.Lock()


def _token() -> str:
    """The claim token of the calling process, made on first use."""
    pid = os.getpid()
    with _holders_lock:
        return _tokens.setdefault(pid, f"{_HOST}:{pid}:{os.urandom(6).hex()}")


def _dead_here(holder: str) -> bool:
    """Whether ``holder``'s token names a process on this host that no longer exists."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class RedisClaim:
    """A solo or shared claim on one thing in one Redis namespace, renewed until released.

    ``lost`` turns True if a renewal finds another holder in the way (this process was
    paused past the TTL and someone took over): the cache then refuses writes.
    """

    def __init__(self, client: Any, namespace: str, what: str, *, solo: bool, ttl: float) -> None:
        self._client = client
        self._keys = [f"{namespace}:{{~{what}}}:owner", f"{namespace}:{{~{what}}}:members"]
        self.namespace = namespace
        self.what = what
        self.solo = solo
        self.ttl = ttl
        self.token = _token()
        self.lost = False
        self._held = (os.getpid(), namespace, what, "solo" if solo else "shared")
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._on_release: list[Callable[[], None]] = []
        self._take()
        with _holders_lock:
            _holders[self._held] = _holders.get(self._held, 0) + 1
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"cachewise-claim-{namespace}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        mode = "solo" if self.solo else "shared"
        return f"RedisClaim({self.namespace!r}, {self.what!r}, {mode}, lost={self.lost})"

    def _try(self) -> tuple[bool, str]:
        mode = "solo" if self.solo else "shared"
        try:
            ok, holder = self._acquire(
                keys=self._keys, args=[self.token, max(1, int(self.ttl * 1000)), mode]
            )
        except RedisError as exc:
            failure = exc
        else:
            return bool(ok), holder.decode() if isinstance(holder, bytes) else str(holder)
        raise StoreError(
            f"could not claim {self.what} of namespace {self.namespace!r}: {type(failure).__name__}"
        ) from None

    def _take(self) -> None:
        ok, holder = self._try()
        if not ok and _dead_here(holder):
            self._release(keys=self._keys, args=[holder])  # its process is gone: its claim too
            ok, holder = self._try()
        if not ok:
            raise ConfigurationError(
                f"{self.what} of Redis namespace {self.namespace!r} is already claimed by "
                f"{holder!r} ({'solo' if self.solo else 'shared'} claim refused; a claim of a "
                f"process that died lapses within {self.ttl:g} s)"
            )

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                ok, holder = self._try()
            except StoreError:
                logger.warning(
                    "could not renew the %s claim of %r; retrying", self.what, self.namespace
                )
                continue
            if not ok:
                self.lost = True
                logger.error(
                    "lost the %s claim of Redis namespace %r to %r (was this process paused "
                    "for more than %g s?); writes are refused",
                    self.what,
                    self.namespace,
                    holder,
                    self.ttl,
                )
                return

    def on_release(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the claim is released (closing what it runs on)."""
        self._on_release.append(callback)

    def release(self) -> None:
        """Stop renewing and drop the claim (a no-op the second time)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5.0)
        try:
            self._drop()
        finally:
            for callback in self._on_release:
                callback()

    def _drop(self) -> None:
        with _holders_lock:
            left = _holders.get(self._held, 1) - 1
            if left:
                _holders[self._held] = left
            else:
                _holders.pop(self._held, None)
        if left:  # another cache of this process still holds it
            return
        try:
            self._release(keys=self._keys, args=[self.token])
        except RedisError:
            logger.warning(
                "could not release the %s claim of %r; it lapses in %g s",
                self.what,
                self.namespace,
                self.ttl,
            )
