"""The shared write-back's dirty index: one key on one Redis, spread over slots on a cluster.

The index (see ``shared.py``) is a sorted set of encoded keys by first-dirty time plus
a hash of index tokens. On one Redis it is one pair of keys::

    ns:{~dirty}:z    ns:{~dirty}:h

On a Redis Cluster one pair would put every write of every process on one node (a
hot slot), so the index is cut into ``CLUSTER_SHARDS`` pairs with hash tags of their
own, which the cluster spreads over its primaries::

    ns:{~dirty:0}:z  ns:{~dirty:0}:h   ...   ns:{~dirty:15}:z  ns:{~dirty:15}:h

A key's entry is always in shard ``crc32(encoded key) % shards``, so the per-key steps
(index, then mark; unindex only if the token is still ours) are unchanged: each runs
on the key's shard alone. What spans shards is read in one pipeline (one round trip
per node) and merged: the count, the oldest and newest entries, the flush's window of
oldest entries. ``max_dirty`` is enforced per shard on a cluster (each holds at most
``ceil(max_dirty / shards)``), so backpressure stays one atomic script per write.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from cachewise.stores._redis_cluster import is_cluster

CLUSTER_SHARDS: Final = 16


def index_keys(namespace: str, client: Any) -> list[tuple[bytes, bytes]]:
    """The (sorted set, token hash) pairs of ``namespace``'s index on ``client``'s Redis."""
    if not is_cluster(client):
        return [(f"{namespace}:{{~dirty}}:z".encode(), f"{namespace}:{{~dirty}}:h".encode())]
    return [
        (f"{namespace}:{{~dirty:{i}}}:z".encode(), f"{namespace}:{{~dirty:{i}}}:h".encode())
        for i in range(CLUSTER_SHARDS)
    ]


def pipelined(client: Any, commands: Sequence[Callable[[Any], Any]]) -> list[Any]:
    """Run ``commands`` (each queues one command on a pipeline) in one pipeline."""
    with client.pipeline(transaction=False) as pipe:
        for queue in commands:
            queue(pipe)
        return list(pipe.execute())


class DirtyIndex:
    """The index of one namespace: its shards and the calls that span them.

    ``call(op, fn, *args, **kwargs)`` runs one Redis call the store's way (errors
    translated, retried on a cluster); the scripts are ``shared.py``'s, registered.
    """

    def __init__(
        self,
        namespace: str,
        client: Any,
        call: Callable[..., Any],
        scripts: tuple[Any, Any, Any],
    ) -> None:
        self.shards = index_keys(namespace, client)
        self._client = client
        self._call = call
        self._reserve, self._reindex, self._unindex = scripts

    def shard(self, member: bytes | str) -> tuple[bytes, bytes]:
        """The (sorted set, token hash) of ``member``'s shard."""
        if len(self.shards) == 1:
            return self.shards[0]
        raw = member.encode() if isinstance(member, str) else member
        return self.shards[zlib.crc32(raw) % len(self.shards)]

    def _split(self, members: Sequence[Any]) -> dict[tuple[bytes, bytes], list[Any]]:
        groups: dict[tuple[bytes, bytes], list[Any]] = {}
        for member in members:
            groups.setdefault(self.shard(member), []).append(member)
        return groups

    def _each_shard(self, op: str, queue: Callable[[Any, bytes, bytes], Any]) -> list[Any]:
        """One command per shard in one pipeline; the replies in shard order."""
        commands = [lambda pipe, z=z, h=h: queue(pipe, z, h) for z, h in self.shards]
        return list(self._call(op, pipelined, self._client, commands))

    # -- reads across shards -------------------------------------------------------------

    def count(self) -> int:
        """Entries in every shard."""
        return sum(int(n) for n in self._each_shard("ZCARD", lambda p, z, _h: p.zcard(z)))

    def _ends(self, start: int) -> list[tuple[bytes, float]]:
        replies = self._each_shard(
            "ZRANGE", lambda p, z, _h: p.zrange(z, start, start, withscores=True)
        )
        return [(m, float(s)) for reply in replies for m, s in reply]

    def oldest(self) -> float | None:
        """The smallest first-dirty score (ms), or None when empty."""
        ends = self._ends(0)
        return min(s for _, s in ends) if ends else None

    def newest(self) -> float | None:
        """The largest first-dirty score (ms), or None when empty."""
        ends = self._ends(-1)
        return max(s for _, s in ends) if ends else None

    def members(self) -> list[bytes]:
        """Every entry, oldest first."""
        replies = self._each_shard("ZRANGE", lambda p, z, _h: p.zrange(z, 0, -1, withscores=True))
        merged = heapq.merge(*replies, key=lambda item: float(item[1]))
        return [member for member, _ in merged]

    def window(self, upto: float, seen: set[bytes], size: int) -> list[bytes]:
        """Up to ``size`` of the oldest entries scored at most ``upto``, not in ``seen``."""
        num = len(seen) + size
        replies = self._each_shard(
            "ZRANGEBYSCORE",
            lambda p, z, _h: p.zrangebyscore(z, "-inf", upto, start=0, num=num, withscores=True),
        )
        merged = heapq.merge(*replies, key=lambda item: float(item[1]))
        out: list[bytes] = []
        for member, _ in merged:
            if member not in seen:
                out.append(member)
                if len(out) == size:
                    break
        return out

    def tokens(self, members: list[bytes]) -> list[Any]:
        """The index token of each member (None if absent), in the order given."""
        groups = self._split(members)
        shards = list(groups)
        replies = self._call(
            "HMGET",
            pipelined,
            self._client,
            [lambda p, h=shard[1], g=groups[shard]: p.hmget(h, g) for shard in shards],
        )
        found: dict[bytes, Any] = {}
        for shard, reply in zip(shards, replies, strict=True):
            found.update(zip(groups[shard], reply, strict=True))
        return [found[m] for m in members]

    # -- writes, one script per shard ------------------------------------------------------

    def reserve(self, limit: int, now: int, token: str, members: list[str]) -> tuple[bool, int]:
        """Index ``members`` unless a shard would pass its part of ``limit``.

        Returns (added, entries in the shards touched), as the script does.
        """
        per_shard = limit if len(self.shards) == 1 else math.ceil(limit / len(self.shards))
        size = 0
        for (z, h), group in self._split(members).items():
            added, count = self._call(
                "index", self._reserve, keys=[z, h], args=[per_shard, now, token, *group]
            )
            if not added:
                return False, int(count)
            size += int(count)
        return True, size

    def reindex(self, now: int, token: str, members: list[Any]) -> None:
        """Index the members that are not indexed (with ``token``)."""
        for (z, h), group in self._split(members).items():
            self._call("index", self._reindex, keys=[z, h], args=[now, token, *group])

    def unindex(self, pairs: list[bytes]) -> None:
        """Unindex each (member, token) of the flat list whose token is still that one."""
        groups: dict[tuple[bytes, bytes], list[bytes]] = {}
        for i in range(0, len(pairs), 2):
            groups.setdefault(self.shard(pairs[i]), []).extend(pairs[i : i + 2])
        for (z, h), args in groups.items():
            self._call("unindex", self._unindex, keys=[z, h], args=args)

    def rescore(self, scores: dict[bytes, float]) -> None:
        """Move indexed members to new first-dirty scores (never adds one)."""
        for (z, _h), group in self._split(list(scores)).items():
            self._call("ZADD", self._client.zadd, z, {m: scores[m] for m in group}, xx=True)
