"""Redis Cluster under RedisStore: connecting, retries within a deadline, the epoch.

The key layout already puts everything one script changes for one cache key in one
slot (the hash tag ``ns:{key}:...``), so single-key scripts run on a cluster unchanged:
redis-py's ``RedisCluster`` routes each by its first key. What changes:

- A *batch* (``get_many``, the batch scripts) touches many slots: it is cut into one
  command per slot and fanned out to the nodes (``_redis_slots``); each slot's part is
  atomic, the batch as a whole is not. ``wait_replicas`` is there too.
- ``MOVED``/``ASK`` are followed by redis-py. ``CLUSTERDOWN``, ``TRYAGAIN``, an
  unreachable node and a topology being refreshed are retried by :func:`retrying`
  with backoff until a deadline, then the caller gets one clear ``StoreError``.
- The epoch (``_redis_epoch``): on one Redis the epoch records that server's
  ``run_id``; on a cluster it records a digest of every primary's ``run_id``, so the
  promotion of a replica (a failover) starts a new epoch and every value written
  before it reads as a miss, as after a restart of one Redis. The check runs at first
  use and again after redis-py opens any new connection (``watch``): after a failover
  the client connects to the promoted node, and the next value it reads is checked.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    TimeoutError,
    TryAgainError,
)

T = TypeVar("T")

RETRYABLE: Final = (
    ClusterDownError,
    TryAgainError,
    ConnectionError,
    TimeoutError,
    RedisClusterException,
)
"""Errors a cluster in the middle of a failover or a resharding answers with for a while."""


def is_cluster(client: object) -> bool:
    """Whether ``client`` is redis-py's sync cluster client."""
    return isinstance(client, RedisCluster)


def connect(url: str, timeout: float) -> RedisCluster:
    """A cluster client for ``url`` (any node of the cluster: it discovers the others)."""
    return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def cluster_enabled(url: str, timeout: float = 5.0) -> bool:
    """Whether the Redis at ``url`` is a node of a Redis Cluster (``INFO cluster``).

    False if it cannot be asked: the store then reports the failure on first use.
    """
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(int(client.info("cluster").get("cluster_enabled", 0)))
    except RedisError:
        return False
    finally:
        client.close()


class ClusterUnavailableError(RedisError):
    """The cluster kept refusing past the deadline (a RedisError: translated as usual)."""


def retrying(deadline: float, call: Callable[[], T]) -> T:
    """Run ``call``; while the cluster answers a retryable error, retry until ``deadline`` s.

    Only errors that a cluster gives while it changes shape (a failover, a slot moving)
    are retried; the last one is raised, as a RedisError, once the deadline passes.
    """
    end = time.monotonic() + deadline
    pause = 0.05
    while True:
        try:
            return call()
        except RETRYABLE as exc:
            if time.monotonic() + pause > end:
                if isinstance(exc, RedisError):
                    raise
                raise ClusterUnavailableError(f"{type(exc).__name__}: {exc}") from None
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def topology_digest(client: RedisCluster) -> bytes:
    """A digest of every primary's ``run_id``: it changes when a replica is promoted."""
    infos = client.info("server", target_nodes=RedisCluster.PRIMARIES)
    if "run_id" in infos:  # one primary: redis-py returns its reply alone
        infos = {"only": infos}
    run_ids = sorted(str(info["run_id"]) for info in infos.values())
    return hashlib.sha1("\n".join(run_ids).encode(), usedforsecurity=False).hexdigest().encode()


class _Expiring:
    """A cluster client's connect hook: a new connection makes every watched epoch recheck."""

    def __init__(self, previous: Callable[[Any], None] | None) -> None:
        self._previous = previous
        self._epochs: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, epoch: Any) -> None:
        with self._lock:
            self._epochs.add(epoch)

    def __call__(self, connection: Any) -> None:
        if self._previous is not None:
            self._previous(connection)
        with self._lock:
            epochs = list(self._epochs)
        for epoch in epochs:
            epoch.expire()


def watch(client: RedisCluster, epoch: Any) -> None:
    """Make every connection ``client`` opens from now on send ``epoch`` to a recheck."""
    hook = client.user_on_connect_func
    if not isinstance(hook, _Expiring):
        hook = _Expiring(hook)
        client.user_on_connect_func = hook
    hook.add(epoch)
