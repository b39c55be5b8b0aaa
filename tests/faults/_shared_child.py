"""Child process for the shared write-back tests: a writer or a flusher on one namespace.

Usage::

    python _shared_child.py writer REDIS_URL NAMESPACE DB_URL TABLE LOG WRITES END
    python _shared_child.py flusher REDIS_URL NAMESPACE DB_URL TABLE LOG POINT

``writer``: 4 threads write ``WRITES`` writes in all to keys 0..39 (thread ``t`` owns
the keys ``k % 4 == t``, so a key's values only grow), logging ``W key value`` before a
write and ``A key value`` once it is acknowledged. It flushes in the background
(``WriteBack(journal="redis")``, a flusher like any other). ``END`` is ``close`` (close
the cache: flush and exit, logging ``DONE``) or ``die`` (SIGKILL itself right after the
last acknowledgement, with nothing flushed: no interval or batch size is reached).

``flusher``: a cache on the same namespace that only flushes, every 10 ms. The first
time its flush reaches ``POINT`` (``claimed``: keys claimed, source not yet written;
``saved``: source written, marks not cleared) it logs ``P key key ...`` and hangs there
until the parent SIGKILLs it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from cachewise import Cache, RedisStore, SQLSource, WriteBack
from cachewise._types import Key
from cachewise.writeback import shared

KEYS = 40
THREADS = 4
CLAIM_TTL = 1.0
"""Seconds a dead flusher's claims hold its keys back (WriteBack.flush_timeout)."""


def _log_to(path: str) -> Callable[[str], None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(line: str) -> None:
        os.write(fd, (line + "\n").encode())  # one write per line: never interleaved

    return log


def _cache(
    redis_url: str, namespace: str, db_url: str, table: str, interval: float, batch: int = 8
) -> Cache:
    policy = WriteBack(
        journal="redis", flush_interval=interval, max_batch=batch, flush_timeout=CLAIM_TTL
    )
    store = RedisStore(redis_url, namespace=namespace, ttl=300)
    return Cache(store, SQLSource(db_url, table=table), write=policy)


def writer(redis_url: str, namespace: str, db_url: str, table: str, log_path: str,
           writes: int, end: str) -> None:  # fmt: skip
    log = _log_to(log_path)
    if end == "die":  # no flush at all: no interval, no max_batch wake-up
        cache = _cache(redis_url, namespace, db_url, table, 3600.0, batch=1000)
    else:  # flushes too, but leaves most batches to the flusher under test (10 ms, 8 keys)
        cache = _cache(redis_url, namespace, db_url, table, 0.1, batch=64)
    log("READY")
    per_thread = writes // THREADS

    def run(thread: int) -> None:
        mine = [k for k in range(KEYS) if k % THREADS == thread]
        for n in range(1, per_thread + 1):
            key = mine[(n * 7) % len(mine)]
            value = n * 1000 + key
            log(f"W {key} {value}")
            cache.write(key, {"id": key, "v": value})
            log(f"A {key} {value}")

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if end == "die":
        log("DYING")
        os.kill(os.getpid(), signal.SIGKILL)
    cache.close()
    log("DONE")


def flusher(redis_url: str, namespace: str, db_url: str, table: str, log_path: str,
            point: str) -> None:  # fmt: skip
    log = _log_to(log_path)
    paused = threading.Event()

    def hook(where: str, keys: list[Key]) -> None:
        if where != point or paused.is_set() or not keys:
            return
        paused.set()
        log("P " + " ".join(str(k) for k in keys))
        while True:  # hold the claims until the parent kills us
            time.sleep(1)

    shared.fault_hook = hook
    _cache(redis_url, namespace, db_url, table, 0.01)
    log("READY")
    threading.Event().wait()


def main(argv: list[str]) -> None:
    mode, redis_url, namespace, db_url, table, log_path, arg = argv[:7]
    if mode == "writer":
        writer(redis_url, namespace, db_url, table, log_path, int(arg), argv[7])
    elif mode == "flusher":
        flusher(redis_url, namespace, db_url, table, log_path, arg)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
