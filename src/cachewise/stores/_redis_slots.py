"""Batches on a Redis Cluster: one command per slot, fanned out to every node at once.

A batch over many cache keys touches many slots, and a script (or an ``MGET``) may not
cross slots. :class:`SlottedScript` cuts a batch script into one script per slot
(:class:`Layout` says how its KEYS and ARGV are laid out) and :func:`fan_out` sends
every node its share before reading any reply, so the round trips to the nodes overlap
instead of following one another as in redis-py's cluster pipeline (bench/README.md,
cluster). Commands a node redirects (``MOVED``, ``ASK``) or refuses (``CLUSTERDOWN``,
``TRYAGAIN``, ``NOSCRIPT``) did not run: only those run again, through redis-py's
cluster pipeline, which follows redirects and refreshes the topology.

``wait_replicas`` (:class:`Acknowledgement`): each node's writes are followed by
``WAIT`` on the same connection, so a write is acknowledged only once replicas have it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError, TryAgainError


def fan_out(
    client: RedisCluster,
    commands: Sequence[tuple[int, tuple[Any, ...]]],
    ack: Acknowledgement | None,
) -> list[Any]:
    """Run ``(slot, command)`` pairs: every node's share sent before any reply is read.

    redis-py's cluster pipeline sends one node's commands after the other's and keeps
    heavy per-command bookkeeping; here the round trips to the nodes overlap (see
    bench/README.md, cluster). A command answered by a redirect or a refusal
    (``MOVED``, ``ASK``, ``CLUSTERDOWN``, ``TRYAGAIN``, ``NOSCRIPT``) did not run: those alone run
    again through redis-py's cluster pipeline, which follows redirects and refreshes
    the topology. A broken connection raises (the caller's ``retrying`` decides).
    With ``ack``, each node's commands are followed by ``WAIT`` on the same connection.
    """
    manager: Any = cast("Any", client).nodes_manager
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for index, (slot, _command) in enumerate(commands):
        node = manager.get_node_from_slot(slot)
        by_node.setdefault(node.name, (node, []))[1].append(index)
    replies: list[Any] = [None] * len(commands)
    redo: list[int] = []
    taken: list[tuple[Any, Any]] = []
    try:
        sent = _send(client, commands, list(by_node.values()), ack, taken)
        short, unsure = _read(sent, replies, redo, ack)
    except BaseException:
        for _pool, connection in taken:  # replies may be left unread: never reuse it
            connection.disconnect()
        raise
    finally:
        for pool, connection in taken:
            pool.release(connection)
    if unsure:
        manager.initialize()
        raise MovedOnError("a node was demoted while it ran writes: retrying")
    if short:
        raise NotReplicatedError(
            f"a write was not confirmed by {ack.replicas if ack else 0} replica(s) in time"
        )
    if redo:
        _redo(client, commands, redo, replies, ack)
    return replies


def _send(
    client: RedisCluster,
    commands: Sequence[tuple[int, tuple[Any, ...]]],
    nodes: list[tuple[Any, list[int]]],
    ack: Acknowledgement | None,
    taken: list[tuple[Any, Any]],
) -> list[tuple[Any, list[int]]]:
    """Send each node its commands (and a WAIT) on a connection taken from its pool."""
    sent: list[tuple[Any, list[int]]] = []
    for node, indexes in nodes:
        pool = cast("Any", client).get_redis_connection(node).connection_pool
        connection = _take(pool)
        taken.append((pool, connection))
        packed = [commands[i][1] for i in indexes]
        if ack is not None:
            packed.append(("WAIT", ack.replicas, ack.timeout_ms))
        connection.send_packed_command(connection.pack_commands(packed))
        sent.append((connection, indexes))
    return sent


def _take(pool: Any) -> Any:
    """A connection from ``pool`` (redis-py before 5.3 wants a command name, later warns)."""
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("EVALSHA")


def _read(
    sent: list[tuple[Any, list[int]]],
    replies: list[Any],
    redo: list[int],
    ack: Acknowledgement | None,
) -> tuple[bool, bool]:
    """Read every reply; note refused commands in ``redo``.

    Returns (a WAIT fell short, a node refused a WAIT after running writes).
    """
    short = unsure = False
    for connection, indexes in sent:
        for i in indexes:
            try:
                replies[i] = connection.read_response()
            except ResponseError:
                redo.append(i)
        if ack is not None:
            try:
                short = short or int(connection.read_response()) < ack.replicas
            except ResponseError:
                # A replica now (a failover): fine if it ran none of its commands.
                unsure = unsure or not set(indexes) <= set(redo)
    return short, unsure


def _redo(
    client: RedisCluster,
    commands: Sequence[tuple[int, tuple[Any, ...]]],
    redo: list[int],
    replies: list[Any],
    ack: Acknowledgement | None,
) -> None:
    """Run again, through redis-py's cluster pipeline, the commands a node redirected."""
    cluster: Any = client
    pipe = cluster.pipeline()
    for i in redo:
        command = commands[i][1]
        if command[0] == "EVALSHA":  # NOSCRIPT, maybe: EVAL loads it on that node
            command = ("EVAL", _SCRIPTS[command[1]], *command[2:])
        pipe.execute_command(*command)
    if ack is None:
        again = list(pipe.execute())
    else:
        nodes = {}
        for i in redo:
            node = cluster.nodes_manager.get_node_from_slot(commands[i][0])
            nodes[node.name] = node
        strip = _wait_for_replicas(pipe, list(nodes.values()), ack.replicas, ack.timeout_ms)
        again = strip(_execute(pipe, client))
    for i, reply in zip(redo, again, strict=True):
        replies[i] = reply


def mget(client: RedisCluster, keys: Sequence[bytes]) -> list[Any]:
    """MGET of keys in many slots: one MGET per slot, sent by :func:`fan_out`."""
    by_slot: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_slot.setdefault(key_slot(key), []).append(i)
    commands = [(slot, ("MGET", *(keys[i] for i in group))) for slot, group in by_slot.items()]
    out: list[Any] = [None] * len(keys)
    for group, reply in zip(by_slot.values(), fan_out(client, commands, None), strict=True):
        for i, value in zip(group, reply, strict=True):
            out[i] = value
    return out


Merge = Literal["one", "sum", "list"]

_SCRIPTS: dict[str, str] = {}
"""Batch scripts by SHA1: a node that answers NOSCRIPT gets the text (``_redo``)."""


@dataclass(frozen=True)
class Layout:
    """How a batch script lays out its KEYS and ARGV (see ``_redis_scripts``).

    KEYS: ``stride`` keys per cache key. ARGV: ``head`` arguments, then ``per``
    arguments per cache key, then ``tail`` arguments. ``merge``: how the replies of
    the slots make one (``one``: the script returns 1; ``sum``: a count; ``list``: a
    value per cache key).
    """

    stride: int
    head: int
    per: int
    tail: int
    merge: Merge


class NotReplicatedError(RedisError):
    """A write reached its primary but no replica confirmed it within the wait."""


class MovedOnError(TryAgainError):
    """The node a WAIT went to is a replica now (a failover moved the slot): try again."""


def _execute(pipe: Any, client: Any) -> list[Any]:
    """Run a pipeline that ends in WAITs; a WAIT sent to a demoted node is retried.

    The WAIT's node was looked up before the pipeline ran; after a failover the
    script is redirected (MOVED) to the new primary but the WAIT still goes to the old
    one, now a replica, which refuses it. The topology is refreshed and the caller's
    ``retrying`` runs the whole write again (a set or a mark may run twice: both are
    idempotent for the same value).
    """
    try:
        return list(pipe.execute())
    except ResponseError as exc:
        if "WAIT cannot be used with replica" not in str(exc):
            raise
    client.nodes_manager.initialize()
    raise MovedOnError("the WAIT went to a replica (a failover): retrying")


def _wait_for_replicas(
    pipe: Any, nodes: list[Any], replicas: int, timeout_ms: int
) -> Callable[[list[Any]], list[Any]]:
    """Queue ``WAIT replicas timeout`` on each node's connection, after its writes.

    A cluster pipeline sends each node's commands in order on one connection, and
    ``WAIT`` waits for that connection's writes: so the replies say whether every
    write of the pipeline reached ``replicas`` replicas. Returns what strips the WAIT
    replies off the pipeline's replies (raising if a WAIT fell short).
    """
    for node in nodes:
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)

    def strip(replies: list[Any]) -> list[Any]:
        waits = replies[len(replies) - len(nodes) :]
        if any(int(w) < replicas for w in waits):
            raise NotReplicatedError(
                f"a write was not confirmed by {replicas} replica(s) within {timeout_ms} ms"
            )
        return replies[: len(replies) - len(nodes)]

    return strip


