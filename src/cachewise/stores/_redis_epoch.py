"""Redis restarts: a namespace whose server restarted (or failed over) starts cold.

A Redis restored from an older RDB snapshot, or a replica promoted before it had every
write, holds values older than the source; a cache that served them would serve stale
data for good (no TTL by default). So every value a ``RedisStore`` writes is stamped
with its namespace's *epoch*, kept in Redis next to the ``run_id`` of the server that
made it::

    ns:{~epoch}    a hash: e (the epoch, 8 random bytes), r (that server's run_id)

A store checks it whenever redis-py opens a connection (a restarted server breaks every
connection, so the first command after a restart runs on a new one) and at first use:
if ``r`` is not the server's ``run_id``, the server restarted since the epoch began, and
one script (atomic: exactly one process decides, the others adopt its answer) starts a
new epoch. Values stamped with another epoch read as misses. Any restart makes the
namespace cold, even one that lost nothing: the cost is reloads, never a stale read.
A user whose ACL forbids ``INFO`` cannot see the ``run_id``: the store then warns once
and cannot tell a restart (grant ``+info``).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import ResponseError

from cachewise._flow import Flow, arun, run
from cachewise.stores import _redis_cluster as _cluster

logger = logging.getLogger("cachewise")

MARK: Final = b"\xc1"
"""A stamp's first byte (0xc1 is never the first byte of msgpack data)."""

STAMP_SIZE: Final = 9
"""MARK and the 8-byte epoch."""

# KEYS: the epoch hash. ARGV: the server's run_id, a fresh epoch. Returns the epoch.
_EPOCH: Final = """
local cur = redis.call('HMGET', KEYS[1], 'r', 'e')
if cur[1] == ARGV[1] and cur[2] then return cur[2] end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'e', ARGV[2])
return ARGV[2]
"""


def _run_id(info: Any) -> bytes:
    """The ``run_id`` line of ``INFO server`` (as a raw reply or as redis-py's dict)."""
    if isinstance(info, dict):
        return str(info["run_id"]).encode()
    text = info if isinstance(info, bytes) else str(info).encode()
    for line in text.splitlines():
        if line.startswith(b"run_id:"):
            return line[len(b"run_id:") :].strip()
    raise ValueError("INFO server has no run_id")


class Epoch:
    """A namespace's current epoch as this process knows it, and how to check it."""

    def __init__(self, namespace: str) -> None:
        self.key = f"{namespace}:{{~epoch}}".encode()
        self.stamp: bytes | None = None
        """MARK + the epoch; None until first checked."""
        self.changes = 0
        """How many times this process saw the epoch change (a Redis restart or failover)."""
        self._lock = threading.Lock()
        self._warned = False
        self._last: bytes | None = None

    def adopt(self, epoch: bytes) -> None:
        stamp = MARK + epoch
        with self._lock:
            if self._last is not None and self._last != stamp:
                self.changes += 1
            self.stamp = self._last = stamp

    def expire(self) -> None:
        """Forget the stamp: the next use checks the epoch again (a cluster reconnected)."""
        with self._lock:
            self.stamp = None

    def _blind(self, exc: ResponseError) -> bytes:
        if not self._warned:
            self._warned = True
            logger.warning(
                "Redis refused INFO (%s): cachewise cannot tell when this server restarts "
                "and may serve values an older snapshot restored; grant the user +info",
                str(exc).split(" ", 1)[0],
            )
        return b""

    def check_flow(self, client: Any) -> Flow[bytes]:
        """Check the epoch through ``client`` (normal commands); return the stamp.

        On a Redis Cluster the epoch follows a digest of every primary's ``run_id``
        (``_redis_cluster``): a promoted replica starts a new epoch.
        """
        if _cluster.is_cluster(client):
            run_id = yield _cluster.topology_digest, (client,)
        else:
            try:
                run_id = _run_id((yield client.info, ("server",)))
            except ResponseError as exc:
                run_id = self._blind(exc)
        epoch = yield client.eval, (_EPOCH, 1, self.key, run_id, os.urandom(8))
        self.adopt(bytes(epoch))
        assert self.stamp is not None
        return self.stamp

    def on_connect_flow(self, connection: Any) -> Flow[None]:
        """Check the epoch on a connection redis-py just opened, before its first command."""
        yield connection.send_command, ("INFO", "server")
        try:
            run_id = _run_id((yield connection.read_response, ()))
        except ResponseError as exc:
            run_id = self._blind(exc)
        yield connection.send_command, ("EVAL", _EPOCH, 1, self.key, run_id, os.urandom(8))
        self.adopt(bytes((yield connection.read_response, ())))


class ConnectHooks:
    """A pool's ``redis_connect_func``: the usual handshake, then every epoch's check.

    One per connection pool, shared by every store on it; stores are held weakly, so a
    client that outlives many stores does not keep them alive. A redis.asyncio pool
    gets :meth:`acall`, which redis-py awaits.
    """

    def __init__(self, previous: Callable[[Any], Any] | None) -> None:
        self._previous = previous
        self._epochs: weakref.WeakSet[Epoch] = weakref.WeakSet()

    def add(self, epoch: Epoch) -> None:
        self._epochs.add(epoch)

    def __call__(self, connection: Any) -> None:
        if self._previous is not None:
            self._previous(connection)
        else:
            connection.on_connect()
        for epoch in list(self._epochs):
            run(epoch.on_connect_flow(connection))

    async def acall(self, connection: Any) -> None:
        """The same for a redis.asyncio connection."""
        if self._previous is None:
            await connection.on_connect()
        elif inspect.iscoroutinefunction(self._previous):
            await self._previous(connection)
        else:
            self._previous(connection)
        for epoch in list(self._epochs):
            await arun(epoch.on_connect_flow(connection))


def watch(client: Any, epoch: Epoch, *, asynchronous: bool = False) -> None:
    """Make every connection ``client`` opens from now on check ``epoch``.

    On a cluster a new connection only makes the epoch be checked again at its next
    use: the hook runs on one node, and the check asks every primary.
    """
    if _cluster.is_cluster(client):
        _cluster.watch(client, epoch)
        return
    pool_kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    installed = pool_kwargs.get("redis_connect_func")
    hooks = getattr(installed, "__self__", installed)  # acall is a bound method
    if not isinstance(hooks, ConnectHooks):
        hooks = ConnectHooks(installed)
        pool_kwargs["redis_connect_func"] = hooks.acall if asynchronous else hooks
    hooks.add(epoch)
