"""Child process for the write-back crash tests: write through a journal until killed.

Usage: ``python _writer_child.py URL TABLE JOURNAL LOG BASE [KILL_POINT HIT]``.

Each writer thread owns the keys ``k`` with ``k % threads == thread`` and writes them
increasing values ``BASE + n`` (so per key, a larger value is a later write). Before a
write it logs ``W key value``; after ``write`` returns (acknowledged) ``A key value``.
Now and then it deletes the key right after writing ``value``: ``d key value`` before,
``D key value`` once acknowledged. Now and then it writes a value the table's
``CHECK (v >= 0)`` refuses, ``-(BASE + n)``: ``X key value`` before, ``Y key value`` once
acknowledged (``value`` is ``BASE + n``, for the order); the flush parks it.

An administrator thread owns the keys ``ADMIN``: it writes one (``W``/``A``), calls
``flush()``, and once that returns UPDATEs the row outside the cache to the next value
(``u key value`` before, ``U key value`` once committed): replay must never write the
flushed value over it.

With ``KILL_POINT`` the process SIGKILLs itself on the ``HIT``-th time it reaches that
point (a journal or write-back fault point; ``db.commit``: inside a flush, just before
COMMIT; ``flush.returned``: after a ``flush()`` returned and the administrator's UPDATE
committed), logging ``K point`` first. The parent SIGKILLs it at a random moment
otherwise.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from typing import Any

import sqlalchemy as sa

from cachewise import Cache, MemoryStore, SQLSource, WriteBack, connect
from cachewise.errors import FlushError
from cachewise.writeback import flusher as flusher_mod
from cachewise.writeback import journal as journal_mod
from cachewise.writeback.journal import FileJournal

KEYS = 40
THREADS = 4
ADMIN = (100, 101, 102)
BAD_WRITES = 0.03


def main(argv: list[str]) -> None:
    url, table, journal_dir, log_path, base = argv[:5]
    kill_point = argv[5] if len(argv) > 5 else None
    kill_hit = int(argv[6]) if len(argv) > 6 else 1
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(line: str) -> None:
        os.write(log_fd, (line + "\n").encode())  # one write per line: never interleaved

    hits = {"n": 0}
    hits_lock = threading.Lock()

    def fault(point: str) -> None:
        if point != kill_point:
            return
        with hits_lock:
            hits["n"] += 1
            if hits["n"] == kill_hit:
                log(f"K {point}")
                os.kill(os.getpid(), signal.SIGKILL)

    journal_mod.fault_hook = fault
    flusher_mod.fault_hook = fault
    source = SQLSource(url, table=table)

    def before_commit(conn: Any) -> None:
        fault("db.commit")

    sa.event.listen(source.engine, "commit", before_commit)
    policy = WriteBack(journal=journal_dir, fsync="always", flush_interval=0.02, max_batch=16)
    # Small segments rotate and compact all the time; the after-flush point keeps one big
    # segment, so nothing but the flush itself can make the watermark durable.
    segment = 1 << 24 if kill_point == "flush.returned" else 4096
    journal = FileJournal(journal_dir, fsync="always", segment_bytes=segment)
    cache = Cache(MemoryStore(), source, write=policy, journal=journal)
    log("READY")

    def writer(thread: int) -> None:
        rng = random.Random()
        mine = [k for k in range(KEYS) if k % THREADS == thread]
        n = 0
        while True:
            n += 1
            key = rng.choice(mine)
            value = int(base) + n
            if rng.random() < BAD_WRITES:
                log(f"X {key} {value}")
                cache.write(key, {"id": key, "v": -value})  # refused at flush: parked
                log(f"Y {key} {value}")
                continue
            log(f"W {key} {value}")
            cache.write(key, {"id": key, "v": value})
            log(f"A {key} {value}")
            if rng.random() < 0.05:
                log(f"d {key} {value}")
                cache.delete(key)  # a tombstone, acknowledged like a write
                log(f"D {key} {value}")

    admin_engine = connect(url, pool_size=1)
    update = sa.text(f'UPDATE "{table}" SET v = :v WHERE id = :id')

    def administrator() -> None:
        m = 0
        while True:
            m += 1
            key = ADMIN[m % len(ADMIN)]
            value = int(base) + 1000 * m
            log(f"W {key} {value}")
            cache.write(key, {"id": key, "v": value})
            log(f"A {key} {value}")
            try:
                cache.flush()
            except FlushError:
                continue  # the writers' refused rows: the others are written all the same
            log(f"u {key} {value + 1}")
            with admin_engine.begin() as conn:  # outside the cache: what an admin does
                conn.execute(update, {"v": value + 1, "id": key})
            log(f"U {key} {value + 1}")
            fault("flush.returned")

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(THREADS)]
    threads.append(threading.Thread(target=administrator, daemon=True))
    for t in threads:
        t.start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(sys.argv[1:])