@dataclass(frozen=True)
class Acknowledgement:
    """``WAIT`` after each write: how many replicas must confirm, and how long to wait."""

    replicas: int
    timeout_ms: int


def run_script(
    client: RedisCluster,
    text: str,
    keys: Sequence[bytes],
    args: Sequence[Any],
    ack: Acknowledgement,
) -> Any:
    """Run one script (all its keys in one slot), then WAIT for its replicas."""
    pipe: Any = cast("Any", client).pipeline()
    pipe.execute_command("EVAL", text, len(keys), *keys, *args)
    node = client.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
    strip = _wait_for_replicas(pipe, [node], ack.replicas, ack.timeout_ms)
    return strip(_execute(pipe, client))[0]


class SlottedScript:
    """A batch script that runs on a cluster as one script per slot, one pipeline.

    With ``ack``, each node's part is followed by ``WAIT`` on the same connection.
    """

    def __init__(
        self, client: RedisCluster, text: str, layout: Layout, ack: Acknowledgement | None = None
    ) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        _SCRIPTS[self.sha] = text
        self._layout = layout
        self._ack = ack
        self._script = client.register_script(text)

    def __call__(self, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        lay = self._layout
        count = len(keys) // lay.stride
        head = list(args[: lay.head])
        tail = list(args[len(args) - lay.tail :]) if lay.tail else []
        groups: dict[int, list[int]] = {}
        for i in range(count):
            groups.setdefault(key_slot(keys[i * lay.stride]), []).append(i)
        if len(groups) <= 1 and self._ack is None:
            return self._script(keys=list(keys), args=list(args))
        if not groups:
            return self._script(keys=[], args=list(args))
        commands: list[tuple[int, tuple[Any, ...]]] = []
        for slot, items in groups.items():
            part_keys: list[bytes] = []
            part_args: list[Any] = list(head)
            for i in items:
                part_keys += keys[i * lay.stride : (i + 1) * lay.stride]
                start = lay.head + i * lay.per
                part_args += args[start : start + lay.per]
            command = ("EVALSHA", self.sha, len(part_keys), *part_keys, *part_args, *tail)
            commands.append((slot, command))
        replies = fan_out(self._client, commands, self._ack)
        if lay.merge == "one":
            return 1
        if lay.merge == "sum":
            return sum(int(r) for r in replies)
        out: list[Any] = [None] * count
        for items, reply in zip(groups.values(), replies, strict=True):
            for i, value in zip(items, reply, strict=True):
                out[i] = value
        return out
