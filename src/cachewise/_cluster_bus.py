"""ShardedRedisBus: invalidations over Redis Cluster's sharded pub/sub (SPUBLISH/SSUBSCRIBE).

Classic pub/sub on a cluster broadcasts every message to every node over the cluster
bus; sharded pub/sub (Redis 7) keeps a channel on the primary that owns its slot, like
a key. The listener subscribes on a connection of its own to that primary. When the
primary dies (a failover) the connection breaks; when the channel's slot moves to
another node (resharding) Redis sends an ``sunsubscribe``. Either way the listener
treats it as a lost subscription: every subscriber is told "everything may have
changed" (L1 cleared and bypassed), the listener refreshes the cluster's topology,
subscribes on the channel's current owner, and clears L1 again once the new
subscription is confirmed (``_ListenerBus``). Nothing published meanwhile is served
stale.

Publishing retries within a deadline while the cluster fails over (``_redis_cluster``),
then raises ``StoreError``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from cachewise._types import Key, check_seconds
from cachewise.errors import ClosedError, ConfigurationError, StoreError
from cachewise.invalidation import _Heartbeat, _ListenerBus, _wire_text, encode_message
from cachewise.stores import _redis_cluster as _cluster


class SlotMovedError(ConnectionError):
    """The channel's slot moved to another node: the subscription there is gone."""


class ShardedRedisBus(_ListenerBus):
    """Sharded pub/sub on ``channel`` of a Redis Cluster; ``client`` is not closed by it.

    The constructor returns once the subscription is confirmed (StoreError after
    ``ready_timeout`` seconds).
    """

    _kind = "sharded-redis-bus"

    def __init__(
        self,
        client: RedisCluster,
        channel: str,
        *,
        ready_timeout: float = 5.0,
        publish_retry_for: float = 10.0,
    ) -> None:
        check_seconds(ready_timeout, "ready_timeout")
        check_seconds(publish_retry_for, "publish_retry_for")
        if not isinstance(channel, str) or not channel or "\n" in channel:
            raise ConfigurationError(f"channel must be a non-empty line of text, got {channel!r}")
        if not _cluster.is_cluster(client):
            raise ConfigurationError("ShardedRedisBus takes a redis.cluster.RedisCluster client")
        self.channel = channel
        self._client: Any = client  # redis-py leaves much of RedisCluster untyped
        self._retry_for = float(publish_retry_for)
        self._pubsub: Any = None
        super().__init__(ready_timeout)
        self._start()

    def __repr__(self) -> str:
        return f"ShardedRedisBus(channel={self.channel!r})"

    def _on_reconnect(self, _connection: Any) -> None:
        # redis-py may reconnect and resubscribe without raising: we still missed
        # what was published meanwhile.
        self.reconnects += 1
        self._went_down()

    def _listen_once(self) -> None:
        if self.reconnects:
            # The owner of the channel may have changed (failover, resharding).
            self._client.nodes_manager.initialize()
        node = self._client.get_node_from_key(self.channel)
        redis_client = self._client.get_redis_connection(node)
        pubsub = redis_client.pubsub()
        self._pubsub = pubsub
        try:
            pubsub.ssubscribe(self.channel)
            connection = getattr(pubsub, "connection", None)
            if connection is not None:
                connection.register_connect_callback(self._on_reconnect)
            self._loop(pubsub)
        finally:
            self._pubsub = None
            connection = getattr(pubsub, "connection", None)
            if connection is not None:
                connection.deregister_connect_callback(self._on_reconnect)
            pubsub.close()

    def _loop(self, pubsub: Any) -> None:
        heartbeat = _Heartbeat(pubsub, "sharded pub/sub")
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if not heartbeat.beat(message):
                continue
            kind = message["type"]
            if kind == "ssubscribe":
                self._came_up()
            elif kind == "sunsubscribe":
                raise SlotMovedError(f"{self.channel!r} was unsubscribed (its slot moved)")
            elif kind == "smessage":
                self._subscribers.deliver_wire(_wire_text(message["data"]))

    def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        if self._stop.is_set():
            raise ClosedError(f"{self!r} is closed")
        text = encode_message(keys, origin, time.time())
        send = functools.partial(self._client.spublish, self.channel, text.encode("utf-8"))
        try:
            _cluster.retrying(self._retry_for, send)
        except RedisError as exc:
            failure = exc
        else:
            return
        error = StoreError(f"{self!r} could not publish: {type(failure).__name__}")
        error.__cause__ = failure
        raise error

    def close(self) -> None:
        self._join()
