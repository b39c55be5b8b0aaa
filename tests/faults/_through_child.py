"""Child process for the write-through crash tests: one write, SIGKILLed at a named point.

Usage: ``python _through_child.py DB_URL TABLE REDIS_URL NAMESPACE STORE POLICY OP POINT``.

STORE is ``redis`` or ``tiered``; POLICY ``through`` or ``around``; OP ``write`` (key 1
gets v=2) or ``delete`` (key 1 is deleted). POINT is where the process kills itself:

``before-save``   inside the source call, before the database is touched
``held``          the same place, but first print HELD and wait for a line on stdin
                  (the parent reads the key meanwhile), then commit and die
``after-commit``  inside the source call, after the database committed
``after-write``   after ``write``/``delete`` returned
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from cachewise import (
    Cache,
    MemoryStore,
    RedisStore,
    SQLSource,
    TieredStore,
    WriteAround,
    WriteThrough,
)
from cachewise._types import Key
from cachewise.stores.base import Store


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    db_url, table, redis_url, namespace, store_kind, policy, op, point = argv
    source = SQLSource(db_url, table=table)
    l2 = RedisStore(redis_url, namespace=namespace)
    store: Store = TieredStore(MemoryStore(), l2) if store_kind == "tiered" else l2
    write = WriteThrough() if policy == "through" else WriteAround()
    cache = Cache(store, source, write=write)

    def bracket(real: Any) -> Any:
        def call(*args: Any) -> None:
            if point == "before-save":
                die()
            if point == "held":
                print("HELD", flush=True)
                sys.stdin.readline()
            real(*args)  # commits
            if point in ("after-commit", "held"):
                die()

        return call

    source.save = bracket(source.save)  # type: ignore[method-assign]
    source.remove = bracket(source.remove)  # type: ignore[method-assign]
    key: Key = 1
    if op == "write":
        cache.write(key, {"id": 1, "v": 2})
    else:
        cache.delete(key)
    if point == "after-write":
        die()
    print("NOT KILLED", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
